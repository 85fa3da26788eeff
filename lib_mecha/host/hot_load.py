"""Hot-loading for the WebUI hosts: a merge streamed into the running model (:mod:`lib_mecha.live`).

Under the host's lock (``run_exclusive``), a hot-load:

1. loads the checkpoint the host has selected but not loaded yet (the WebUI loads its dropdown
   selection lazily, at the next generation; a merge written into the old model would be
   discarded there), so the merge always goes into the model the next generation uses;
2. streams the merge into that model, key by key, recomputing only the keys whose fingerprint
   changed since the merge it holds (:func:`lib_mecha.live.stream_merge`);
3. names the merge in the model's ``sd_checkpoint_info`` and ``sd_model_hash``, which is what
   the host's infotexts read; the host's selection and settings are left alone, so every later
   generation keeps the model (A1111: ``reload_model_weights`` returns early while the model's
   ``sd_model_checkpoint`` is the selected file; Forge: while ``forge_hash`` is unchanged).

Restore streams the original checkpoint's keys back. Where that cannot be done key by key (a
.ckpt, a file changed on disk), the host reloads the checkpoint its own way.

Code that runs inside the host's own generation (the X/Y/Z plot's cells, :mod:`.grid`) holds the
host's lock already and runs on the host's model thread: it calls :meth:`HotLoading.hot_load_within`
and :meth:`HotLoading.restore_within`, which take neither again (the lock is not reentrant).

Subclasses provide ``_live_model``, ``_pending_label``, ``_load_selection``, ``_model_view``,
``_original_of`` and ``_reload_original``.
"""
from __future__ import annotations

import contextlib
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

from ..errors import HostError
from ..live import LiveReport, LiveState, LiveTarget, NotRestored, Original, PeakMemory, pin_seeds
from ..live.stream import restore_keys, stream_merge
from . import checkpoint_info as ci
from .base import MergeIdentity


@dataclass(frozen=True)
class LoadedMerge:
    """The merge the running model holds: what a hot-load needs to load it again."""

    ident: MergeIdentity
    recipe: Any
    options: Any


class StopFlag:
    """The engine's cancel check: the job's Cancel, or the host's Interrupt button."""

    def __init__(self, cancel, interrupted: Callable[[], bool]):
        self.cancel = cancel
        self.interrupted = interrupted

    def __call__(self) -> bool:
        c = self.cancel
        asked = c.is_set() if hasattr(c, "is_set") else bool(c()) if callable(c) else False
        return asked or self.interrupted()


