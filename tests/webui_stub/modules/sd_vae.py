"""modules/sd_vae.py: vae_dict (name → path) from models/VAE and --vae-dir."""
import os

from modules import paths, shared

vae_path = os.path.abspath(os.path.join(paths.models_path, "VAE"))
vae_dict = {}


def refresh_vae_list():
    vae_dict.clear()
    for folder in [vae_path, shared.cmd_opts.vae_dir]:
        if folder and os.path.isdir(folder):
            for f in sorted(os.listdir(folder)):
                if f.endswith((".safetensors", ".pt", ".ckpt")):
                    vae_dict[f] = os.path.join(folder, f)

# the VAE file applied over the checkpoint's own VAE, None for the checkpoint's (modules/sd_vae.py:
# load_vae sets it; resolve_vae picks a selected VAE over the one baked into a checkpoint)
loaded_vae_file = None
