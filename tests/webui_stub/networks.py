"""The built-in Lora extension's ``networks`` module: the list of LoRAs that ``<lora:name:w>`` resolves to.

A1111 ``extensions-builtin/Lora/networks.py`` and Forge ``extensions-builtin/sd_forge_lora/networks.py``:
the extension's scripts import it as a top-level module (``scripts/lora_script.py``: ``import networks``),
and it fills ``available_networks`` / ``available_network_aliases`` once, on its last line. A file written
later is unknown until ``list_available_networks()`` runs again (the Extra networks refresh button,
``ui_extra_networks_lora.py`` ``refresh``; ``POST /sdapi/v1/refresh-loras``), which clears the lists and
walks the folders: ``cmd_opts.lora_dir`` and ``cmd_opts.lyco_dir_backcompat`` on A1111
(``process_network_files``), ``lora_dir`` only on Forge (forge ``networks.py``: 130-168). An entry is a
``NetworkOnDisk`` named after the file's stem; here it is the file's path.
"""
import os

from modules import _flavour, shared

available_networks = {}
available_network_aliases = {}


def list_available_networks():
    available_networks.clear()
    available_network_aliases.clear()
    os.makedirs(shared.cmd_opts.lora_dir, exist_ok=True)
    folders = [shared.cmd_opts.lora_dir]
    if not _flavour.is_forge():
        folders.append(shared.cmd_opts.lyco_dir_backcompat)
    for folder in folders:
        for filename in shared.walk_files(folder, allowed_extensions=[".pt", ".ckpt", ".safetensors"]):
            name = os.path.splitext(os.path.basename(filename))[0]
            available_networks[name] = filename
            available_network_aliases[name] = filename


list_available_networks()


def network_restore_weights_from_backup(self):
    """A1111 ``networks.py``: a layer's weight (and bias) as they were before the LoRAs now baked
    into them, from the backups ``network_apply_weights`` took (None: nothing to put back)."""
    for name, backup in (("weight", getattr(self, "network_weights_backup", None)),
                         ("bias", getattr(self, "network_bias_backup", None))):
        if backup is not None:
            getattr(self, name).copy_(backup)
