"""Streaming a merge into the running model, and the original back out of its file.

:func:`stream_merge` plans the recipe, checks every key against the live model before writing
anything, recomputes only the keys whose fingerprint differs from what the model holds, and
writes them through a :class:`~.sink.LiveSink`. If anything fails or the job is cancelled
part-way, :func:`_put_back` returns every touched key to what it held before: the original
checkpoint's keys are read back from its file, and the previous merge's keys are recomputed from
its recipe (when its inputs are unchanged; otherwise the whole model goes back to the original).
The model is never left half-merged; when even that fails, :class:`NotRestored` tells the host
adapter to reload the checkpoint its own way.

:func:`restore_keys` writes keys of the original file back through the engine, within its budget.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Collection, Dict, List, Optional

from ..engine.execute import execute
from ..engine.options import KEEP, MergeOptions
from ..engine.placement import placement_for
from ..engine.plan import KeyPlan, Plan, make_plan
from ..errors import HostError, MechaError, MergeCancelled
from ..recipe import model as model_node
from .memory import PeakMemory
from .sink import LiveSink
from .state import LiveState
from .target import LiveTarget

log = logging.getLogger("lib_mecha.live")
ProgressFn = Callable[[int, int, int], None]


class NotRestored(HostError):
    """The model could not be put back key by key: the host must reload the checkpoint itself."""


@dataclass
class LiveReport:
    """What a hot-load (or a restore) did."""

    ident: Any = None
    keys_total: int = 0          # keys of the merge the model holds
    keys_merged: int = 0         # keys recomputed and written this time
    keys_restored: int = 0       # keys read back from the original file
    seconds: float = 0.0
    peak_extra_mb: Optional[float] = None
    loaded_first: Optional[str] = None   # a checkpoint the host had selected and was loaded first
    warnings: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        return {"keys_total": self.keys_total, "keys_merged": self.keys_merged,
                "keys_restored": self.keys_restored, "seconds": round(self.seconds, 3),
                "peak_extra_mb": self.peak_extra_mb, "loaded_first": self.loaded_first,
                "warnings": list(self.warnings)}


def stream_merge(target: LiveTarget, state: LiveState, recipe, options, ident, *,
                 progress: Optional[ProgressFn] = None, planned=None, cancel=None) -> LiveReport:
    """Write ``recipe``'s merge into the model behind ``target``; ``state`` describes what the
    model holds before and is updated to what it holds after. ``progress`` and ``planned`` are
    called as by :func:`lib_mecha.merge`, for the keys that are merged again.

    Raises:
        HostError: the merge does not fit the model (nothing written).
        MergeCancelled, MechaError: the merge stopped part-way; the model holds what it held
            before (the message says so).
        NotRestored: the model could not be put back; the caller reloads it.
    """
    started = time.perf_counter()
    report = LiveReport(ident=ident)
    with PeakMemory() as peak, make_plan(recipe, options) as plan:
        what = ident.display_name
        table = target.routes({k.key: (k.shape, k.dtype) for k in plan.keys}, what)
        keys = [k for k in plan.keys if k.key in table.routes]
        changed = [k for k in keys if state.fingerprints.get(k.key) != k.fingerprint]
        stale = [k for k in state.fingerprints if k not in table.routes]   # merged before, not by this recipe
        report.warnings = _warnings(plan, table.unmapped)
        if changed:
            if planned is not None:
                planned(len(changed), sum(k.nbytes for k in changed))
            if progress is not None:
                progress(0, len(changed), 0)
            report.warnings += _write_keys(target, state, plan, changed, table.routes, progress, cancel)
        if stale:
            report.keys_restored = _restore_stale(target, state, stale)
        state.fingerprints = {k.key: k.fingerprint for k in keys}
        state.ident, state.recipe, state.options = ident, recipe, options
        report.keys_total, report.keys_merged = len(keys), len(changed)
    report.seconds = time.perf_counter() - started
    report.peak_extra_mb = peak.extra_mb
    return report


def _write_keys(target: LiveTarget, state: LiveState, plan: Plan, keys: List[KeyPlan], routes, progress,
                cancel) -> List[str]:
    """Merges ``keys`` into the model; returns the notes of keys merged on the CPU instead of the GPU."""
    sink = LiveSink(target, routes, keys)
    target.begin([n for k in keys for n in routes[k.key].names])
    try:
        try:
            return _execute(plan, keys, sink, progress, cancel)
        except BaseException as exc:
            outcome = _put_back(target, state, sink.touched)
            if isinstance(exc, MergeCancelled):
                raise MergeCancelled(f"merge cancelled; {outcome}") from exc
            if isinstance(exc, MechaError):
                exc.message = f"{exc.message}; {outcome}"
                exc.args = (exc.message,)
                raise
            raise MechaError(f"the hot-load failed ({type(exc).__name__}: {exc}); {outcome}") from exc
    finally:
        target.end()


def _restore_stale(target: LiveTarget, state: LiveState, keys: List[str]) -> int:
    """Keys the loaded merge wrote and this one does not produce go back to the original's."""
    try:
        return restore_keys(target, state, keys)
    except NotRestored:
        raise
    except BaseException as exc:
        raise NotRestored(f"keys of the previous merge could not be put back ({type(exc).__name__}: {exc})",
                          "the WebUI reloads the checkpoint") from exc


