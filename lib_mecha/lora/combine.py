"""Merging LoRAs into one LoRA, and extracting a LoRA from the difference of two checkpoints.

Both end the same way: a ΔW per weight, re-factorised by SVD (:mod:`.save`) and written as a
kohya LoRA. Merging reads only the LoRA files (and, for modules whose change depends on the
weights, such as DoRA or OFT, the base checkpoint's weights of those keys). Extraction streams
the two checkpoints through the engine key by key, so memory holds one key's ΔW at a time.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..arch.base import Architecture
from ..errors import ArchitectureMismatch, MergeSpaceError, ParameterError
from ..io import open_model
from ..recipe import MergeNode, RecipeNode, model
from .evaluate import combined_delta, depends_on_base, plan_entries
from .matching import best_match, match_for, read_lora_file
from .save import LoraWriter, extractable, kohya_names, parse_dtype


@dataclass
class SavedLora:
    path: Path
    modules: int
    max_rank: int
    min_energy: float   # the smallest fraction of a ΔW's spectral energy kept


def _check_rank(rank: int, threshold: Optional[float]) -> None:
    if not isinstance(rank, int) or rank < 1:
        raise ParameterError("LoRA rank", "rank", f"must be a whole number ≥ 1, got {rank!r}")
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ParameterError("LoRA rank", "threshold", f"must be in (0, 1], got {threshold!r}")


def merge_loras(loras: Sequence[Union[MergeNode, str]], output, *, rank: int = 32, threshold: Optional[float] = None,
                base=None, dtype: str = "fp16", overwrite: bool = False) -> SavedLora:
    """Merge LoRAs (``lora(path, strength)`` nodes or paths) into one LoRA file of rank ``rank``.

    Args:
        loras: the LoRAs with their strengths (per-block strengths are not supported here).
        output: the ``.safetensors`` file to write (never overwritten unless ``overwrite``).
        rank: the rank of every module (the most, when ``threshold`` is given).
        threshold: keep the smallest rank that holds this fraction of each ΔW's energy.
        base: a checkpoint path, needed only for modules whose change depends on the weights.
        dtype: ``fp16``, ``bf16`` or ``fp32``.

    Raises:
        ArchitectureMismatch: the LoRAs are for different architectures.
        MergeSpaceError: a DoRA/OFT/IA3/GLoRA module and no ``base``.
    """
    _check_rank(rank, threshold)
    items = [_lora_item(x) for x in loras]
    if not items:
        raise ParameterError("merge_loras", "loras", "needs at least one LoRA")
    handles = []
    base_handle = open_model(str(base)) if base is not None else None
    try:
        files = []
        for path, strength in items:
            h = open_model(str(path))
            handles.append(h)
            files.append((read_lora_file(path, h), h, strength))
        arch = _common_arch([f for f, _, _ in files])
        matches = [(match_for(f, arch), h, s) for f, h, s in files]
        writer = LoraWriter(arch, parse_dtype(dtype))
        names = kohya_names(arch)
        keys = [k for k in arch.keys if any(k in m.weights for m, _, _ in matches)]
        for key in keys:
            if not extractable(key, tuple(arch.keys[key].shape)):
                continue
            delta = _summed_delta(key, arch, matches, base_handle)
            writer.add(key, delta, rank, threshold, names[key])
        writer.write(output, overwrite, {"ss_output_name": Path(output).stem,
                                         "mecha_merged_from": ", ".join(Path(p).name for p, _ in items)})
        return SavedLora(Path(output), len(writer.ranks), max(writer.ranks), min(writer.energies))
    finally:
        for h in handles:
            h.close()
        if base_handle is not None:
            base_handle.close()


def _lora_item(x) -> Tuple[str, float]:
    if isinstance(x, (str, Path)):
        return str(x), 1.0
    if isinstance(x, MergeNode) and x.method == "lora_delta":
        lora_node, strength = x.args
        value = getattr(strength, "value", None)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ParameterError("merge_loras", "loras", "per-block strengths cannot be merged into one LoRA",
                                 "bake them into a checkpoint instead")
        return lora_node.path, float(value)
    raise ParameterError("merge_loras", "loras", f"expected lora(path, strength) or a path, got {x!r}")


def _common_arch(files) -> Architecture:
    found = None
    for f in files:
        best = best_match(f)
        if best is None:
            raise ArchitectureMismatch(f"LoRA {f.path} matches no known architecture")
        if found is None:
            found = (best.architecture, f.path)
        elif best.architecture.identifier != found[0].identifier:
            raise ArchitectureMismatch(f"LoRA {f.path} is for {best.architecture.identifier} but {found[1]} is for "
                                       f"{found[0].identifier}", "merge LoRAs made for one kind of model")
    return found[0]


def _summed_delta(key, arch, matches, base_handle) -> torch.Tensor:
    shape = tuple(arch.keys[key].shape)
    total = torch.zeros(shape, dtype=torch.float32)
    for m, handle, strength in matches:
        parts = m.weights.get(key)
        if not parts:
            continue
        base = None
        dependent = depends_on_base(parts)
        if dependent:
            if base_handle is None:
                raise MergeSpaceError(f"LoRA module {dependent[0]!r} of {m.lora.path} changes {key!r} by an amount "
                                      "that depends on the weights", "pass base= (the checkpoint it is meant for)")
            base = base_handle.read(_stored(base_handle, arch, key)).float()
        layout, file_keys = plan_entries(parts, False, m.lora.scalars)
        tensors = [handle.read(k).float() for k in file_keys]
        total += strength * combined_delta(base, shape, tensors, layout)
    return total


def _stored(handle, arch: Architecture, key: str) -> str:
    if key in handle.tensors:
        return key
    for alias in arch.keys[key].aliases:
        if alias in handle.tensors:
            return alias
    raise ArchitectureMismatch(f"the base checkpoint has no {key!r}")


# --- extraction --------------------------------------------------------------------------

class _SvdSink:
    """An engine sink that factorises each finished ΔW instead of storing it."""

    def __init__(self, plan_keys, arch: Architecture, rank: int, threshold: Optional[float], dtype: torch.dtype):
        self.writer = LoraWriter(arch, dtype)
        self.names = kohya_names(arch)
        self.rank, self.threshold = rank, threshold
        self._plans = {k.key: k for k in plan_keys}
        self._partial: Dict[str, Tuple[torch.Tensor, int]] = {}
        self._lock = threading.Lock()

    def write(self, key: str, tensor: torch.Tensor) -> None:
        names = self.names.get(key)
        if names:
            with self._lock:
                self.writer.add(key, tensor.float().cpu(), self.rank, self.threshold, names)

    def write_range(self, key: str, start: int, tensor: torch.Tensor) -> None:
        with self._lock:
            buf, filled = self._partial.get(key, (None, 0))
            if buf is None:
                buf = torch.empty(self._plans[key].shape, dtype=torch.float32)
            buf.view(-1)[start:start + tensor.numel()].copy_(tensor.reshape(-1))
            filled += tensor.numel()
            if filled < buf.numel():
                self._partial[key] = (buf, filled)
                return
            self._partial.pop(key, None)
        self.write(key, buf)

    def commit(self):
        return None

    def abort(self) -> None:
        self._partial.clear()


def extract_lora(tuned, base, output, *, rank: int = 32, threshold: Optional[float] = None, dtype: str = "fp16",
                 overwrite: bool = False, **options) -> SavedLora:
    """A LoRA holding ``tuned − base``, factorised to ``rank`` (or to an energy ``threshold``).

    Args:
        tuned / base: checkpoints (paths or recipe nodes, e.g. a merge); same architecture.
        output: the ``.safetensors`` LoRA file to write.
        rank: the rank of every module (the most, with ``threshold``).
        threshold: keep the smallest rank that holds this fraction of each ΔW's energy (0.9).
        options: engine options (``device``, ``threads``, ``model_dirs``...).
    """
    from ..engine.api import _options
    from ..engine.execute import execute
    from ..engine.plan import make_plan
    from ..methods import build
    _check_rank(rank, threshold)
    tuned = tuned if isinstance(tuned, RecipeNode) else model(tuned)
    base = base if isinstance(base, RecipeNode) else model(base)
    opts = _options(None, dict(options, output_dtype="fp32"))
    with make_plan(build("subtract", tuned, base), opts) as p:
        arch = p.architecture
        if arch is None:
            raise ArchitectureMismatch("the models are of no known architecture, so LoRA module names are unknown")
        p.keys = [k for k in p.keys if not k.copy_only and extractable(k.key, k.shape)]
        sink = _SvdSink(p.keys, arch, rank, threshold, parse_dtype(dtype))
        execute(p, sink, device=torch.device(opts.device), compute_dtype=opts.torch_compute_dtype,
                threads=int(opts.threads), budget_bytes=int(opts.memory_budget_mb) << 20,
                torch_threads=int(opts.torch_threads))
    w = sink.writer
    w.write(output, overwrite, {"ss_output_name": Path(output).stem})
    return SavedLora(Path(output), len(w.ranks), max(w.ranks), min(w.energies))


__all__: List[str] = ["merge_loras", "extract_lora", "SavedLora"]
