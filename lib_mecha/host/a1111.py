"""AUTOMATIC1111 WebUI 1.9/1.10: hot-load through the host's own ``load_model`` (webui-host §3.2).

Hot-load, under ``queue_lock``:
1. check the merge fits a model the host can build (same keys and shapes as the loaded model,
   or a complete dict of an architecture the host runs);
2. detach the current model without trashing it while it is still listed (the meta-tensor trap,
   §3.2 step 1): move it to the CPU; trash it unless the user keeps several models loaded;
3. register a synthetic CheckpointInfo with a unique sentinel filename (checkpoint_info.py);
4. ``sd_models.load_model(fake, already_loaded_state_dict=sd)``: it empties the dict and writes
   the fake title into ``opts.data['sd_model_checkpoint']``, which is what makes every later
   generation's ``reload_model_weights()`` keep the merge (§3.1, §3.6 item 5). Settings are never
   saved by us.

Restore: ``sd_models.reload_model_weights(info=original)``, then the original settings value is put
back, the fake unregistered and any merge model left in ``loaded_sd_models`` trashed.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import HostError
from . import checkpoint_info as ci
from .compat import arch_of_model, detect_arch
from .webui import WebUIHost, m


@dataclass
class _Original:
    info: Any                 # the user's CheckpointInfo
    opt_value: Optional[str]  # opts.data['sd_model_checkpoint'] before the first hot-load


def _param_shapes(model):
    """Parameter name → shape, with the hijack wrappers (``.wrapped.``) taken out of the names.

    Buffers are left out: the host keeps its own when a dict lacks them (schedule, position ids).
    """
    return {k.replace(".wrapped.", "."): tuple(p.shape) for k, p in model.named_parameters()}


class A1111Host(WebUIHost):
    name = "a1111"
    label_is_title = True
    supported_arches = ("sd1-ldm", "sd2-ldm", "sdxl-sgm", "sd3-sgm")

    # --- checks ---------------------------------------------------------------------------
    def _check_runnable(self, state_dict, ident, live) -> None:
        if live is not None:
            expected = _param_shapes(live)
            keys = [k for k in expected if not k.startswith("model_ema.")]
            missing = [k for k in keys if k not in state_dict]
            wrong = [k for k in keys if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
            if not missing and not wrong:
                return
        arch = detect_arch(state_dict)
        if arch is None or arch not in self.supported_arches:
            shown = arch or "an unknown architecture"
            raise HostError(f"cannot hot-load {ident.display_name}: {shown} is not a model this WebUI runs",
                            "save the merge to a file instead")
        live_arch = arch_of_model(live) if live is not None else None
        if live_arch == arch:
            # same family but keys or shapes differ: the host would zero-fill the gaps
            what = (f"{len(missing)} keys missing (first: {missing[0]})" if missing
                    else f"key {wrong[0]!r} has another shape")
            raise HostError(f"cannot hot-load {ident.display_name}: {what} compared with the loaded {arch} model",
                            "the host would fill the gaps with zeros; merge complete models")
        from ..arch import resolve_architecture
        lacking = [k for k in resolve_architecture(arch).mandatory if k not in state_dict]
        if lacking:
            raise HostError(f"cannot hot-load {ident.display_name}: {len(lacking)} keys of {arch} missing "
                            f"(first: {lacking[0]})", "the host would fill the gaps with zeros; merge complete models")

    # --- hot-load -------------------------------------------------------------------------
    def _hot_load_locked(self, state_dict, ident) -> None:
        sd_models, shared = m("sd_models"), m("shared")
        live = self._live_model()
        self._check_runnable(state_dict, ident, live)
        if self._original is None:
            info = live.sd_checkpoint_info if live is not None else sd_models.select_checkpoint()
            self._original = _Original(info, shared.opts.data.get("sd_model_checkpoint"))
        fake = ci.make_checkpoint_info(sd_models, ident, self.checkpoint_dirs()[0])
        ci.register(sd_models, fake)
        self._touching = True
        if live is not None:
            self._detach(sd_models, live)
        sd_models.load_model(checkpoint_info=fake, already_loaded_state_dict=state_dict)
        loaded = sd_models.model_data.sd_model
        if loaded is None or loaded.sd_checkpoint_info is not fake:
            raise HostError(f"the WebUI did not load {ident.display_name}", "see the console for its error")
        # the RAM cache (sd_checkpoint_cache > 0) must not keep a merge
        getattr(sd_models, "checkpoints_loaded", {}).pop(fake, None)
        self._drop_stale_merges(sd_models, keep=loaded)

    def _detach(self, sd_models, live) -> None:
        """Take the current model off the device so ``load_model`` does not trash it while listed."""
        loaded = getattr(sd_models.model_data, "loaded_sd_models", [])
        to_cpu = getattr(sd_models, "send_model_to_cpu", None)
        if to_cpu is not None:
            to_cpu(live)
        sd_models.model_data.sd_model = None
        limit = int(m("shared").opts.data.get("sd_checkpoints_limit", 1) or 1)
        if ci.is_unsaved(live.sd_checkpoint_info) or limit <= 1:
            if live in loaded:
                loaded.remove(live)
            trash = getattr(sd_models, "send_model_to_trash", None)
            if trash is not None:
                trash(live)

    def _drop_stale_merges(self, sd_models, keep) -> None:
        loaded = getattr(sd_models.model_data, "loaded_sd_models", [])
        for model in list(loaded):
            if model is not keep and ci.is_unsaved(getattr(model, "sd_checkpoint_info", None)):
                loaded.remove(model)
                with contextlib.suppress(Exception):
                    sd_models.send_model_to_trash(model)

    def _after_refresh(self) -> None:
        # list_models() clears the registry; without the fake the next Generate falls back (§3.6.6)
        live = self._live_model()
        if self._ident is not None and live is not None and ci.is_unsaved(live.sd_checkpoint_info):
            ci.register(m("sd_models"), live.sd_checkpoint_info)

    # --- restore --------------------------------------------------------------------------
    def _original_info(self, sd_models):
        orig = self._original.info
        # a refresh may have rebuilt the registry: prefer the current object for the same file
        again = sd_models.get_closet_checkpoint_match(orig.title) if getattr(orig, "title", None) else None
        return again if again is not None and again.filename == orig.filename else orig

    def _restore_locked(self) -> None:
        sd_models, shared = m("sd_models"), m("shared")
        if self._original is None:
            self._forget()
            return
        info = self._original_info(sd_models)
        opt_value = self._original.opt_value
        sd_models.reload_model_weights(info=info)
        model = sd_models.model_data.sd_model
        if model is None or ci.is_unsaved(getattr(model, "sd_checkpoint_info", None)):
            raise HostError(f"could not bring back {info.title}", "select it in the checkpoint list")
        if opt_value is not None:
            shared.opts.data["sd_model_checkpoint"] = opt_value
        ci.unregister(sd_models)
        self._drop_stale_merges(sd_models, keep=model)
        self._forget()
