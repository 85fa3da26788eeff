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


# --- applying several LoRAs to one key ---------------------------------------------------

def _scalar(s):
    if isinstance(s, torch.Tensor):
        return float(s) if s.numel() == 1 else None
    return float(s)


def _entry_needs_base(entry: Entry) -> bool:
    algo_name, names, consts, rows, swap, bias = entry
    return not bias and needs_base(ALGORITHMS[algo_name], {n: None for n in names})


def _add_lora_in_place(w: torch.Tensor, s: float, entry: Entry, t: dict) -> bool:
    """W[rows] += s·scale·(up @ down) without materialising ΔW; False when the entry needs the
    general path (Tucker core, DoRA, a bias, swapped halves, an inpainting pad)."""
    algo_name, names, consts, rows, swap, bias = entry
    if algo_name != "lora" or bias or swap or set(t) - {"lora_up.weight", "lora_down.weight", "alpha", "scale"}:
        return False
    up, down = t["lora_up.weight"], t["lora_down.weight"]
    span = Part("", rows=rows).row_range(w.shape[0])
    target = w if span is None else w[span[0]:span[1]]
    flat = target.reshape(target.shape[0], -1)
    up2, down2 = up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)
    if flat.data_ptr() != target.data_ptr() or up2.shape[0] != flat.shape[0] or down2.shape[1] != flat.shape[1]:
        return False
    from .algorithms import scale_of
    alpha = s * scale_of(t, down.shape[0])
    flat.addmm_(up2.to(flat.dtype), down2.to(flat.dtype), alpha=alpha)
    return True


def apply_groups(base: torch.Tensor, strengths: Sequence, tensors: Sequence[torch.Tensor], groups) -> torch.Tensor:
    """``base`` with LoRAs applied in order; each LoRA's ΔW is computed on the weight as the
    LoRAs before it left it (what the WebUI does). ``groups`` is ``((strength index, entries), …)``."""
    w = base.to(torch.float32, copy=True)
    shape = tuple(w.shape)
    i = 0
    for s_index, entries in groups:
        n = sum(len(e[1]) for e in entries)
        group = tensors[i:i + n]
        i += n
        s = strengths[s_index]
        if any(_entry_needs_base(e) for e in entries):
            w += s * combined_delta(w, shape, group, entries)
            continue
        scalar = _scalar(s)
        j = 0
        for entry in entries:
            k = len(entry[1])
            part = group[j:j + k]
            j += k
            t = dict(zip(entry[1], part))
            t.update({name: torch.tensor(v) for name, v in entry[2]})
            if scalar is not None and _add_lora_in_place(w, scalar, entry, t):
                continue
            w += s * combined_delta(None, shape, part, (entry,))
    return w.to(base.dtype)
