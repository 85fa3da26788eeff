"""Forge 2.x: merges are streamed into the live engine's UNet, text encoder and VAE in place.

Forge's loader accepts only a path (``backend/utils.py:load_torch_file`` calls ``.lower()``) and
``forge_model_reload`` keeps a model only while ``model_data.forge_hash`` equals its loading
parameters (``modules/sd_models.py``), so nothing is rebuilt (forge-real-host.md). Each merged
key is placed with Forge's own functions, on a one-key dict, exactly as ``backend/loader.py:
split_state_dict`` places a checkpoint's: ``guess.process_vae_state_dict``, then
``backend.state_dict.try_filter_state_dict`` with the UNet and VAE prefixes,
``guess.process_clip_state_dict`` (renames, splits of fused attention, transposes) and the
text-encoder prefixes of ``guess.clip_target``; it is then copied into the component's tensor of
that name inside ``torch.inference_mode()`` (Forge's weights are inference tensors). The same
calls on meta tensors tell, before anything is written, where every key goes.

Weights that the VAE / text-encoder files selected beside the checkpoint supply (Forge puts them
over the checkpoint's, for a saved merge too) are neither written nor restored. Before writing,
LoRA patches are taken out and their backups dropped
(``backend/patcher/lora.py:LoraLoader.refresh``), so a later LoRA refresh cannot write the old
weights back; after it, the conditioning cache is cleared. The loading parameters and
``forge_hash`` are left alone, so the next generation keeps the merge; ``sd_checkpoint_info``
names it for the infotexts. A pending selection (``forge_hash`` differing from the parameters
the dropdowns set) is loaded first with ``forge_model_reload()``.
"""
from __future__ import annotations

import importlib
import os
import threading
from typing import Any, Collection, Dict, Mapping, Optional, Set

import torch

from ..errors import HostError
from ..live import Original
from ..live.module import unwrapped
from .webui import WebUIHost, m

# keys the live text encoder has but a checkpoint need not carry (forge-real-host.md step 5)
CLIP_IGNORE = ("transformer.text_projection.weight", "transformer.text_model.embeddings.position_ids",
               "logit_scale", "transformer.text_model.embeddings.token_embedding.wrapped.weight")
UNET, VAE, TEXT = "unet", "vae", "text encoder"


def _b(name: str):
    return importlib.import_module(f"backend.{name}")


def _placeholders(path) -> Dict[str, torch.Tensor]:
    """Meta tensors of a file's keys, shapes and dtypes (its header only)."""
    from ..io import open_model
    with open_model(path) as f:
        return {k: torch.empty(t.shape, dtype=t.dtype, device="meta") for k, t in f.tensors.items()}


def _components(engine) -> Dict[str, Any]:
    fo = engine.forge_objects
    return {UNET: fo.unet.model.diffusion_model, TEXT: fo.clip.cond_stage_model, VAE: fo.vae.first_stage_model}


