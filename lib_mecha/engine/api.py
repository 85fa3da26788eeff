"""The engine's entry points: :func:`plan` and :func:`merge`."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from ..errors import MechaError, OutputError
from ..recipe import as_node
from .execute import ProgressFn, execute
from .hashes import sha256_of
from .options import MergeOptions
from .placement import placement_for
from .outputs import refuse_input_as_output
from .plan import Plan, Skipped, finalize_with, make_plan, summarize_skipped
from .sinks import DictSink, FileSink

log = logging.getLogger("lib_mecha")


@dataclass
class MergeResult:
    """What a merge produced.

    Attributes:
        path: the file written, or None for an in-memory merge.
        state_dict: the merged tensors when no output path was given.
        keys: the keys written, in output order.
        skipped: keys the recipe could not produce, each with the reason.
        recipe_text: the .mecha text embedded in the output.
        seconds: wall time of planning and merging.
        bytes: output tensor bytes.
        warnings: things worth knowing that did not stop the merge (e.g. LoRA keys that
            matched nothing, keys merged on the CPU instead of the GPU).
    """

    path: Optional[Path]
    state_dict: Optional[Dict[str, torch.Tensor]]
    keys: List[str]
    skipped: List[Skipped]
    recipe_text: str
    seconds: float
    bytes: int
    fingerprints: Dict[str, str] = field(default_factory=dict, repr=False)
    warnings: List[str] = field(default_factory=list)

    def skipped_summary(self, examples: int = 5) -> str:
        return summarize_skipped(self.skipped, examples)


def _options(options: Optional[MergeOptions], overrides) -> MergeOptions:
    options = options or MergeOptions()
    if "model_dirs" in overrides and overrides["model_dirs"] is not None:
        overrides["model_dirs"] = tuple(str(d) for d in overrides["model_dirs"])
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return options.with_(**overrides) if overrides else options


def plan(recipe, options: Optional[MergeOptions] = None, **overrides) -> Plan:
    """Open the recipe's inputs and plan every output key without merging. Close the plan
    (or use it as a context manager) when done."""
    return make_plan(as_node(recipe), _options(options, overrides))


def merge(recipe, output=None, *, options: Optional[MergeOptions] = None, progress: Optional[ProgressFn] = None,
          cancel=None, output_device: Optional[str] = None, hash_inputs: Optional[bool] = None,
          planned: Optional[Callable[[int, int], None]] = None, **overrides) -> MergeResult:
    """Merge a recipe into a .safetensors file or into an in-memory state dict.

    Args:
        recipe: a recipe node (or a value that becomes one).
        output: a ``.safetensors`` path, or None to get ``result.state_dict``.
        options: a :class:`MergeOptions`; keyword arguments override single fields
            (``device="cuda"``, ``threads=4``, ``model_dirs=[...]``, ``overwrite=True``...).
        progress: called as ``progress(keys_done, keys_total, bytes_done)`` after each key.
        planned: called once as ``planned(keys_total, bytes_total)`` when planning (and hashing
            the inputs) is done, right before the first key is merged: what an ETA needs.
        cancel: a ``threading.Event`` or a callable returning True to stop; checked between
            keys. A cancelled merge raises :class:`~lib_mecha.errors.MergeCancelled` and
            leaves no file.
        output_device: device of the in-memory state dict (default: cpu).
        hash_inputs: record each input's sha256 in the output metadata (default: True for
            files; hashes are cached by path, size and mtime).

    Returns:
        a :class:`MergeResult`.

    Raises:
        MechaError: every user-caused failure, with a message naming the culprit. Options, the
            device and the output path (never one of the recipe's inputs, even with
            ``overwrite``) are checked before any file is created, and a failure at any later
            point leaves no file behind.

    Thread safety: several merges may run at once; each opens its own file handles.
    """
    started = time.perf_counter()
    opts = _options(options, overrides)
    node = as_node(recipe)
    if output is not None:
        output = Path(output)
        if output.suffix != ".safetensors":
            raise OutputError(f"output must be a .safetensors file, got {output}")
    placement = placement_for(opts)  # the device and its VRAM budget, checked before any file is made
    if output is not None:
        refuse_input_as_output(node, output, opts.model_dirs, opts.fallback_model)
    with make_plan(node, opts) as p:
        if p.skipped:
            log.warning(p.skipped_summary())
        for message in p.warnings:
            log.warning(message)
        hashes = _input_hashes(p) if (hash_inputs if hash_inputs is not None else output is not None) else {}
        text = _recipe_text(p, hashes)
        if output is None:
            sink = DictSink(p.keys, output_device or "cpu")
        else:
            sink = FileSink(output, p.keys, _metadata(p, text, hashes), overwrite=opts.overwrite)
        try:
            if planned is not None:
                planned(len(p.keys), p.output_bytes)
            written = execute(p, sink, placement=placement, compute_dtype=opts.torch_compute_dtype,
                              threads=int(opts.threads), budget_bytes=int(opts.memory_budget_mb) << 20,
                              progress=progress, cancel=cancel, torch_threads=int(opts.torch_threads))
            produced = sink.commit()
        except BaseException:
            sink.abort()  # whatever failed, before or inside execute: no temp file stays
            raise
        for message in placement.notes():
            log.warning(message)
        return MergeResult(
            path=output, state_dict=produced if output is None else None,
            keys=[k.key for k in p.keys], skipped=list(p.skipped), recipe_text=text,
            seconds=time.perf_counter() - started, bytes=written,
            fingerprints={k.key: k.fingerprint for k in p.keys}, warnings=list(p.warnings) + placement.notes())


def _input_hashes(p: Plan) -> Dict[str, str]:
    out = {}
    for s in p.sources:
        if s.path.is_file():
            out[str(s.path)] = sha256_of(s.path)
    return out


def _recipe_text(p: Plan, hashes: Dict[str, str]) -> str:
    from .. import __version__
    from ..recipe_text import serialize
    comments = [f"lib_mecha {__version__}"]
    for s in p.sources:
        digest = hashes.get(str(s.path))
        arch = s.architecture.identifier if s.architecture else "generic"
        comments.append(f"input {s.path.name} {arch}" + (f" sha256={digest}" if digest else ""))
    try:
        return serialize(finalize_with(p), comments=comments)
    except MechaError as e:
        log.warning("the recipe cannot be written as .mecha text (%s); the output will not embed it", e)
        return ""


def _metadata(p: Plan, text: str, hashes: Dict[str, str]) -> Dict[str, str]:
    """The output's ``__metadata__``: the .mecha text, plus the WebUI's merge convention."""
    from .. import __version__
    models = {}
    for s in p.sources:
        entry = {"name": s.path.stem}
        own = s.file.metadata.get("sd_merge_recipe") if hasattr(s.file, "metadata") else None
        if own:
            entry["sd_merge_recipe"] = _json_or_text(own)
        models[hashes.get(str(s.path)) or s.identity] = entry
    recipe = {"type": "sd-webui-mecha", "version": __version__, "mecha_recipe": text,
              "models": [s.path.stem for s in p.sources]}
    meta = {"format": "pt", "sd_merge_recipe": json.dumps(recipe), "sd_merge_models": json.dumps(models)}
    if text:
        meta["mecha_recipe"] = text
    return meta


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value

