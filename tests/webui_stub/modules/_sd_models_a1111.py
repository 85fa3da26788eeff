"""A1111 1.10 modules/sd_models.py, the parts lib_mecha depends on (webui-host §3.1):

* ``load_model(info, already_loaded_state_dict)`` first trashes the current model to the meta device
  (``send_model_to_trash``) even while it is still in ``loaded_sd_models``; it then loads the dict
  through ``LoadStateDictOnMeta``, which POPS every key it uses (the caller's dict ends up emptied)
  and creates missing parameters as ZEROS (modules/sd_disable_initialization.py);
* ``load_model_weights`` hashes ``info.filename`` (``calculate_shorthash``) and writes
  ``opts.data['sd_model_checkpoint'] = info.title`` unless ``SkipWritingToConfig``;
* ``reload_model_weights`` returns early when the model's filename equals the wanted one, reuses
  ``loaded_sd_models`` by filename, else loads the file in place (or rebuilds on another config);
* ``shared.sd_model`` lazily loads a model when none is loaded (``SdModelData.get_sd_model``).
"""
import torch

from modules import _net, devices, script_callbacks, shared
from modules._checkpoints import (CheckpointInfo, checkpoint_aliases, checkpoint_alisases,  # noqa: F401
                                  checkpoint_tiles, checkpoints_list, checkpoints_loaded,
                                  get_closet_checkpoint_match, list_models, model_dir, model_hash,
                                  model_path, select_checkpoint)


class SkipWritingToConfig:
    skip = False
    previous = None

    def __enter__(self):
        self.previous = SkipWritingToConfig.skip
        SkipWritingToConfig.skip = True
        return self

    def __exit__(self, *exc):
        SkipWritingToConfig.skip = self.previous


class LatentDiffusion(_net.ParamTree):
    """The loaded model: real SD1 key names; ``used_config`` names the config it was built from."""

    def __init__(self, tensors, config):
        super().__init__(tensors)
        self.used_config = config
        self.is_sd1, self.is_sd2, self.is_sdxl, self.is_sd3 = config == "v1-inference.yaml", False, False, False
        self.lowvram = False
        self.sd_checkpoint_info = None
        self.sd_model_checkpoint = None
        self.sd_model_hash = None


class SdModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False

    def get_sd_model(self):
        if self.was_loaded_at_least_once:
            return self.sd_model
        if self.sd_model is None:
            load_model()
        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v
        if v in self.loaded_sd_models:
            self.loaded_sd_models.remove(v)
        if v is not None:
            self.loaded_sd_models.insert(0, v)


model_data = SdModelData()
events = []  # what happened, for the tests: ("trash", title), ("load", title), ...


def find_checkpoint_config(state_dict):
    """sd_models_config.find_checkpoint_config: guessed from keys; unknown dicts fall back to v1."""
    if any(k.startswith("model.diffusion_model.") for k in state_dict):
        return "v1-inference.yaml"
    return "v1-inference.yaml (fallback)"


def get_checkpoint_state_dict(checkpoint_info, timer=None):
    checkpoint_info.calculate_shorthash()
    if checkpoint_info in checkpoints_loaded:
        return checkpoints_loaded[checkpoint_info]
    import safetensors.torch
    return safetensors.torch.load_file(checkpoint_info.filename)


def _tensors_on_meta_loader(state_dict):
    """LoadStateDictOnMeta: pop each known key; missing parameters become zeros; dtype → devices.dtype."""
    out = {}
    for key, (shape, dt) in _net.LAYOUT.items():
        value = state_dict.pop(key, None)
        if value is None:
            value = torch.zeros(shape, dtype=dt)
        out[key] = value.to(devices.dtype) if dt.is_floating_point else value
    return out


