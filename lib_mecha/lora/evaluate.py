"""Turning matched LoRA modules into per-key expressions, and evaluating them.

For one checkpoint key the planner gets a :class:`~lib_mecha.engine.expr.Call` whose arguments
are the LoRA tensors that key needs (``Read`` leaves of the LoRA file, so each is read once)
and whose ``layout`` constant says which algorithm each group of tensors feeds and which rows
of the key it lands in. Scalars (``alpha``, ``scale``, ``on_input``) travel as constants read
at plan time, so an integer ``on_input`` never makes the key look like an integer buffer.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from ..engine.expr import Const, Expr
from .algorithms import ALGORITHMS, needs_base
from .matching import LoraModule
from .naming import Part

SCALARS = ("alpha", "scale", "on_input")

# one entry per module contributing to a key:
# (algorithm, tensor names read, ((scalar name, value), ...), rows (start, stop, total) or None,
#  swap halves, bias?)
Entry = Tuple[str, Tuple[str, ...], Tuple[Tuple[str, float], ...], Optional[Tuple[int, int, int]], bool, bool]


def plan_entries(parts: Sequence[Tuple[LoraModule, Part]], bias: bool, scalars) -> Tuple[List[Entry], List[str]]:
    """The layout of a key and the file keys to read for it, in argument order.

    ``scalars`` maps a file key to its value (read at plan time)."""
    layout: List[Entry] = []
    reads: List[str] = []
    for module, part in parts:
        keys = module.keys
        names = tuple(n for n in sorted(keys) if n not in SCALARS)
        consts = tuple((n, float(scalars[keys[n]])) for n in sorted(keys) if n in SCALARS)
        layout.append((module.algorithm.name, names, consts, part.rows, part.swap_halves, bias))
        reads.extend(keys[n] for n in names)
    return layout, reads


def depends_on_base(parts: Sequence[Tuple[LoraModule, Part]]) -> List[str]:
    """Names of the modules whose ΔW depends on the weight they are applied to."""
    out = []
    for module, _ in parts:
        view = {n: None for n in module.keys}
        if needs_base(module.algorithm, view):
            out.append(module.name)
    return out


def _swap(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat((b, a), dim=0)


def combined_delta(base: Optional[torch.Tensor], shape: Tuple[int, ...], tensors: Sequence[torch.Tensor],
                   layout: Sequence[Entry]) -> torch.Tensor:
    """Σ of the modules' ΔW (or Δbias) placed in their rows, in float32."""
    out = torch.zeros(shape, dtype=torch.float32, device=tensors[0].device if tensors else None)
    i = 0
    for algo_name, names, consts, rows, swap, bias in layout:
        algo = ALGORITHMS[algo_name]
        t = dict(zip(names, tensors[i:i + len(names)]))
        i += len(names)
        t.update({n: torch.tensor(v) for n, v in consts})
        span = Part("", rows=rows).row_range(shape[0])
        target = out if span is None else out[span[0]:span[1]]
        if bias:
            d = algo.bias_delta(t)
            if d is None:
                continue
        else:
            b = None
            if base is not None:
                b = base if span is None else base[span[0]:span[1]]
                b = _swap(b) if swap else b
            d = algo.delta(t, b, tuple(target.shape))
        if swap:
            d = _swap(d.reshape(target.shape))
        target += d.reshape(target.shape).to(target.dtype)
    return out


def layout_const(layout: Sequence[Entry]) -> Expr:
    return Const(tuple(layout))
