"""backend/loader.py: ``forge_loader(sd)`` takes a PATH: ``split_state_dict`` starts with
``load_torch_file(sd)`` and ``forge_loader`` looks for ``os.path.splitext(sd)[0] + '.yaml'``
(forge loader.py:449-456, :533-541). Components are built inside ``torch.inference_mode()``, so
every parameter is an inference tensor that cannot be written in place outside inference mode."""
import os

import torch

from backend.patcher.lora import LoraLoader
from backend.state_dict import try_filter_state_dict
from backend.utils import load_torch_file
from modules import _net


class GuessSD15:
    """huggingface_guess model_list.SD15: prefixes and the key processing the loader applies."""
    huggingface_repo = "runwayml/stable-diffusion-v1-5"
    unet_key_prefix = ["model.diffusion_model."]
    vae_key_prefix = ["first_stage_model."]
    unet_target = "unet"
    vae_target = "vae"

    def __init__(self):
        self.clip_target = {"clip_l": "text_encoder"}

    def process_vae_state_dict(self, sd):
        return sd

    def process_clip_state_dict(self, sd):
        # state_dict_prefix_replace(..., {"cond_stage_model.": "clip_l."}, filter_keys=True)
        return {"clip_l." + k[len("cond_stage_model."):]: v for k, v in sd.items() if k.startswith("cond_stage_model.")}


def guess(sd):
    if not any(k.startswith("model.diffusion_model.input_blocks.") for k in sd):
        raise ValueError("Failed to recognize model type!")
    return GuessSD15()


def preprocess_state_dict(sd):
    if not any(k.startswith("model.diffusion_model") for k in sd.keys()):
        sd = {f"model.diffusion_model.{k}": v for k, v in sd.items()}
    return sd


def replace_state_dict(sd, asd, guess):
    """A VAE file selected beside the checkpoint replaces its VAE keys (forge loader.py:181-280: a
    bare VAE, ``decoder.conv_in.weight``, or one extracted from a model, ``first_stage_model.``)."""
    prefix = guess.vae_key_prefix[0]
    if any(k.startswith("decoder.") for k in asd):
        for k in [k for k in sd if k.startswith(prefix)]:
            del sd[k]
        for k, v in asd.items():
            sd[prefix + k] = v
    elif any(k.startswith(prefix) for k in asd):
        for k, v in asd.items():
            sd[k] = v
    return sd


def split_state_dict(sd, additional_state_dicts=None):
    sd = load_torch_file(sd)
    sd = preprocess_state_dict(sd)
    g = guess(sd)
    for path in additional_state_dicts or []:
        sd = replace_state_dict(sd, load_torch_file(path), g)
    sd = g.process_vae_state_dict(sd)
    state_dict = {g.unet_target: try_filter_state_dict(sd, g.unet_key_prefix),
                  g.vae_target: try_filter_state_dict(sd, g.vae_key_prefix)}
    sd = g.process_clip_state_dict(sd)
    for k, v in g.clip_target.items():
        state_dict[v] = try_filter_state_dict(sd, [k + "."])
    return state_dict, g


class ModelPatcher:
    def __init__(self, model):
        self.model = model
        self.offload_device = torch.device("cpu")
        self.lora_patches = {}
        if not hasattr(model, "lora_loader"):
            model.lora_loader = LoraLoader(model)
        self.lora_loader = model.lora_loader


class KModel(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet


class CLIP:
    def __init__(self, clip_l):
        self.cond_stage_model = torch.nn.ModuleDict({"clip_l": clip_l})
        self.patcher = ModelPatcher(self.cond_stage_model)


class VAE:
    def __init__(self, model):
        self.first_stage_model = model
        self.patcher = ModelPatcher(model)


class ForgeObjects:
    def __init__(self, unet, clip, vae):
        self.unet, self.clip, self.vae, self.clipvision = unet, clip, vae, None


def _component(sd, prefix, strip):
    # the component's own layout, filled from the dict; text-encoder int buffers are non-persistent
    # like transformers' position_ids
    tensors = {}
    for key, (shape, dt) in _net.layout_part(prefix, strip).items():
        value = sd.get(key)
        if value is None:
            value = torch.zeros(shape, dtype=dt)
        tensors[key] = value.to(torch.float32 if dt.is_floating_point else dt)
    return _net.ParamTree(tensors, persistent_ints=False)


class StableDiffusion:
    """backend/diffusion_engine/sd15.py: the engine object Forge keeps as shared.sd_model."""

    def __init__(self, estimated_config, parts):
        self.model_config = estimated_config
        unet = ModelPatcher(KModel(_component(parts["unet"], "model.diffusion_model.", "model.diffusion_model.")))
        clip = CLIP(_component(parts["text_encoder"], "cond_stage_model.", "cond_stage_model."))
        vae = VAE(_component(parts["vae"], "first_stage_model.", "first_stage_model."))
        self.forge_objects = ForgeObjects(unet, clip, vae)
        self.is_sd1, self.is_sd2, self.is_sdxl, self.is_sd3 = True, False, False, False
        self.sd_checkpoint_info = None
        self.sd_model_hash = None
        self.filename = None

    def get_learned_conditioning(self, prompts):
        return _net.fingerprint(*self.forge_objects.clip.cond_stage_model.parameters(), list(prompts))


@torch.inference_mode()
def forge_loader(sd, additional_state_dicts=None):
    parts, g = split_state_dict(sd, additional_state_dicts=additional_state_dicts)
    yaml_config = os.path.splitext(sd)[0] + ".yaml"  # a dict fails here too
    _ = os.path.isfile(yaml_config)
    return StableDiffusion(g, parts)
