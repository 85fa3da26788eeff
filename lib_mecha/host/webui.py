"""What every WebUI host (A1111 and the Forge family) shares: folders, catalogue, lock, previews.

The WebUI's ``modules`` package is imported inside methods only. Hot-loading lives in
:mod:`.hot_load`; subclasses say how their running model is reached and reloaded.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import Busy, HostError
from .base import LoadedModel, ModelRef, OptionSpec, PreviewParams
from .checkpoint_info import is_unsaved
from .compat import arch_of_model
from .hot_load import HotLoading
from .paths import require_inside, unique_dirs
from .recipes import INFOTEXT_KEY, RecipeStore

MODEL_EXTS = (".safetensors", ".ckpt")
NETWORK_EXTS = (".safetensors", ".pt", ".ckpt")


def m(name: str):
    """A module of the WebUI (``modules.<name>``), imported on demand."""
    return importlib.import_module(f"modules.{name}")


class StateProgress:
    """A ProgressSink that reports through the host's ``shared.state`` (progress bar, Interrupt)."""

    def __init__(self, state):
        self.state = state
        self.total = 0
        self.done = 0

    def begin(self, total: int, text: str = "") -> None:
        self.total, self.done = max(0, int(total)), 0
        self.state.job_count = 1
        self.state.sampling_steps = self.total
        self.state.sampling_step = 0
        self.state.textinfo = text or "Mecha"

    def step(self, n: int = 1, text: str = "") -> None:
        self.done += n
        self.state.sampling_step = min(self.done, self.total) if self.total else self.done
        if text:
            self.state.textinfo = text

    def end(self) -> None:
        self.state.textinfo = None


