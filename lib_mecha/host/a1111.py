"""AUTOMATIC1111 WebUI 1.9/1.10: merges are streamed into the loaded ``LatentDiffusion`` in place.

A1111's model carries the checkpoint's own key names (``model.state_dict()``), so each merged
key is copied into the parameter or buffer of the same name (the hijack's ``.wrapped.`` wrappers
seen through). Nothing is rebuilt and no state dict of the whole merge exists: the host's
``load_model(..., already_loaded_state_dict=...)`` path, which trashed the old model while it
was still listed and held a second copy, is not used.

The model keeps its ``sd_model_checkpoint`` (the selected file), so every generation's
``reload_model_weights()`` returns early and keeps the merge (modules/sd_models.py); only
``sd_checkpoint_info`` and ``sd_model_hash`` name the merge, for the infotexts. Before writing:

* LoRA weights baked in by the built-in Lora extension are taken out of the modules about to be
  written and their backups dropped (extensions-builtin/Lora/networks.py:
  ``network_restore_weights_from_backup``, ``network_reset_cached_weight``, what the host's own
  ``load_state_dict`` does per module), so a later LoRA change cannot write old weights back;
* ``alphas_cumprod`` goes to ``alphas_cumprod_original``, from which every generation derives the
  schedule it samples with (``apply_alpha_schedule_override``);
* while a VAE file is selected (``sd_vae.loaded_vae_file``), the merge's VAE is left out: the
  host keeps that VAE for a loaded checkpoint too (``sd_vae.resolve_vae``).

After writing, the conditioning cache is cleared. A pending selection (``opts.sd_model_checkpoint``
naming another file than the model's) is loaded first with ``reload_model_weights()``.
"""
from __future__ import annotations

import sys
from typing import Collection, Mapping, Optional

import torch

from ..errors import HostError
from ..live import Original
from ..live.module import ModuleModel
from .webui import WebUIHost, m

EMA_PREFIX = "model_ema."
VAE_PREFIX = "first_stage_model."


class A1111Model(ModuleModel):
    """The loaded ``LatentDiffusion`` as a :class:`~lib_mecha.live.LiveModel`."""

    def __init__(self, sd_model, label: str, host: "A1111Host"):
        super().__init__(sd_model, label)
        self.host = host

    def tensors(self) -> Mapping[str, torch.Tensor]:
        out = {k: t for k, t in super().tensors().items() if not k.startswith(EMA_PREFIX)}
        if getattr(m("sd_vae"), "loaded_vae_file", None):
            out = {k: t for k, t in out.items() if not k.startswith(VAE_PREFIX)}
        schedule = getattr(self.module, "alphas_cumprod_original", None)
        if "alphas_cumprod" in out and isinstance(schedule, torch.Tensor):
            out["alphas_cumprod"] = schedule
        return out

    def before_write(self, names: Collection[str]) -> None:
        live = self.tensors()
        written = {id(live[n]) for n in names if n in live}
        networks = sys.modules.get("networks")  # the built-in Lora extension's module
        for module in self.module.modules():
            if not hasattr(module, "network_current_names"):
                continue
            recurse = isinstance(module, torch.nn.MultiheadAttention)
            if not any(id(p) in written for p in module.parameters(recurse=recurse)):
                continue
            with torch.no_grad():
                if networks is not None and hasattr(networks, "network_restore_weights_from_backup"):
                    networks.network_restore_weights_from_backup(module)
            module.network_current_names = ()
            module.network_weights_backup = None
            module.network_bias_backup = None

    def after_write(self) -> None:
        self.host._clear_cond_cache()


class A1111Host(WebUIHost):
    name = "a1111"
    label_is_title = True

    def _model_view(self, model) -> A1111Model:
        return A1111Model(model, self._label(model), self)

    def _label(self, model) -> str:
        info = self._live.original.host_info[0] if self._live.original is not None else model.sd_checkpoint_info
        return getattr(info, "title", None) or str(getattr(model, "sd_model_checkpoint", "the loaded model"))

    def _original_of(self, model) -> Original:
        if any(p.is_meta for p in model.parameters()):
            raise HostError("the loaded model has no weights (it was moved to the meta device)",
                            "select a checkpoint and generate once, then try again")
        info = model.sd_checkpoint_info
        return Original.of(model.sd_model_checkpoint, info.title, (info, model.sd_model_hash))

    # --- pending selection ------------------------------------------------------------------
    def _selected(self):
        try:
            return m("sd_models").select_checkpoint()
        except Exception:  # no checkpoint at all
            return None

    def _pending_label(self, model) -> Optional[str]:
        """What the next generation's ``reload_model_weights()`` would load instead of ``model``."""
        info = self._selected()
        if info is None:
            return None if model is not None else "a checkpoint"
        if model is None or getattr(model, "sd_model_checkpoint", None) != info.filename:
            return info.title
        return None

    def _load_selection(self, label: str):
        m("sd_models").reload_model_weights()
        model = self._live_model()
        if model is None or self._pending_label(model) is not None:
            raise HostError(f"the WebUI could not load {label}, which it has selected", "see its console")
        return model

    def _reload_original(self, original: Optional[Original]) -> None:
        sd_models = m("sd_models")
        model = self._live_model()
        if original is not None and model is not None:
            model.sd_checkpoint_info, model.sd_model_hash = original.host_info
        sd_models.reload_model_weights(info=original.host_info[0] if original is not None else None,
                                       forced_reload=True)
