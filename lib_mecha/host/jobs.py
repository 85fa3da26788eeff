"""Merge jobs run for the REST routes (and usable by the UI): one at a time, with status.

A job reads a .mecha text, checks that every model it names lies inside the host's model folders,
then either streams the merge into the running model (under the host's lock, recomputing only
the keys that changed since the merge it holds) or saves it into the checkpoint folder and
refreshes the host's lists. Null seeds of fresh-seed methods get the host's remembered concrete
seeds first, so a hot-load and a save of one recipe hold the same weights. The result reports
``keys_total``, ``keys_merged``, ``seconds`` and ``peak_extra_mb``.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional

from ..engine.outputs import refuse_input_as_output
from ..errors import MechaError, ModelNotFound, PathEscape, RecipeError
from ..jobs import RUNNER, Job, JobRunner
from ..live import PeakMemory
from .base import MergeIdentity
from .paths import output_path, require_model_file
from .settings import merge_option_values

HOT_LOAD, FILE = "hot-load", "file"
REPORTED = ("keys_total", "keys_merged", "seconds", "peak_extra_mb")


def check_recipe_paths(node, host) -> None:
    """Every model of the recipe must be a file inside the host's model folders, as the host
    lists them (a symbolic link in a model folder is inside, wherever it leads).

    Raises :class:`PathEscape` for a path outside them and :class:`ModelNotFound` when a relative
    name matches no file in the checkpoint/LoRA folders.
    """
    from ..recipe import models_of
    roots = host.model_roots()
    search = [*host.checkpoint_dirs(), *host.lora_dirs()]
    for node_ in models_of(node):
        path = str(node_.path)
        if os.path.isabs(path):
            require_model_file(path, roots)
            continue
        if ".." in path.replace("\\", "/").split("/"):
            raise PathEscape(f"model {path!r} climbs out of the model folders", "remove '..' from the name")
        names = [path] if path.lower().endswith((".safetensors", ".ckpt", ".pt")) else [path + ".safetensors", path]
        found = [os.path.join(str(d), n) for d in search for n in names if os.path.isfile(os.path.join(str(d), n))]
        if not found:
            raise ModelNotFound(path, [str(d) for d in search])
        require_model_file(found[0], roots)


class MergeJobs:
    """The REST routes' merges, run as jobs of the process-wide :data:`~lib_mecha.jobs.RUNNER`, so a
    REST merge and a merge from the tab can never run at once. ``status()`` is safe from any thread."""

    def __init__(self, host, runner: JobRunner = RUNNER):
        self.host = host
        self.runner = runner

    def status(self) -> Dict[str, Any]:
        job = self.runner.current
        out: Dict[str, Any] = {"state": "idle"} if job is None else _job_status(job)
        out["hot_loaded"] = _ident_dict(self.host.hot_loaded())
        return out

    def cancel(self) -> bool:
        """Ask the running merge to stop; True if one was running."""
        return self.runner.cancel()

    def start(self, recipe_text: str, target: str = HOT_LOAD, name: Optional[str] = None,
              folder: Optional[str] = None, overwrite: bool = False, wait: bool = True) -> Dict[str, Any]:
        """Validate, then merge in the runner's thread (waiting for it when ``wait``).

        Raises the MechaError of a bad request before anything runs, and :class:`Busy` while
        another job or a generation runs; errors during the merge end up in the status (and are
        raised too when ``wait``).
        """
        import lib_mecha
        node = lib_mecha.deserialize(recipe_text)
        check_recipe_paths(node, self.host)
        output = None
        if target == FILE:
            base = self.host.default_save_dir()
            folder_path = Path(os.path.abspath(base / folder)) if folder else base
            output = output_path(name or "", folder_path, self.host.checkpoint_dirs(), overwrite=True)
            # before "already exists": an input is never overwritten, even when asked
            refuse_input_as_output(node, output, merge_option_values(self.host)["model_dirs"])
            output = output_path(name or "", folder_path, self.host.checkpoint_dirs(), overwrite=overwrite)
        elif target != HOT_LOAD:
            raise MechaError(f"unknown merge target {target!r}", f"use {HOT_LOAD!r} or {FILE!r}")
        node, recipe_text = pinned(self.host, node, recipe_text)
        display = Path(output).stem if output else (Path(name).stem if name else None)
        ident = MergeIdentity.from_recipe(recipe_text, display)
        if self.runner.busy() is None:  # (a running job is named by runner.start)
            self.host.run_exclusive(lambda: None, job="the merge")  # Busy while a generation runs
        job = self.runner.start("merge", ident.display_name,
                                lambda j: self._run(j, node, ident, target, output, overwrite))
        job.info.update(job=uuid.uuid4().hex[:12], target=target, recipe_id=ident.short_id, started=time.time())
        if wait:
            job.finished.wait()
            if job.error is not None:
                raise job.error
        return self.status()

    def start_extract(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """Extract a LoRA holding tuned − base into the host's LoRA folder (waiting for it when
        ``body["wait"]``, as :meth:`start` does).

        ``body``: the tuned side as ``tuned`` (a model name) or ``recipe`` (.mecha text); ``base`` (a
        model name); ``name`` (the LoRA, inside the LoRA folder); optional ``rank``, ``energy``,
        ``conv_rank``, ``components``, ``dtype``, ``overwrite``.

        Raises before anything runs: a model or output outside the model folders (PathEscape), a
        missing model, an existing output without ``overwrite``, a bad value, Busy.
        """
        import lib_mecha
        from .extract import ExtractRequest, extract_to_host, lora_target
        tuned, base = _extract_inputs(body)
        for node in (tuned, base):
            check_recipe_paths(node, self.host)
        request = ExtractRequest(name=_field(body, "name", str, ""), rank=_field(body, "rank", int, None),
                                 energy=_field(body, "energy", float, None),
                                 conv_rank=_field(body, "conv_rank", int, None),
                                 components=_components(body.get("components")),
                                 dtype=_field(body, "dtype", str, "fp16"),
                                 overwrite=bool(body.get("overwrite", False)))
        if request.rank is None and request.energy is None:
            request = replace(request, rank=32)
        request.check()
        target = lora_target(self.host, request.name, request.overwrite)
        options = lib_mecha.MergeOptions(**merge_option_values(self.host))
        self.host.run_exclusive(lambda: None, job="the extraction")  # Busy while a generation runs
        job = self.runner.start("extract", f"extract {target.name}",
                                lambda j: extract_to_host(self.host, tuned, base, target, request, options, j))
        job.info.update(job=uuid.uuid4().hex[:12], target="lora", started=time.time())
        if body.get("wait", True):
            job.finished.wait()
            if job.error is not None:
                raise job.error
        return self.status()

    def _run(self, job: Job, node, ident, target, output, overwrite) -> Dict[str, Any]:
        import lib_mecha
        values = merge_option_values(self.host, for_hot_load=(target == HOT_LOAD))
        values["overwrite"] = bool(overwrite)
        options = lib_mecha.MergeOptions(**values)
        self.host.recipes.remember(ident)
        if target == HOT_LOAD:
            job.phase = "merging into the loaded model"
            report = self.host.hot_load(node, ident, options, progress=job.progress, planned=job.planned,
                                        cancel=job.cancel, wait=600.0)
            info: Dict[str, Any] = {"hot_loaded": _ident_dict(ident), **report.as_dict()}
        else:
            Path(output).parent.mkdir(parents=True, exist_ok=True)  # validated inside the save folder
            with PeakMemory() as peak:
                result = lib_mecha.merge(node, str(output), options=options, progress=job.progress,
                                         planned=job.planned, cancel=job.cancel)
            self.host.run_exclusive(self.host.refresh_checkpoints, job="refresh", wait=600.0)
            info = {"path": str(result.path or output), "keys_total": len(result.keys), "keys_merged": len(result.keys),
                    "seconds": round(result.seconds, 3), "peak_extra_mb": peak.extra_mb}
            info["skipped"] = len(result.skipped)
        return info


def pinned(host, node, recipe_text: str):
    """The recipe with the host's concrete seeds for null fresh seeds, and its text."""
    seeded = host.pin_seeds(node)
    if seeded is node:
        return node, recipe_text
    import lib_mecha
    return seeded, lib_mecha.serialize(seeded)