class WebUIHost(HotLoading):
    """Shared behaviour of the WebUI hosts. Thread safe; model work runs under ``queue_lock``."""

    name = "webui"
    label_is_title = True  # A1111 dropdowns show titles; Forge shows names (sd_models.checkpoint_tiles)

    def __init__(self):
        self._init_live()
        self.recipes = RecipeStore(self.data_dir())

    def _sd_models(self):
        return m("sd_models")

    # --- identity -------------------------------------------------------------------------
    @property
    def gradio_major(self) -> int:
        import gradio
        return int(gradio.__version__.split(".")[0])

    # --- paths ----------------------------------------------------------------------------
    def _cmd(self, name: str, default=None):
        return getattr(m("shared").cmd_opts, name, default)

    def checkpoint_dirs(self) -> List[Path]:
        return unique_dirs([self._cmd("ckpt_dir"), m("sd_models").model_path])

    def default_save_dir(self) -> Path:
        base = Path(self._cmd("ckpt_dir") or m("sd_models").model_path)
        sub = str(self.option("mecha_save_dir", "") or "").strip()
        target = Path(os.path.abspath(base / sub)) if sub else base
        return require_inside(target, [base], "save folder (setting mecha_save_dir)")

    def lora_dirs(self) -> List[Path]:
        models = m("paths").models_path
        return unique_dirs([self._cmd("lora_dir") or os.path.join(models, "Lora"),
                            self._cmd("lyco_dir_backcompat")])

    def vae_dirs(self) -> List[Path]:
        sd_vae = m("sd_vae")
        return unique_dirs([getattr(sd_vae, "vae_path", None), self._cmd("vae_dir")])

    def model_roots(self) -> List[Path]:
        return unique_dirs([*self.checkpoint_dirs(), *self.lora_dirs(), *self.vae_dirs(), m("paths").models_path])

    def data_dir(self) -> Path:
        return Path(m("paths").data_path) / "mecha"

    def outputs_dir(self, kind: str = "txt2img") -> Path:
        opts = m("shared").opts
        return Path(opts.data.get("outdir_samples") or opts.data.get(f"outdir_{kind}_samples")
                    or os.path.join(m("paths").data_path, "outputs", f"{kind}-images"))

    # --- catalogue ------------------------------------------------------------------------
    def _ref(self, info) -> ModelRef:
        label = info.title if self.label_is_title else info.name
        return ModelRef(label=label, path=str(info.filename), name=info.name, sha256=getattr(info, "sha256", None))

    def list_checkpoints(self) -> List[ModelRef]:
        infos = list(m("sd_models").checkpoints_list.values())
        return [self._ref(i) for i in infos
                if not is_unsaved(i) and str(i.filename).lower().endswith(MODEL_EXTS)]

    def resolve_checkpoint(self, label: str) -> Optional[ModelRef]:
        if not label:
            return None
        sd_models = m("sd_models")
        info = sd_models.get_closet_checkpoint_match(label)
        if info is None and os.path.isabs(label):
            real = os.path.realpath(label)
            info = next((i for i in sd_models.checkpoints_list.values()
                         if os.path.realpath(i.filename) == real), None)
        if info is None or is_unsaved(info):
            return None
        return self._ref(info)

    def refresh_checkpoints(self) -> None:
        m("sd_models").list_models()

    def _walk(self, dirs: Sequence[Path], exts: Tuple[str, ...]) -> List[ModelRef]:
        out, seen = [], set()
        for d in dirs:
            for root, _, files in os.walk(d, followlinks=True):
                for f in sorted(files):
                    path = os.path.join(root, f)
                    if f.lower().endswith(exts) and path not in seen:
                        seen.add(path)
                        rel = os.path.relpath(path, d)
                        out.append(ModelRef(label=os.path.splitext(rel)[0], path=path, name=rel))
        return out

    def list_loras(self) -> List[ModelRef]:
        return self._walk(self.lora_dirs(), NETWORK_EXTS)

    def refresh_loras(self) -> None:
        """Have the built-in Lora extension re-scan its folders, so that a LoRA written since start-up
        works in prompts (``<lora:name:1>``) and shows in Extra networks without a restart. Its
        ``networks`` module (A1111 ``extensions-builtin/Lora/networks.py``, Forge
        ``extensions-builtin/sd_forge_lora/networks.py``) keeps the list in ``available_networks`` and
        rebuilds it in ``list_available_networks()``, as its own refresh button and
        ``/sdapi/v1/refresh-loras`` do. It is imported by that extension only; when the extension is
        disabled there is no list to refresh. Call it under :meth:`run_exclusive`: a generation
        reads the list while it loads its LoRAs."""
        networks = sys.modules.get("networks")
        if hasattr(networks, "available_networks") and callable(getattr(networks, "list_available_networks", None)):
            networks.list_available_networks()

    def list_vaes(self) -> List[ModelRef]:
        sd_vae = m("sd_vae")
        with contextlib.suppress(Exception):
            sd_vae.refresh_vae_list()
        return [ModelRef(label=k, path=str(v), name=os.path.basename(str(v)))
                for k, v in dict(getattr(sd_vae, "vae_dict", {})).items()]

    # --- runtime --------------------------------------------------------------------------
    def device(self):
        return m("devices").device

    def work_dtype(self):
        return m("devices").dtype

    def free_memory(self) -> None:
        m("devices").torch_gc()

    # --- jobs -----------------------------------------------------------------------------
    def _call_model_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run model work where the host runs it (Forge: its main thread)."""
        return fn(*args)

    def run_exclusive(self, fn: Callable[..., Any], *args: Any, job: str = "mecha", wait: float = 0.0) -> Any:
        """Run ``fn(*args)`` holding the host's ``queue_lock`` (shared with generation).

        Raises :class:`Busy` when the lock stays taken for ``wait`` seconds. Never call it
        from inside a generation hook: the lock is not reentrant.
        """
        lock = m("call_queue").queue_lock
        deadline = time.monotonic() + max(0.0, wait)
        while not lock.acquire(blocking=False):
            if time.monotonic() >= deadline:
                raise Busy(f"the WebUI is busy with a generation or another merge; {job} was not started",
                           "try again when it finishes")
            time.sleep(0.05)
        state = m("shared").state
        try:
            state.begin(job=f"mecha {job}")
            try:
                return self._call_model_thread(fn, *args)
            finally:
                state.end()
        finally:
            lock.release()

    def progress(self) -> StateProgress:
        return StateProgress(m("shared").state)

    def interrupted(self) -> bool:
        state = m("shared").state
        return bool(getattr(state, "interrupted", False) or getattr(state, "stopping_generation", False))

    # --- model ----------------------------------------------------------------------------
    def _live_model(self):
        """The loaded model object, without triggering A1111's lazy load (webui-host §3.6.13)."""
        model = m("sd_models").model_data.sd_model
        return model if model is not None and hasattr(model, "sd_checkpoint_info") else None

    def current_model(self) -> Optional[LoadedModel]:
        model = self._live_model()
        if model is None:
            return None
        info = model.sd_checkpoint_info
        ident = self.hot_loaded()
        label = info.title if self.label_is_title else info.name
        return LoadedModel(label=label, path=None if ident else str(info.filename), arch=arch_of_model(model),
                           is_merge=ident is not None, identity=ident)

    def _clear_cond_cache(self) -> None:
        """Forget cached conditionings: an in-place write changes the text encoder under the same
        cache key (modules/processing.py: ``StableDiffusionProcessing.clear_prompt_cache``)."""
        cls = m("processing").StableDiffusionProcessing
        for name in ("cached_c", "cached_uc"):
            cache = getattr(cls, name, None)
            if isinstance(cache, list):
                setattr(cls, name, [None] * len(cache))

    # --- generation -----------------------------------------------------------------------
    def samplers(self) -> List[str]:
        """The sampler names of the host's txt2img dropdown: ``visible_sampler_names()`` of
        modules/sd_samplers.py (A1111 1.6+, Forge), which leaves out the ones hidden in the
        settings; older hosts only have ``all_samplers``."""
        sd_samplers = m("sd_samplers")
        visible = getattr(sd_samplers, "visible_sampler_names", None)
        if visible is not None:
            return list(visible())
        return [s.name for s in getattr(sd_samplers, "all_samplers", [])]

    def generate(self, params: PreviewParams, extra_infotext: Optional[Dict[str, str]] = None,
                 wait: float = 0.0) -> List[Tuple[Any, str]]:
        """txt2img through the host's own processing; the infotext carries ``Mecha recipe`` while
        a merge is loaded. Refused when the host would first load another checkpoint (its
        pending selection) and so drop the merge the preview is meant to show."""
        return self.run_exclusive(self._generate_locked, params, dict(extra_infotext or {}), job="preview", wait=wait)

    def compare(self, params: PreviewParams, wait: float = 0.0):
        """The same preview from the loaded merge and from the original checkpoint (a
        :class:`~.compare.Comparison`); the merge is loaded again afterwards."""
        from .compare import compare_locked
        return self.run_exclusive(self._by_user, compare_locked, self, params, job="compare", wait=wait)

    def _generate_locked(self, params: PreviewParams, extra: Dict[str, str]):
        ident = self.hot_loaded()
        if ident is not None:
            pending = self.pending_selection()
            if pending is not None:
                raise HostError(f"the WebUI has {pending} selected and would load it for this preview, "
                                f"dropping the merge {ident.display_name}",
                                "press Merge & load again to merge into it, or select the merge's checkpoint back")
            extra.setdefault(INFOTEXT_KEY, ident.short_id)
        processing, shared = m("processing"), m("shared")
        opts = shared.opts
        cls = processing.StableDiffusionProcessingTxt2Img
        wanted = dict(prompt=params.prompt, negative_prompt=params.negative_prompt, seed=int(params.seed),
                      steps=int(params.steps), width=int(params.width), height=int(params.height),
                      cfg_scale=float(params.cfg_scale), sampler_name=params.sampler_name,
                      batch_size=int(params.batch_size), n_iter=1, styles=[],
                      outpath_samples=str(self.outputs_dir("txt2img")),
                      outpath_grids=opts.data.get("outdir_grids") or opts.data.get("outdir_txt2img_grids"),
                      do_not_save_samples=not params.save, do_not_save_grid=True,
                      override_settings={}, enable_hr=False, refiner_checkpoint=None)
        known = {f.name for f in fields(cls)} if hasattr(cls, "__dataclass_fields__") else set(wanted)
        p = cls(**{k: v for k, v in wanted.items() if k in known})
        p.scripts = None   # process_images guards every script hook with `if p.scripts is not None`
        p.script_args = []
        p.extra_generation_params.update(extra)
        with contextlib.closing(p):
            processed = processing.process_images(p)
        tqdm = getattr(shared, "total_tqdm", None)
        if tqdm is not None:
            with contextlib.suppress(Exception):
                tqdm.clear()
        return list(zip(processed.images, processed.infotexts))

    # --- settings -------------------------------------------------------------------------
    def option(self, key: str, default: Any = None) -> Any:
        opts = m("shared").opts
        return opts.data.get(key, default)

    def register_options(self, specs: Sequence[OptionSpec]) -> None:
        from .settings_ui import add_options
        add_options(m("shared"), specs)