def _execute(plan: Plan, keys: List[KeyPlan], sink, progress, cancel) -> List[str]:
    """Merges ``keys`` into ``sink``; returns the placement's notes."""
    opts = plan.options
    placement = placement_for(opts)
    execute(replace(plan, keys=keys), sink, placement=placement, compute_dtype=opts.torch_compute_dtype,
            threads=int(opts.threads), budget_bytes=int(opts.memory_budget_mb) << 20, progress=progress,
            cancel=cancel, torch_threads=int(opts.torch_threads))
    return placement.notes()


# what a checkpoint may carry besides the weights a WebUI runs: nobody misses these
BOOKKEEPING = ("ema", "scheduler")


def _warnings(plan: Plan, unmapped: List[str]) -> List[str]:
    out = []
    if plan.skipped:
        out.append(plan.skipped_summary())
    out.extend(plan.warnings)
    arch, dtypes = plan.architecture, {k.key: k.dtype for k in plan.keys}
    unmapped = [k for k in unmapped if dtypes[k].is_floating_point
                and (arch is None or arch.component_of(k) not in BOOKKEEPING)]
    if unmapped:
        shown = ", ".join(unmapped[:3]) + (f" and {len(unmapped) - 3} more" if len(unmapped) > 3 else "")
        out.append(f"{len(unmapped)} keys of the merge have no place in the loaded model and were left out "
                   f"(as the WebUI's loader leaves them out): {shown}")
    return out


# --- putting keys back ---------------------------------------------------------------------------

def _put_back(target: LiveTarget, state: LiveState, touched: Collection[str]) -> str:
    """Return every touched key to what the model held before; says what happened.

    Raises NotRestored when the model could not be put back.
    """
    if not touched:
        return "nothing in the loaded model was changed"
    merged_before = [k for k in touched if k in state.fingerprints]
    original_before = [k for k in touched if k not in state.fingerprints]
    try:
        if original_before:
            restore_keys(target, state, original_before)
        if merged_before and _recompute(target, state, merged_before):
            return f"the {len(touched)} keys already written were put back: the previous merge is loaded as before"
        if merged_before:
            restore_keys(target, state, list(state.fingerprints))
            state.ident, state.fingerprints, state.recipe, state.options = None, {}, None, None
            return (f"the keys already written were put back from the original checkpoint "
                    f"{state.original.label}; the previous merge could not be recomputed and was unloaded")
    except NotRestored:
        raise
    except BaseException as exc:
        log.error("Mecha: putting the model back failed", exc_info=exc)
        raise NotRestored(f"the hot-load failed part-way and the model could not be put back key by key "
                          f"({type(exc).__name__}: {exc})", "the WebUI reloads the checkpoint") from exc
    return f"the {len(touched)} keys already written were put back from the original checkpoint " \
           f"{state.original.label}: the model is as before"


def _recompute(target: LiveTarget, state: LiveState, keys: List[str]) -> bool:
    """Write the loaded merge's values of ``keys`` again; False when its inputs changed."""
    if state.recipe is None or state.options is None:
        return False
    try:
        with make_plan(state.recipe, state.options) as plan:
            wanted = [k for k in plan.keys if k.key in set(keys)]
            if len(wanted) != len(keys) or any(state.fingerprints[k.key] != k.fingerprint for k in wanted):
                return False   # an input changed since: its values cannot be reproduced
            table = target.routes({k.key: (k.shape, k.dtype) for k in wanted}, "the previous merge", complete=False)
            _execute(plan, wanted, LiveSink(target, table.routes, wanted), None, None)
        return True
    except MechaError as exc:
        log.warning("Mecha: the previous merge could not be recomputed: %s", exc.format_message())
        return False


def restore_keys(target: LiveTarget, state: LiveState, keys: Collection[str]) -> int:
    """Write ``keys`` of the original checkpoint back into the model, through the engine (its
    threads and memory budget), as the file stores them: the live target casts them as the host's
    loader cast the file.

    Raises NotRestored when the original cannot be read key by key (a pickled checkpoint, a file
    changed or gone since it was loaded, a key it lacks).
    """
    original = state.original
    if original is None or not original.streamable:
        why = "it is not known" if original is None else (
            f"{original.path} changed on disk since it was loaded" if original.path.suffix.lower() == ".safetensors"
            else f"{original.path.name} is not a .safetensors file")
        raise NotRestored(f"the original checkpoint cannot be read back key by key: {why}",
                          "the WebUI reloads the checkpoint")
    wanted = set(keys)
    with make_plan(model_node(str(original.path)), _restore_options(state)) as plan:
        found = [k for k in plan.keys if k.key in wanted]
        if len(found) != len(wanted):
            missing = sorted(wanted - {k.key for k in found})[0]
            raise NotRestored(f"{original.label} has no key {missing!r} to put back",
                              "the WebUI reloads the checkpoint")
        table = target.routes({k.key: (k.shape, k.dtype) for k in found}, original.label, complete=False)
        routed = [k for k in found if k.key in table.routes]
        if routed:
            target.begin([n for k in routed for n in table.routes[k.key].names])
            try:
                _execute(plan, routed, LiveSink(target, table.routes, routed), None, None)
            finally:
                target.end()
        return len(routed)


def _restore_options(state: LiveState) -> MergeOptions:
    """The last merge's engine settings, keeping each key's stored dtype."""
    base = state.options if state.options is not None else MergeOptions(memory_budget_mb=256)
    return base.with_(output_dtype=KEEP, fallback_model=None, model_dirs=())