def load_model_weights(model, checkpoint_info, state_dict, timer=None):
    sha = checkpoint_info.calculate_shorthash()
    if not SkipWritingToConfig.skip:
        shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title
    if state_dict is None:
        state_dict = get_checkpoint_state_dict(checkpoint_info)
    if shared.opts.sd_checkpoint_cache > 0:
        checkpoints_loaded[checkpoint_info] = state_dict.copy()
    with torch.no_grad():
        for key, p in list(model.named_parameters()):
            if key in state_dict:
                p.copy_(state_dict[key].to(p.dtype))
    model.sd_model_hash = sha
    model.sd_model_checkpoint = checkpoint_info.filename
    model.sd_checkpoint_info = checkpoint_info


def send_model_to_cpu(m):
    if m is not None:
        m.to(devices.cpu)
        events.append(("cpu", m.sd_checkpoint_info.title if m.sd_checkpoint_info else None))


def send_model_to_device(m):
    pass


def send_model_to_trash(m):
    m.to(device="meta")
    events.append(("trash", m.sd_checkpoint_info.title if m.sd_checkpoint_info else None))


def unload_model_weights(sd_model=None, info=None):
    send_model_to_cpu(sd_model or model_data.sd_model)
    return sd_model


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    checkpoint_info = checkpoint_info or select_checkpoint()
    if model_data.sd_model:
        send_model_to_trash(model_data.sd_model)
        model_data.sd_model = None
        devices.torch_gc()
    if already_loaded_state_dict is not None:
        state_dict = already_loaded_state_dict
    else:
        state_dict = get_checkpoint_state_dict(checkpoint_info)
    config = find_checkpoint_config(state_dict)
    model = LatentDiffusion(_tensors_on_meta_loader(state_dict), config)
    load_model_weights(model, checkpoint_info, {}, None)
    model_data.set_sd_model(model)
    model_data.was_loaded_at_least_once = True
    events.append(("load", checkpoint_info.title))
    script_callbacks.model_loaded_callback(model)
    return model


def reuse_model_from_already_loaded(sd_model, checkpoint_info, timer=None):
    already = None
    limit = shared.opts.sd_checkpoints_limit
    for i in reversed(range(len(model_data.loaded_sd_models))):
        loaded = model_data.loaded_sd_models[i]
        if loaded.sd_checkpoint_info.filename == checkpoint_info.filename:
            already = loaded
            continue
        if len(model_data.loaded_sd_models) > limit > 0:
            model_data.loaded_sd_models.pop(i)
            send_model_to_trash(loaded)
    if already is not None:
        model_data.set_sd_model(already, already_loaded=True)
        if not SkipWritingToConfig.skip:
            shared.opts.data["sd_model_checkpoint"] = already.sd_checkpoint_info.title
        script_callbacks.model_loaded_callback(already)
        return already
    if limit > 1 and len(model_data.loaded_sd_models) < limit:
        load_model(checkpoint_info)
        return model_data.sd_model
    if model_data.loaded_sd_models:
        sd_model = model_data.loaded_sd_models.pop()
        model_data.sd_model = sd_model
        return sd_model
    return None


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    checkpoint_info = info or select_checkpoint()
    sd_model = sd_model or model_data.sd_model
    current = None
    if sd_model is not None:
        current = sd_model.sd_checkpoint_info
        if sd_model.sd_model_checkpoint == checkpoint_info.filename and not forced_reload:
            return sd_model
    sd_model = reuse_model_from_already_loaded(sd_model, checkpoint_info)
    if not forced_reload and sd_model is not None and sd_model.sd_checkpoint_info.filename == checkpoint_info.filename:
        return sd_model
    if sd_model is not None:
        send_model_to_cpu(sd_model)
    state_dict = get_checkpoint_state_dict(checkpoint_info)
    if sd_model is None or find_checkpoint_config(state_dict) != sd_model.used_config:
        if sd_model is not None:
            send_model_to_trash(sd_model)
        load_model(checkpoint_info, already_loaded_state_dict=state_dict)
        return model_data.sd_model
    try:
        load_model_weights(sd_model, checkpoint_info, state_dict)
    except Exception:
        load_model_weights(sd_model, current, None)
        raise
    finally:
        model_data.set_sd_model(sd_model)
        events.append(("reload", checkpoint_info.title))
        script_callbacks.model_loaded_callback(sd_model)
    return sd_model
