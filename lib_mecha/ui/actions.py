"""What the action buttons do: merge and hot-load, save, restore, preview, compare; and the status line.

Merges and saves run as jobs of the shared :data:`~lib_mecha.jobs.RUNNER` (one at a time);
hot-load, restore and preview go through the host, which takes its own lock.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..engine.outputs import refuse_input_as_output
from ..errors import HostError, MechaError
from ..methods import build
from ..recipe import RecipeNode, model
from .catalog import Catalog
from ..jobs import RUNNER, Job, JobRunner

DTYPES = ("fp16", "bf16", "fp32", "keep")
HOST_WAIT = 300.0   # seconds a hot-load/restore/preview waits for a running generation
KEEP_VAE = "(merged VAE)"


def can_hot_load(host) -> bool:
    return getattr(host, "name", "") != "standalone"


def _call(fn, *args, wait: float = HOST_WAIT, **kwargs):
    """Call a host method, passing ``wait`` when the implementation takes it."""
    try:
        takes_wait = "wait" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_wait = False
    return fn(*args, **kwargs, wait=wait) if takes_wait else fn(*args, **kwargs)


def merge_options(host, catalog: Catalog, for_hot_load: bool, **changes):
    """MergeOptions from the host's settings, searching every model folder of the catalogue."""
    from ..engine.options import MergeOptions
    from ..host.settings import merge_option_values
    values: Dict[str, Any] = merge_option_values(host, for_hot_load=for_hot_load)
    values["model_dirs"] = tuple(catalog.model_dirs())
    values.update(changes)
    return MergeOptions(**values)


# --- merge & hot-load ----------------------------------------------------------------------------

def start_merge(host, catalog: Catalog, node: RecipeNode, text: str, runner: JobRunner = RUNNER,
                save_dtype: Optional[str] = None) -> Job:
    """Stream the merge into the WebUI's model (a job), rounded to ``save_dtype`` (the Save
    panel's dtype; default: the "Default output dtype" setting) so the preview shows what Save
    writes. Only keys whose fingerprint changed since the loaded merge are recomputed.

    Raises Busy when a job or a generation runs (nothing is started)."""
    from ..host.base import MergeIdentity
    from ..host.jobs import pinned
    if not can_hot_load(host):
        raise HostError("hot-loading needs a WebUI", "save the merge to a file instead")
    if save_dtype is not None and save_dtype not in DTYPES:
        raise MechaError(f"unknown dtype {save_dtype!r}", f"choose one of {', '.join(DTYPES)}")
    check_models(node, catalog)
    changes = {"output_dtype": save_dtype} if save_dtype else {}
    options = merge_options(host, catalog, for_hot_load=True, **changes)
    node, text = pinned(host, node, text)
    ident = MergeIdentity.from_recipe(text)
    if runner.busy() is None:  # (a running job is named by runner.start)
        host.run_exclusive(lambda: None, job="Merge & load")  # Busy at once while a generation runs

    def run(job: Job):
        job.phase = "merging into the loaded model"
        report = _call(host.hot_load, node, ident, options, progress=job.progress, planned=job.planned,
                       cancel=job.cancel)
        return {"ident": ident, "report": report}
    return runner.start("merge", "merge & load", run)


def report_phrase(report) -> str:
    """``re-merged 26 of 1131 keys in 1.9 s`` (with the peak memory when known)."""
    if report.keys_merged == 0:
        text = f"nothing to re-merge: all {report.keys_total} keys were unchanged ({report.seconds:.1f} s)"
    elif report.keys_merged == report.keys_total:
        text = f"merged {report.keys_total} keys in {report.seconds:.1f} s"
    else:
        text = f"re-merged {report.keys_merged} of {report.keys_total} keys in {report.seconds:.1f} s"
    if report.peak_extra_mb is not None:
        text += f", peak memory +{report.peak_extra_mb:.0f} MB"
    return text


def merge_done_message(job: Job) -> str:
    if job.error is not None:
        return job.message()
    ident, report = job.result["ident"], job.result["report"]
    text = f"loaded {ident.display_name}: {report_phrase(report)}"
    if report.loaded_first:
        text += f" (the WebUI had {report.loaded_first} selected: it was loaded first and merged into)"
    return _with_warnings(text, {"warnings": report.warnings})


# --- save --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SaveRequest:
    name: str
    dtype: str = "fp16"
    prune_ema: bool = False
    vae: str = KEEP_VAE
    overwrite: bool = False


