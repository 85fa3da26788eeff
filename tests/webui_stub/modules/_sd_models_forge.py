"""Forge 2.x modules/sd_models.py, the parts lib_mecha depends on (webui-host §3.3):

* ``forge_model_reload()`` keeps the current model while ``model_data.forge_hash`` equals
  ``str(model_data.forge_loading_parameters)``; otherwise it drops it (``gc.collect()``) and builds a new one with
  ``backend.loader.forge_loader(checkpoint_info.filename)`` — a path, never a dict;
* the model loads lazily: ``model_data.sd_model`` is a ``FakeInitialModel`` until then;
* ``load_model``, ``reload_model_weights`` ... are stubs returning None (forge sd_models.py:256-447).
"""
import gc

import torch

from modules import script_callbacks, shared
from modules._checkpoints import (CheckpointInfo, checkpoint_aliases, checkpoint_alisases,  # noqa: F401
                                  checkpoint_tiles, checkpoints_list, checkpoints_loaded,
                                  get_closet_checkpoint_match, list_models, model_dir, model_hash,
                                  model_path, select_checkpoint)
from backend import memory_management
from backend.args import dynamic_args
from backend.loader import forge_loader


class FakeInitialModel:
    def __init__(self):
        self.cond_stage_model = None
        self.chunk_length = 75


class SdModelData:
    def __init__(self):
        self.sd_model = FakeInitialModel()
        self.forge_loading_parameters = {}
        self.forge_hash = ""

    def get_sd_model(self):
        return self.sd_model

    def set_sd_model(self, v):
        self.sd_model = v


model_data = SdModelData()
loads = []  # filenames forge_model_reload built a model from, for the tests


def SkipWritingToConfig():
    import contextlib
    return contextlib.nullcontext()


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    pass


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    pass


def load_model_weights(model, checkpoint_info, state_dict, timer):
    pass


def send_model_to_cpu(m):
    pass


def send_model_to_trash(m):
    pass


def unload_model_weights(sd_model=None, info=None):
    memory_management.unload_all_models()


@torch.inference_mode()
def forge_model_reload():
    current_hash = str(model_data.forge_loading_parameters)
    if model_data.forge_hash == current_hash:
        return model_data.sd_model, False
    if model_data.sd_model:
        model_data.sd_model = None
        memory_management.unload_all_models()
        memory_management.soft_empty_cache()
        gc.collect()  # the old model goes before the new one is built, if nothing else holds it
    checkpoint_info = model_data.forge_loading_parameters["checkpoint_info"]
    if checkpoint_info is None:
        raise ValueError("You do not have any model!")
    dynamic_args["forge_unet_storage_dtype"] = model_data.forge_loading_parameters.get("unet_storage_dtype")
    sd_model = forge_loader(checkpoint_info.filename,
                            additional_state_dicts=model_data.forge_loading_parameters.get("additional_modules", []))
    sd_model.sd_checkpoint_info = checkpoint_info
    sd_model.filename = checkpoint_info.filename
    sd_model.sd_model_hash = checkpoint_info.calculate_shorthash()
    shared.opts.data["sd_checkpoint_hash"] = checkpoint_info.sha256
    model_data.set_sd_model(sd_model)
    loads.append(checkpoint_info.filename)
    script_callbacks.model_loaded_callback(sd_model)
    model_data.forge_hash = current_hash
    return sd_model, True