def _extract_inputs(body: Dict[str, Any]):
    import lib_mecha
    recipe, tuned, base = body.get("recipe"), body.get("tuned"), body.get("base")
    if (recipe is None) == (tuned is None):
        raise RecipeError("the body needs the tuned model as 'tuned' (a model name) or 'recipe' (.mecha text)")
    if not isinstance(base, str) or not base.strip():
        raise RecipeError("the body needs 'base': the name of the model the LoRA is the difference from")
    if recipe is not None:
        if not isinstance(recipe, str) or not recipe.strip():
            raise RecipeError("'recipe' must be the text of a .mecha file")
        return lib_mecha.deserialize(recipe), lib_mecha.model(base)
    if not isinstance(tuned, str) or not tuned.strip():
        raise RecipeError("'tuned' must be a model name")
    return lib_mecha.model(tuned), lib_mecha.model(base)


def _field(body: Dict[str, Any], key: str, kind, default):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (kind, int) if kind is float else kind):
        what = {int: "whole number", float: "number", str: "string"}[kind]
        raise MechaError(f"'{key}' must be a {what}, not {value!r}")
    return kind(value)


def _components(value):
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise MechaError(f"'components' must be a list of component names, not {value!r}")
    return tuple(value)


def _job_status(job: Job) -> Dict[str, Any]:
    if not job.finished.is_set():
        state = "running"
    elif job.error is None:
        state = "done"
    else:
        state = "cancelled" if job.cancelled else "error"
    out: Dict[str, Any] = {"state": state, "kind": job.kind, "done": job.done, "total": job.total,
                           "bytes": job.bytes, "message": job.message() if job.error is not None else job.phase
                           if state == "running" else "", "seconds": round(job.elapsed, 3)}
    out.update(job.info)
    if state == "done" and isinstance(job.result, dict):
        out["result"] = job.result
        out.update({k: job.result[k] for k in REPORTED if k in job.result})
    return out


def _ident_dict(ident: Optional[MergeIdentity]) -> Optional[Dict[str, str]]:
    if ident is None:
        return None
    return {"name": ident.display_name, "recipe_id": ident.short_id, "hash": ident.h10}