class HotLoading:
    """The hot-load half of :class:`~.webui.WebUIHost`."""

    def _init_live(self) -> None:
        self._live = LiveState()
        self._shown: Optional[Any] = None          # the synthetic CheckpointInfo of the loaded merge
        self._replaced_callbacks: List[Callable[[], None]] = []
        self._grid: Any = None                     # the X/Y/Z plot over Mecha axes in progress (.grid)
        self._last_grid: Any = None                # the latest one, for the status route

    # --- what is loaded ---------------------------------------------------------------------
    def hot_loaded(self) -> Optional[MergeIdentity]:
        """The merge the running model holds (None when it holds a checkpoint file's weights)."""
        model = self._live_model()
        if model is None or self._live.ident is None or not self._live.describes(model):
            return None
        return self._live.ident

    def loaded_merge(self) -> Optional[LoadedMerge]:
        """The loaded merge's identity, recipe and merge options (None when none is loaded)."""
        ident = self.hot_loaded()
        if ident is None or self._live.recipe is None:
            return None
        return LoadedMerge(ident, self._live.recipe, self._live.options)

    def grid_report(self) -> Optional[dict]:
        """What the latest X/Y/Z plot over Mecha axes merged per cell and put back after."""
        return self._last_grid.report() if self._last_grid is not None else None

    def live_report(self) -> Optional[LiveReport]:
        """What the hot-load that produced the loaded merge did (keys re-merged, time, memory)."""
        return self._live.report if self.hot_loaded() is not None else None

    def pending_selection(self) -> Optional[str]:
        """The checkpoint the host has selected but not loaded yet: its next generation loads it
        and drops whatever the running model holds."""
        return self._pending_label(self._live_model())

    def pin_seeds(self, recipe):
        """``recipe`` with concrete seeds where a method's null seed would draw fresh ones (the
        same seeds every time for the same step), so a hot-loaded merge can be reproduced."""
        return pin_seeds(recipe, self._live.seeds)

    # --- hot-load ---------------------------------------------------------------------------
    def hot_load(self, recipe, ident: MergeIdentity, options, *, progress=None, planned=None, cancel=None,
                 wait: float = 0.0) -> LiveReport:
        """Stream ``recipe``'s merge into the running model as ``ident`` (see the module docstring).

        Raises :class:`~lib_mecha.errors.Busy` while a generation runs (after ``wait`` seconds),
        :class:`HostError` when the merge does not fit the model (nothing changed), and the
        merge's error when it stops part-way (the model is put back as it was, and the message
        says so).
        """
        self.recipes.remember(ident)
        return self.run_exclusive(self._by_user, self._hot_load_locked, recipe, ident, options, progress, planned,
                                  cancel, job="hot-load", wait=wait)

    def hot_load_within(self, recipe, ident: MergeIdentity, options) -> LiveReport:
        """:meth:`hot_load` for code running inside the host's generation, which holds the host's
        lock and runs on its model thread already (X/Y/Z plot cells). The host's Interrupt stops it."""
        self.recipes.remember(ident)
        return self._hot_load_locked(recipe, ident, options, None, None, None)

    def check_hot_load(self, recipe, options, what: str) -> None:
        """Raise the error a hot-load of ``recipe`` would raise before writing anything (a missing
        input, a method that does not fit, another architecture than the loaded model's); writes
        nothing. Inside the host's generation only, like :meth:`hot_load_within`. Without a loaded
        model (or with another checkpoint selected) only the recipe itself is checked."""
        from ..engine.plan import make_plan
        model = self._live_model()
        with make_plan(recipe, options) as plan:
            if model is None or self._pending_label(model) is not None:
                return
            if not self._live.describes(model):
                self._live.attach(model, self._original_of(model))
            LiveTarget(self._model_view(model)).routes({k.key: (k.shape, k.dtype) for k in plan.keys}, what)

    def _by_user(self, locked: Callable[..., Any], *args) -> Any:
        """A hot-load or restore the user asked for replaces whatever an unfinished X/Y/Z plot
        would put back (its request never ended: nothing else will finish it)."""
        grid, self._grid = self._grid, None
        if grid is not None:
            grid.drop("a merge was loaded or restored since")
        return locked(*args)

    def _hot_load_locked(self, recipe, ident, options, progress, planned, cancel) -> LiveReport:
        # no reference to the old model may live across the host's load: it could not free it
        loaded_first = self._pending_label(self._live_model())
        model = self._load_selection(loaded_first) if loaded_first is not None else self._live_model()
        if not self._live.describes(model):
            self._live.attach(model, self._original_of(model))
        target = LiveTarget(self._model_view(model))
        try:
            report = stream_merge(target, self._live, recipe, options, ident, progress=progress,
                                  planned=planned, cancel=StopFlag(cancel, self.interrupted))
        except NotRestored as exc:
            target = model = None
            traceback.clear_frames(exc.__traceback__)   # the frames hold the replaced model
            label = self._fall_back(exc)
            raise HostError(f"{exc.message}; the WebUI reloaded {label}", "run Merge & load again") from None
        except BaseException:
            self._show(model)
            raise
        self._show(model)
        report.loaded_first = loaded_first
        self._live.report = report
        return report

    def _show(self, model) -> None:
        """Name what the model holds where the host's infotexts read it."""
        ident, original = self._live.ident, self._live.original
        if ident is not None:
            if self._shown is None or self._shown.mecha_unsaved != ident:
                self._shown = ci.make_checkpoint_info(self._sd_models(), ident, self.checkpoint_dirs()[0])
            model.sd_checkpoint_info = self._shown
            model.sd_model_hash = ident.h10
        elif original is not None and original.host_info is not None:
            model.sd_checkpoint_info, model.sd_model_hash = original.host_info

    def _fall_back(self, exc: BaseException) -> str:
        """The host reloads the original checkpoint its own way; returns its name."""
        original = self._live.original
        label = original.label if original is not None else "the selected checkpoint"
        try:
            self._reload_original(original)
        finally:
            self._live.forget()
        return label

    # --- restore ----------------------------------------------------------------------------
    def restore(self, wait: float = 0.0) -> Optional[LiveReport]:
        """Bring back the checkpoint loaded before the first hot-load (None when no merge is loaded)."""
        if self.hot_loaded() is None and not self._live.fingerprints:
            return None
        return self.run_exclusive(self._by_user, self.restore_within, job="restore", wait=wait)

    def restore_within(self) -> Optional[LiveReport]:
        """:meth:`restore` for code running inside the host's generation (see :meth:`hot_load_within`)."""
        if self.hot_loaded() is None and not self._live.fingerprints:
            return None
        return self._restore_locked()

    def _restore_locked(self) -> LiveReport:
        started = time.perf_counter()
        report = LiveReport()
        model = self._live_model()
        if model is None or not self._live.describes(model):
            self._live.forget()
            return report
        with PeakMemory() as peak:
            try:
                keys = self._live.merged_keys()
                report.keys_restored = restore_keys(LiveTarget(self._model_view(model)), self._live, keys)
                self._live.ident = None
                self._show(model)
                self._live.forget()
            except NotRestored as exc:
                report.warnings.append(f"{exc.message}; the WebUI reloaded {self._fall_back(exc)}")
        report.seconds = time.perf_counter() - started
        report.peak_extra_mb = peak.extra_mb
        return report

    # --- events -----------------------------------------------------------------------------
    def notice_model_loaded(self, sd_model) -> None:
        """``on_model_loaded`` hook: the host loaded a checkpoint file's weights; whatever we
        recorded about the model no longer holds."""
        had_merge = self._live.ident is not None
        self._live.forget()
        if had_merge:
            for cb in list(self._replaced_callbacks):
                with contextlib.suppress(Exception):
                    cb()

    def on_model_replaced(self, callback: Callable[[], None]) -> None:
        if callback not in self._replaced_callbacks:
            self._replaced_callbacks.append(callback)

    def close(self) -> None:
        """Unload hook: bring the user's model back and drop all state (Reload UI)."""
        with contextlib.suppress(Exception):
            self.restore(wait=60.0)
        self._live.forget()
        self._replaced_callbacks.clear()

    # --- what subclasses provide ------------------------------------------------------------
    def _sd_models(self):  # pragma: no cover - provided by WebUIHost
        raise NotImplementedError

    def _pending_label(self, model) -> Optional[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_selection(self, label: str):  # pragma: no cover - abstract
        raise NotImplementedError

    def _model_view(self, model):  # pragma: no cover - abstract
        raise NotImplementedError

    def _original_of(self, model) -> Original:  # pragma: no cover - abstract
        raise NotImplementedError

    def _reload_original(self, original: Optional[Original]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
