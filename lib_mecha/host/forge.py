"""Forge 2.x: hot-load by copying the merge into the live model (forge-real-host.md).

Forge's loader accepts only a path (``backend/utils.py:load_torch_file`` calls ``.lower()``) and
``forge_model_reload`` keeps a model only while ``model_data.forge_hash`` equals its loading
parameters (``modules/sd_models.py``). So nothing is rebuilt: under ``queue_lock``, on Forge's main
thread, the merge is split with Forge's own functions and copied into the existing UNet, text
encoder and VAE inside ``torch.inference_mode()`` (Forge's parameters are inference tensors).
LoRA backups are detached first, and the conditioning cache is cleared after. The loading
parameters and ``forge_hash`` are left alone, so the next generation keeps the merge; the model
object only gets a synthetic ``sd_checkpoint_info`` so infotexts name the merge.

Restore copies the original file back the same way; if that fails, Forge rebuilds the model from
its selected checkpoint (``forge_hash = ''`` + ``forge_model_reload()``).
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any, Dict

from ..errors import HostError
from . import checkpoint_info as ci
from .compat import require_same_architecture
from .webui import WebUIHost, m

# keys the live text encoder has but a checkpoint need not carry (forge-real-host.md step 5)
CLIP_IGNORE = ("transformer.text_projection.weight", "transformer.text_model.embeddings.position_ids",
               "logit_scale", "transformer.text_model.embeddings.token_embedding.wrapped.weight")


@dataclass
class _Original:
    info: Any
    model_hash: Any


def _b(name: str):
    return importlib.import_module(f"backend.{name}")


def _targets(model) -> Dict[str, Any]:
    fo = model.forge_objects
    return {"unet": fo.unet.model.diffusion_model, "text encoder": fo.clip.cond_stage_model,
            "vae": fo.vae.first_stage_model}


def _patchers(model):
    fo = model.forge_objects
    return [fo.unet, fo.clip.patcher, fo.vae.patcher]


def _shapes(module, ignore=()) -> Dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith(tuple(ignore) or ("\0",))}


class Forge2Host(WebUIHost):
    name = "forge2"
    label_is_title = False

    def _call_model_thread(self, fn, *args):
        """Model work runs on Forge's main thread, like its own txt2img (modules/txt2img.py)."""
        if threading.current_thread() is threading.main_thread():
            return fn(*args)
        main_thread = importlib.import_module("modules_forge.main_thread")
        box: Dict[str, Any] = {}

        def job():
            try:
                box["result"] = fn(*args)
            except BaseException as exc:  # run_and_wait_result would print and drop it
                box["error"] = exc
        main_thread.run_and_wait_result(job)
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def _live_model(self):
        model = m("sd_models").model_data.sd_model
        return model if hasattr(model, "forge_objects") else None

    def _ensure_model(self):
        """The live engine, loading the selected checkpoint first if Forge has not yet (lazy load)."""
        model = self._live_model()
        if model is not None:
            return model
        sd_models = m("sd_models")
        if not sd_models.model_data.forge_loading_parameters:
            importlib.import_module("modules_forge.main_entry").refresh_model_loading_parameters()
        sd_models.forge_model_reload()
        model = self._live_model()
        if model is None:
            raise HostError("no checkpoint is loaded and Forge could not load one", "select a checkpoint first")
        return model

    # --- split and copy -------------------------------------------------------------------
    def _split(self, model, state_dict) -> Dict[str, Dict[str, Any]]:
        """The merge as Forge's loader would split it (backend/loader.py:split_state_dict)."""
        loader, sd_tools = _b("loader"), _b("state_dict")
        guess = model.model_config
        sd = loader.preprocess_state_dict(state_dict)  # the same dict when keys are already LDM
        if sd is not state_dict:
            state_dict.clear()
        sd = guess.process_vae_state_dict(sd)
        parts = {"unet": sd_tools.try_filter_state_dict(sd, guess.unet_key_prefix),
                 "vae": sd_tools.try_filter_state_dict(sd, guess.vae_key_prefix)}
        sd = guess.process_clip_state_dict(sd)
        clip: Dict[str, Any] = {}
        for prefix in dict(guess.clip_target):
            clip.update(sd_tools.try_filter_state_dict(sd, [prefix + "."], prefix + "."))
        parts["text encoder"] = clip
        state_dict.clear()  # what no component took (the caller's dict is consumed, like Forge's)
        return parts

    def _check(self, model, parts, what: str) -> None:
        import torch
        targets = _targets(model)
        for name, module in targets.items():
            for p in module.parameters():
                if type(p) is not torch.nn.Parameter or not p.dtype.is_floating_point:
                    raise HostError(f"cannot hot-load {what}: the loaded model's {name} uses a "
                                    f"quantized storage ({type(p).__name__}, {p.dtype})",
                                    "set 'Diffusion in Low Bits' to Automatic, or save the merge and load the file")
        live = {"unet": _shapes(targets["unet"]),
                "vae": {k: v for k, v in _shapes(targets["vae"]).items() if not k.startswith("loss.")},
                "text encoder": _shapes(targets["text encoder"], CLIP_IGNORE)}
        require_same_architecture(what, live, parts)

    def _copy(self, model, parts) -> None:
        import torch
        sd_tools = _b("state_dict")
        targets = _targets(model)
        with torch.inference_mode():
            for patcher in _patchers(model):
                # put pre-LoRA weights back and forget the backups (backend/patcher/lora.py:refresh),
                # so a later LoRA refresh cannot write the old model's weights over the merge
                patcher.lora_loader.refresh(lora_patches={}, offload_device=patcher.offload_device,
                                            force_refresh=True)
            sd_tools.load_state_dict(targets["unet"], parts["unet"], log_name="mecha unet")
            sd_tools.load_state_dict(targets["vae"], parts["vae"], ignore_start="loss.", log_name="mecha vae")
            sd_tools.load_state_dict(targets["text encoder"], parts["text encoder"],
                                     ignore_errors=[p + "." + i for p in dict(model.model_config.clip_target)
                                                    for i in CLIP_IGNORE], log_name="mecha text encoder")
        self._clear_cond_cache()

    def _clear_cond_cache(self) -> None:
        # the cache key holds sd_checkpoint_info, which an in-place copy need not change
        # (modules/processing.py: StableDiffusionProcessing.clear_prompt_cache)
        cls = m("processing").StableDiffusionProcessing
        cls.cached_c = [None, None, None]
        cls.cached_uc = [None, None, None]

    # --- hot-load / restore ---------------------------------------------------------------
    def _hot_load_locked(self, state_dict, ident) -> None:
        model = self._ensure_model()
        parts = self._split(model, state_dict)
        self._check(model, parts, ident.display_name)
        if self._original is None:
            self._original = _Original(model.sd_checkpoint_info, model.sd_model_hash)
        fake = ci.make_checkpoint_info(m("sd_models"), ident, self.checkpoint_dirs()[0])
        self._touching = True
        self._copy(model, parts)
        parts.clear()
        model.sd_checkpoint_info = fake
        model.sd_model_hash = ident.h10

    def _restore_locked(self) -> None:
        if self._original is None:
            self._forget()
            return
        orig, sd_models = self._original, m("sd_models")
        model = self._live_model()
        try:
            if model is None or model.sd_checkpoint_info is orig.info:
                raise LookupError("nothing to copy back")
            import safetensors.torch
            parts = self._split(model, dict(safetensors.torch.load_file(orig.info.filename)))
            self._check(model, parts, orig.info.name)
            self._copy(model, parts)
            model.sd_checkpoint_info = orig.info
            model.sd_model_hash = orig.model_hash
        except Exception:
            # Forge's own path: rebuild from the selected checkpoint
            sd_models.model_data.forge_hash = ""
            sd_models.forge_model_reload()
            self._clear_cond_cache()
        self._forget()
