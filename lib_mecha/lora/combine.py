"""Merging LoRAs into one LoRA: the summed ΔW of each weight, re-factorised by SVD (:mod:`.save`)
and written as a kohya LoRA, as extraction (:mod:`.extract`) writes it.

Merging reads only the LoRA files (and, for modules whose change depends on the weights, such as
DoRA or OFT, the base checkpoint's weights of those keys).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch

from ..arch.base import Architecture
from ..errors import ArchitectureMismatch, MergeSpaceError, ParameterError
from ..io import open_model
from ..recipe import MergeNode
from .evaluate import combined_delta, depends_on_base, plan_entries
from .extract import SavedLora, check_rank
from .matching import best_match, match_for, read_lora_file
from .save import LoraWriter, extractable, kohya_names, parse_dtype


def merge_loras(loras: Sequence[Union[MergeNode, str]], output, *, rank: int = 32, energy: Optional[float] = None,
                base=None, dtype: str = "fp16", overwrite: bool = False) -> SavedLora:
    """Merge LoRAs (``lora(path, strength)`` nodes or paths) into one LoRA file of rank ``rank``.

    Args:
        loras: the LoRAs with their strengths (per-block strengths are not supported here).
        output: the ``.safetensors`` file to write (never overwritten unless ``overwrite``).
        rank: the rank of every module (the most, when ``energy`` is given).
        energy: keep the smallest rank that holds this fraction of each ΔW's energy.
        base: a checkpoint path, needed only for modules whose change depends on the weights.
        dtype: ``fp16``, ``bf16`` or ``fp32``.

    Raises:
        ArchitectureMismatch: the LoRAs are for different architectures.
        MergeSpaceError: a DoRA/OFT/IA3/GLoRA module and no ``base``.
    """
    check_rank(rank, energy, "merge LoRAs")
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
            writer.add(key, delta, rank, energy, names[key])
        writer.write(output, overwrite, {"ss_output_name": Path(output).stem,
                                         "mecha_merged_from": ", ".join(Path(p).name for p, _ in items)})
        return SavedLora(Path(output), len(writer.modules), writer.max_rank, writer.min_energy)
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


__all__: List[str] = ["merge_loras"]
