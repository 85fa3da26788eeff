"""Extracting a LoRA from the tab: tuned − base (either a checkpoint; the tuned one also the current
recipe), saved into the host's LoRA folder (:mod:`lib_mecha.host.extract`). Runs as a job of the
shared runner, like a merge."""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Optional, Tuple

from ..errors import MechaError
from ..host.extract import ExtractRequest, extract_to_host, lora_target
from ..jobs import RUNNER, Job, JobRunner
from ..recipe import RecipeNode, model
from .actions import check_models, merge_options
from .catalog import Catalog

CURRENT_RECIPE = "(the current recipe)"
GROUPS = ("UNet / DiT", "text encoders")   # what the tab offers; mapped onto each architecture's components


def components_for(architecture: Optional[str], groups) -> Optional[Tuple[str, ...]]:
    """The architecture's component ids for the tab's groups (None: unknown architecture, the
    library decides and says why it cannot)."""
    if architecture is None:
        return None
    from ..arch import resolve_architecture
    from ..lora.extract import patchable_components
    patched = patchable_components(resolve_architecture(architecture))
    wanted = tuple(c for c in patched if (GROUPS[0] if c == "diffuser" else GROUPS[1]) in groups)
    if not wanted:
        raise MechaError("nothing to extract: tick the UNet / DiT, the text encoders, or both")
    return wanted


def start_extract(host, catalog: Catalog, tuned: RecipeNode, base_label: str, request: ExtractRequest,
                  groups=GROUPS, runner: JobRunner = RUNNER) -> Job:
    """Extract in the runner's thread. Raises, before anything runs: a bad name or folder, an existing
    file (without ``overwrite``), a missing model, a bad rank or energy, Busy while a job runs."""
    request.check()
    if not base_label:
        raise MechaError("pick the base model the LoRA is the difference from")
    target = lora_target(host, request.name, request.overwrite)
    base = model(catalog.checkpoint_name(base_label))
    check_models(tuned, catalog)
    check_models(base, catalog)
    components = components_for(catalog.architecture_of(base_label), groups)
    options = merge_options(host, catalog, for_hot_load=False)

    def run(job: Job):
        result = extract_to_host(host, tuned, base, target, replace(request, components=components), options, job)
        catalog.refresh()
        return result
    return runner.start("extract", f"extract {target.name}", run)


def extract_done_message(job: Job) -> str:
    if job.error is not None:
        return job.message()
    r = job.result
    stem = os.path.splitext(os.path.basename(r["path"]))[0]
    text = (f"saved LoRA {r['path']} ({r['modules']} modules, rank up to {r['max_rank']}, "
            f"{job.elapsed:.1f} s); use it as <lora:{stem}:1>")
    return text + "".join(f"; warning: {w}" for w in r["warnings"])
