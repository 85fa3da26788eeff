"""modules/shared.py: opts, cmd_opts, state, and ``sd_model``.

On A1111, ``shared.sd_model`` lazily LOADS the model when none is loaded (SdModelData.get_sd_model);
on Forge it is whatever model_data holds (a FakeInitialModel before the first generation).
"""
import argparse
import os

from modules import _flavour, paths
from modules.options import OptionInfo, Options, options_section  # noqa: F401
from modules.shared_state import State

cmd_opts = argparse.Namespace(
    ckpt_dir=None, ckpt=None, vae_dir=None, data_dir=paths.data_path, no_half=False, api=False, nowebui=False,
    api_auth=None, lora_dir=os.path.join(paths.models_path, "Lora"),
    lyco_dir_backcompat=os.path.join(paths.models_path, "LyCORIS"), embeddings_dir=None, no_hashing=False,
)
default_sd_model_file = os.path.join(paths.script_path, "model.ckpt")
config_filename = os.path.join(paths.data_path, "config.json")

opts = Options({
    "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint"),
    "sd_checkpoints_limit": OptionInfo(1, "Maximum number of checkpoints loaded at the same time"),
    "sd_checkpoint_cache": OptionInfo(0, "Checkpoints to cache in RAM"),
    "outdir_samples": OptionInfo("", "Output directory for images"),
    "outdir_txt2img_samples": OptionInfo(os.path.join(paths.data_path, "outputs", "txt2img-images"), "txt2img"),
    "outdir_grids": OptionInfo("", "Output directory for grids"),
    "outdir_txt2img_grids": OptionInfo(os.path.join(paths.data_path, "outputs", "txt2img-grids"), "grids"),
    "forge_additional_modules": OptionInfo([], "VAE / Text Encoder"),
    "forge_unet_storage_dtype": OptionInfo("Automatic", "Diffusion in Low Bits"),
    "add_model_hash_to_info": OptionInfo(True, "Add model hash to infotext"),
    "add_model_name_to_info": OptionInfo(True, "Add model name to infotext"),
    "hide_samplers": OptionInfo([], "Hide samplers in user interface"),
})
state = State()
settings_components = {}
demo = None


class _Tqdm:
    def __init__(self):
        self.cleared = 0

    def clear(self):
        self.cleared += 1


total_tqdm = _Tqdm()


def walk_files(path, allowed_extensions=None):
    """modules/util.py walk_files (A1111 1.9+): links to folders are followed."""
    for root, _, files in os.walk(path, followlinks=True):
        for f in sorted(files):
            if allowed_extensions is None or os.path.splitext(f)[1].lower() in allowed_extensions:
                yield os.path.join(root, f)


def refresh_checkpoints():
    from modules import sd_models
    sd_models.list_models()


def __getattr__(name):
    if name == "sd_model":
        from modules import sd_models
        if _flavour.is_forge():
            return sd_models.model_data.sd_model
        return sd_models.model_data.get_sd_model()
    raise AttributeError(name)