def save_target(host, name: str, overwrite: bool) -> Path:
    """The output path for a save name inside the host's save folder (raises OutputExists)."""
    from ..host.paths import output_path
    folder = host.default_save_dir()
    roots = [*host.checkpoint_dirs(), folder]
    return output_path(name, folder, roots, overwrite=overwrite)


def overwrite_question(path: str) -> str:
    """What the overwrite prompt asks: which file, how large and how old, and that it goes."""
    from datetime import datetime
    p = Path(path)
    try:
        st = p.stat()
        about = f" ({format_size(st.st_size)}, last changed {datetime.fromtimestamp(st.st_mtime):%Y-%m-%d %H:%M})"
    except OSError:
        about = ""
    return (f"{p.name} already exists in {p.parent}{about}. Overwrite replaces that file with this merge "
            "once the merge is complete; the old file cannot be recovered.")


def format_size(n: float) -> str:
    """``812 bytes``, ``1.5 MiB``, ``2.0 GiB``."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def save_recipe(node: RecipeNode, request: SaveRequest, catalog: Catalog, architecture: Optional[str]) -> RecipeNode:
    """The recipe actually saved: the draft's, with the EMA dropped and/or a VAE baked in."""
    if request.prune_ema:
        if architecture is None:
            raise MechaError("EMA pruning needs a recognised architecture", "untick 'prune EMA' for this merge")
        from ..arch import resolve_architecture
        if "ema" in resolve_architecture(architecture).components:
            node = build("omit_component", node, "ema")
    if request.vae and request.vae != KEEP_VAE:
        entry = catalog.checkpoint(request.vae) or catalog.vae(request.vae)
        name = entry.name if entry else request.vae
        # a VAE file (bare encoder./decoder. names) or a checkpoint's first_stage_model.
        node = build("replace_vae", node, model(name))
    return node


def start_save(host, catalog: Catalog, node: RecipeNode, request: SaveRequest, architecture: Optional[str],
               runner: JobRunner = RUNNER) -> Job:
    """Write the merge to a file (a job). Raises, before anything runs: OutputIsInput when the
    file is one of the recipe's inputs, OutputExists when it exists and ``overwrite`` is false;
    Busy when a job runs."""
    if request.dtype not in DTYPES:
        raise MechaError(f"unknown dtype {request.dtype!r}", f"choose one of {', '.join(DTYPES)}")
    recipe = save_recipe(host.pin_seeds(node), request, catalog, architecture)
    check_models(recipe, catalog)
    options = merge_options(host, catalog, for_hot_load=False, output_dtype=request.dtype,
                            overwrite=request.overwrite)
    # before the question whether to replace a file: an input is never replaced
    refuse_input_as_output(recipe, save_target(host, request.name, True), options.model_dirs)
    target = save_target(host, request.name, request.overwrite)

    def run(job: Job):
        from .. import merge
        os.makedirs(target.parent, exist_ok=True)
        result = merge(recipe, str(target), options=options, progress=job.progress, planned=job.planned,
                       cancel=job.cancel)
        job.phase = "refreshing the model list"
        try:
            host.run_exclusive(host.refresh_checkpoints, job="refresh", wait=HOST_WAIT)
        except MechaError:
            pass  # the file is written; the list refreshes on the next visit
        catalog.refresh()
        return {"path": str(result.path), "keys": len(result.keys), "skipped": result.skipped_summary(),
                "warnings": list(getattr(result, "warnings", ()) or ())}
    return runner.start("save", f"save {target.name}", run)


def save_done_message(job: Job) -> str:
    if job.error is not None:
        return job.message()
    r = job.result
    return _with_warnings(f"saved {r['path']} ({r['keys']} keys, {job.elapsed:.1f} s)", r)


def _with_warnings(text: str, r: Dict[str, Any]) -> str:
    notes = ([r["skipped"]] if r.get("skipped") else []) + list(r.get("warnings") or [])
    return text + "".join(f"; warning: {n}" for n in notes)


# --- checks --------------------------------------------------------------------------------------

def check_models(node: RecipeNode, catalog: Catalog) -> None:
    """Name every model of the recipe that cannot be found, before a job starts."""
    from ..engine.sources import resolve_model_path
    from ..recipe import models_of
    missing = []
    for m in models_of(node):
        try:
            resolve_model_path(m.path, catalog.model_dirs())
        except MechaError:
            missing.append(m.path)
    if missing:
        details = catalog.missing_models(missing)
        raise MechaError("; ".join(details) if details else f"model not found: {', '.join(missing)}",
                         "pick the model again from the list")