class ForgeModel:
    """Forge's engine object as a :class:`~lib_mecha.live.LiveModel`; names are
    ``"<component>/<name in the component>"``."""

    def __init__(self, engine, label: str, host: "Forge2Host"):
        self.engine = engine
        self.label = label
        self.host = host
        self._lora_detached = False
        self._from_modules: Optional[Set[str]] = None

    def tensors(self) -> Mapping[str, torch.Tensor]:
        if self._from_modules is None:
            self._from_modules = self._names_from_modules()
        out: Dict[str, torch.Tensor] = {}
        for component, module in _components(self.engine).items():
            for name, tensor in module.state_dict(keep_vars=True).items():
                for alias in (f"{component}/{name}", f"{component}/{unwrapped(name)}"):
                    if alias not in self._from_modules:
                        out.setdefault(alias, tensor)
        return out

    def _names_from_modules(self) -> Set[str]:
        """Live names that the VAE / text-encoder files the model was loaded with supply.

        Forge puts those files over the checkpoint's keys (``backend/loader.py:replace_state_dict``,
        from ``split_state_dict``), for a saved merge too; so a hot-load leaves them alone and a
        restore does not put the checkpoint's own back. Found by running Forge's function on meta
        tensors of the files' headers."""
        params = m("sd_models").model_data.forge_loading_parameters or {}
        paths = [str(p) for p in params.get("additional_modules") or []]
        if not paths:
            return set()
        original = self.host._live.original
        try:
            sd = _placeholders(original.path)
            supplied = set()
            for path in paths:
                asd = _placeholders(path)
                supplied.update(id(v) for v in asd.values())
                sd = _b("loader").replace_state_dict(sd, asd, self.engine.model_config)
            names: Set[str] = set()
            for key, value in sd.items():
                if id(value) in supplied:
                    names.update(self.convert(key, value))
            return names
        except Exception as exc:
            raise HostError(f"cannot tell which weights the selected VAE / text encoder files replace "
                            f"({', '.join(os.path.basename(p) for p in paths)}): {type(exc).__name__}: {exc}",
                            "clear 'VAE / Text Encoder', or save the merge and load the file") from exc

    def convert(self, key: str, value: torch.Tensor) -> Mapping[str, torch.Tensor]:
        guess, sd_tools = self.engine.model_config, _b("state_dict")
        sd = guess.process_vae_state_dict({key: value})
        out = {f"{UNET}/{k}": v for k, v in sd_tools.try_filter_state_dict(sd, guess.unet_key_prefix).items()}
        out.update({f"{VAE}/{k}": v for k, v in sd_tools.try_filter_state_dict(sd, guess.vae_key_prefix).items()})
        sd = guess.process_clip_state_dict(sd)
        for prefix in dict(guess.clip_target):
            part = sd_tools.try_filter_state_dict(sd, [prefix + "."], prefix + ".")
            out.update({f"{TEXT}/{k}": v for k, v in part.items()})
        return out

    def required(self, name: str, tensor: torch.Tensor) -> bool:
        component, inner = name.split("/", 1)
        if component == VAE:
            return not inner.startswith("loss.")
        if component == TEXT:
            return not inner.endswith(CLIP_IGNORE) and tensor.dtype.is_floating_point
        return True

    def before_write(self, names: Collection[str]) -> None:
        if self._lora_detached:
            return
        fo = self.engine.forge_objects
        with torch.inference_mode():
            for patcher in (fo.unet, fo.clip.patcher, fo.vae.patcher):
                # pre-LoRA weights back, backups forgotten (backend/patcher/lora.py:refresh)
                patcher.lora_loader.refresh(lora_patches={}, offload_device=patcher.offload_device,
                                            force_refresh=True)
        self._lora_detached = True

    def after_write(self) -> None:
        self.host._clear_cond_cache()


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

    def _model_view(self, model) -> ForgeModel:
        original = self._live.original
        return ForgeModel(model, original.label if original is not None else model.sd_checkpoint_info.name, self)

    def _original_of(self, model) -> Original:
        info = model.sd_checkpoint_info
        return Original.of(info.filename, info.name, (info, model.sd_model_hash))

    # --- pending selection ------------------------------------------------------------------
    def _pending_label(self, model) -> Optional[str]:
        """What the next generation's ``forge_model_reload()`` would load instead of ``model``."""
        data = m("sd_models").model_data
        params = data.forge_loading_parameters
        if model is not None and params and data.forge_hash == str(params):
            return None
        info = params.get("checkpoint_info") if params else None
        return info.name if info is not None else "the selected checkpoint"

    def _load_selection(self, label: str):
        sd_models = m("sd_models")
        if not sd_models.model_data.forge_loading_parameters:
            importlib.import_module("modules_forge.main_entry").refresh_model_loading_parameters()
        sd_models.forge_model_reload()
        model = self._live_model()
        if model is None:
            raise HostError(f"Forge could not load {label}, which it has selected", "select a checkpoint first")
        return model

    def _reload_original(self, original: Optional[Original]) -> None:
        sd_models = m("sd_models")
        sd_models.model_data.forge_hash = ""
        sd_models.forge_model_reload()
        self._clear_cond_cache()
