"""Extracting a LoRA from the difference of two models (a fine-tune and its base, or any recipe).

The difference ``tuned − base`` is planned and streamed through the engine key by key, like a
merge: memory holds the keys in flight and the low-rank factors found so far (the LoRA being
written, a small fraction of a model), never a whole model. Each weight's ΔW is factorised by SVD
(:mod:`.save`) as soon as it is computed, and forgotten.

What a LoRA can hold decides what is kept out: only Linear and Conv weights of the components the
LoRA loaders patch (the UNet or DiT, the text encoders); never biases, norms, embeddings, the VAE,
EMA copies or integer buffers; and no module for a weight that did not change.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..arch.base import Architecture
from ..errors import ArchitectureMismatch, OutputError, OutputExists, ParameterError
from ..recipe import RecipeNode, model
from .save import LoraWriter, extractable, is_conv, kohya_names, parse_dtype, rank_limit


@dataclass
class SavedLora:
    """What an extraction (or a LoRA merge) wrote.

    Attributes:
        path: the LoRA file. modules: how many modules it holds. max_rank: the largest rank of
        them. min_energy: the smallest fraction of a ΔW's spectral energy kept.
        warnings: things worth knowing that did not stop it (keys one model lacks...).
    """

    path: Path
    modules: int
    max_rank: int
    min_energy: float
    warnings: List[str] = field(default_factory=list)


def check_rank(rank: Optional[int], energy: Optional[float], what: str = "LoRA rank") -> None:
    """A rank is a whole number ≥ 1 (or None with an energy); an energy lies in (0, 1]."""
    if rank is None and energy is None:
        raise ParameterError(what, "rank", "give a rank or an energy")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ParameterError(what, "rank", f"must be a whole number ≥ 1, got {rank!r}")
    if energy is not None and not (isinstance(energy, (int, float)) and 0.0 < energy <= 1.0):
        raise ParameterError(what, "energy", f"must be in (0, 1], got {energy!r}")


class _SvdSink:
    """An engine sink that factorises each finished ΔW instead of storing it."""

    def __init__(self, plan_keys, arch: Architecture, ranks: Tuple[Optional[int], Optional[int]],
                 energy: Optional[float], dtype: torch.dtype):
        self.writer = LoraWriter(arch, dtype)
        self.names = kohya_names(arch)
        self.ranks, self.energy = ranks, energy
        self._plans = {k.key: k for k in plan_keys}
        self._partial: Dict[str, Tuple[torch.Tensor, int]] = {}
        self._lock = threading.Lock()

    def write(self, key: str, tensor: torch.Tensor) -> None:
        rank = self.ranks[1] if is_conv(tensor.shape) else self.ranks[0]
        self.writer.add(key, tensor.float().cpu(), rank, self.energy, self.names[key])

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


def extract_lora(tuned, base, output, *, rank: Optional[int] = 32, energy: Optional[float] = None,
                 conv_rank: Optional[int] = None, components: Optional[Sequence[str]] = None, dtype: str = "fp16",
                 overwrite: bool = False, progress=None, cancel=None, hash_inputs: bool = True,
                 options=None, **overrides) -> SavedLora:
    """A LoRA holding ``tuned − base``, each weight's change factorised by SVD.

    Args:
        tuned / base: checkpoints (paths or recipe nodes, e.g. a merge); one architecture.
        output: the ``.safetensors`` LoRA file (written under a temporary name, then renamed).
        rank: the rank of every module (with ``energy``, the most; None: no cap).
        energy: keep the smallest rank whose singular values hold this fraction of each ΔW's
            energy (Σ s²), e.g. 0.9.
        conv_rank: the same for convolutions larger than 1×1 (default: ``rank``); 0 leaves them out.
        components: the components to extract (``diffuser``, ``clip_l``...; default: every one a
            LoRA can patch).
        dtype: ``fp16``, ``bf16`` or ``fp32``.
        overwrite: replace an existing file (never one of the inputs).
        progress / cancel: as for :func:`lib_mecha.merge`; a cancelled extraction writes nothing.
        hash_inputs: record the inputs' sha256 in the recipe written to the metadata.
        options / overrides: a :class:`~lib_mecha.engine.options.MergeOptions` and fields to change in
            it (``device``, ``threads``, ``model_dirs``...), as for :func:`lib_mecha.merge`.

    Raises:
        ArchitectureMismatch: the models are of different (or no known) architectures.
        ParameterError: a bad rank, energy or component, or a rank no weight allows.
        OutputError: the output exists (without ``overwrite``), is an input, or is no .safetensors.
    """
    from ..engine.api import _input_hashes, _options, _recipe_text
    from ..engine.execute import execute
    from ..engine.placement import placement_for
    from ..engine.outputs import refuse_input_as_output
    from ..engine.plan import make_plan
    from ..methods import build
    check_rank(rank, energy, "extract LoRA")
    if conv_rank is not None and conv_rank != 0:
        check_rank(conv_rank, None, "extract LoRA (convolutions)")
    output = _check_output(output, overwrite)
    delta = build("subtract", tuned if isinstance(tuned, RecipeNode) else model(tuned),
                  base if isinstance(base, RecipeNode) else model(base))
    opts = _options(options, dict(overrides, output_dtype="fp32"))
    placement = placement_for(opts)
    refuse_input_as_output(delta, output, opts.model_dirs, opts.fallback_model)
    conv_rank = rank if conv_rank is None else conv_rank
    with make_plan(delta, opts) as p:
        arch = p.architecture
        if arch is None:
            raise ArchitectureMismatch("the models are of no known architecture, so LoRA module names are unknown")
        names = kohya_names(arch)
        wanted = _components(arch, components)
        p.keys = [k for k in p.keys if not k.copy_only and extractable(k.key, k.shape) and k.key in names
                  and arch.component_of(k.key) in wanted and (conv_rank != 0 or not is_conv(k.shape))]
        _check_limits(p.keys, rank, conv_rank, arch)
        sink = _SvdSink(p.keys, arch, (rank, conv_rank or None), energy, parse_dtype(dtype))
        execute(p, sink, placement=placement, compute_dtype=opts.torch_compute_dtype,
                threads=int(opts.threads), budget_bytes=int(opts.memory_budget_mb) << 20,
                progress=progress, cancel=cancel, torch_threads=int(opts.torch_threads))
        text = _recipe_text(p, _input_hashes(p) if hash_inputs else {})
        warnings = ([p.skipped_summary()] if p.skipped else []) + list(p.warnings) + placement.notes()
    settings = {"rank": rank, "energy": energy, "conv_rank": conv_rank, "components": sorted(wanted),
                "dtype": dtype, "architecture": arch.identifier}
    w = sink.writer
    w.write(output, overwrite, {"ss_output_name": output.stem, "mecha_recipe": text,
                                "mecha_extract": json.dumps(settings)})
    return SavedLora(output, len(w.modules), w.max_rank, w.min_energy, warnings)


def _check_output(output, overwrite: bool) -> Path:
    path = Path(output)
    if path.suffix != ".safetensors":
        raise OutputError(f"output must be a .safetensors file, got {path}")
    if path.exists() and not overwrite:  # before hours of work, not after
        raise OutputExists(path)
    return path


def patchable_components(arch: Architecture) -> List[str]:
    """The components whose weights a LoRA can patch: the UNet or DiT (``diffuser``), the text encoders."""
    names = kohya_names(arch)
    return [c for c in arch.components if any(k in names for k in arch.keys_of(c))]


def _components(arch: Architecture, components: Optional[Sequence[str]]) -> List[str]:
    patched = patchable_components(arch)
    if components is None:
        return patched
    unknown = [c for c in components if c not in patched]
    if unknown or not components:
        raise ParameterError("extract LoRA", "components", f"{', '.join(unknown) or 'none'}: not a component a "
                             f"{arch.identifier} LoRA can patch", f"choose from {', '.join(patched)}")
    return list(components)


def _check_limits(keys, rank: Optional[int], conv_rank: Optional[int], arch: Architecture) -> None:
    """A rank no weight allows is a mistake (a weight's change has at most min(out, in·kernel)
    directions); a rank some weights allow is taken as the cap it is for the others."""
    if not keys:
        raise ParameterError("extract LoRA", "components", f"no weight of {arch.identifier} is left to extract")
    for wanted, which, param in ((rank, False, "rank"), (conv_rank, True, "conv_rank")):
        limits = [rank_limit(k.shape) for k in keys if is_conv(k.shape) == which]
        if wanted and limits and wanted > max(limits):
            kind = "convolution" if which else "weight"
            raise ParameterError("extract LoRA", param, f"{wanted} is more than any {kind} of {arch.identifier} "
                                 f"allows (at most {max(limits)})", f"use a {param} of {max(limits)} or less")


__all__ = ["SavedLora", "check_rank", "extract_lora", "patchable_components"]