# --- restore, preview, status ----------------------------------------------------------------

def restore(host) -> str:
    if not can_hot_load(host):
        return "nothing to restore: the standalone tab never loads models"
    if host.hot_loaded() is None:
        return "the original checkpoint is loaded; nothing to restore"
    report = _call(host.restore)
    text = "restored the original checkpoint"
    if report is not None:
        text += f" ({report.keys_restored} keys written back in {report.seconds:.1f} s)"
        text += "".join(f"; warning: {w}" for w in report.warnings)
    return text


def preview(host, params) -> List[Tuple[Any, str]]:
    if not can_hot_load(host):
        raise HostError("previews need a WebUI", "run the extension inside A1111 or Forge")
    if host.hot_loaded() is None:
        raise HostError("no merge is loaded", "press 'Merge & load' first; the preview would show the original")
    return _call(host.generate, params)


def compare(host, params, show_difference: bool = False) -> Tuple[List[Tuple[Any, str]], str]:
    """The preview from the original checkpoint beside the one from the loaded merge (same seed
    and settings), optionally with their pixel difference; the merge stays loaded. Returns the
    gallery's (image, caption) pairs and a line saying what the swap cost."""
    if not can_hot_load(host):
        raise HostError("previews need a WebUI", "run the extension inside A1111 or Forge")
    if host.hot_loaded() is None:
        raise HostError("no merge is loaded", "press 'Merge & load' first: Compare shows the original beside it")
    result = _call(host.compare, params)
    shown: List[Tuple[Any, str]] = []
    for (original, _), (merged, _) in zip(result.original, result.merged):
        shown += [(original, "original checkpoint"), (merged, "merge")]
        if show_difference:
            shown.append(difference_image(original, merged))
    return shown, f"seed {result.seed}; {result.timing()}"


def difference_image(a, b) -> Tuple[Any, str]:
    """|a − b| per pixel, stretched so the largest difference is white; and a caption."""
    from PIL import ImageChops
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    largest = max(high for _, high in diff.getextrema())
    if largest == 0:
        return diff, "difference: none (identical pixels)"
    return diff.point(lambda v: v * 255 // largest), f"difference ×{255 / largest:.1f} (largest {largest} of 255)"


def samplers(host) -> List[str]:
    """The host's sampler names for the preview (none when it has no list)."""
    try:
        return list(host.samplers())
    except MechaError:
        return []


def status_text(host, catalog: Catalog) -> str:
    """One line saying what the WebUI would generate with now (never a merge it would drop)."""
    if not can_hot_load(host):
        folder = host.default_save_dir()
        return f"Standalone: merges are saved to {folder}; hot-loading and previews need the WebUI."
    ident = host.hot_loaded()
    pending = host.pending_selection()
    if ident is not None:
        first = _recipe_summary(ident.recipe_text)
        text = f"Loaded: merge {ident.display_name} (recipe {ident.short_id}){' — ' + first if first else ''}"
        report = host.live_report()
        if report is not None:
            text += f"; {report_phrase(report)}"
        if pending is not None:
            text += (f". The WebUI has {pending} selected: its next generation loads it and drops the merge "
                     "(Merge & load merges into it)")
        return text
    current = host.current_model()
    if current is None:
        return "Loaded: no model yet" + (f"; the WebUI loads {pending} at the next generation" if pending else "")
    text = f"Loaded: original checkpoint {current.label}"
    if pending is not None:
        text += f"; the WebUI has {pending} selected and loads it at the next generation"
    return text


def _recipe_summary(text: str) -> str:
    """``weighted_sum(a, b)`` for the last merge line of a .mecha text."""
    try:
        from ..recipe_text import deserialize
        node = deserialize(text)
    except MechaError:
        return ""
    return _short_repr(node, 2)


def _short_repr(node, depth: int) -> str:
    from ..recipe import LiteralNode, MergeNode, ModelNode
    if isinstance(node, ModelNode):
        return os.path.splitext(os.path.basename(node.path))[0]
    if isinstance(node, LiteralNode):
        return "…" if node.is_dict else repr(node.value)
    if isinstance(node, MergeNode):
        if depth <= 0:
            return f"{node.method}(…)"
        return f"{node.method}({', '.join(_short_repr(a, depth - 1) for a in node.args)})"
    return "?"
