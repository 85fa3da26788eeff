"""modules_forge/main_entry.py: the loading parameters that ``forge_model_reload`` compares against
(main_entry.py:219-239)."""
from modules import processing, shared

forge_unet_storage_dtype_options = {"Automatic": (None, False)}
ui_checkpoint = None


def refresh_model_loading_parameters():
    from modules.sd_models import model_data, select_checkpoint
    unet_storage_dtype, _ = forge_unet_storage_dtype_options.get(shared.opts.forge_unet_storage_dtype, (None, False))
    model_data.forge_loading_parameters = dict(checkpoint_info=select_checkpoint(),
                                               additional_modules=shared.opts.forge_additional_modules,
                                               unet_storage_dtype=unet_storage_dtype)
    processing.need_global_unload = True
