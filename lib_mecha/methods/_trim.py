"""Trimming differences to their largest entries (TIES's first step): the k-th smallest
magnitude of a tensor, found from a sampled bracket, and the trimmed slices.

Comparisons are written into float buffers and summed: torch's bool-producing ops cost
several times a float op, and a slice has far fewer than 2^24 entries, so the sums are exact.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch

from ..memory import Scratch
from ..workspace import Workspace
from ._values import slices

SAMPLED_SELECTION_ABOVE = 1 << 17  # elements; below this kthvalue on the whole tensor is as fast


def kth_smallest_magnitude(values: torch.Tensor, rank: int, work: Workspace) -> torch.Tensor:
    """Exactly ``values.abs().kthvalue(rank)`` of a 1-D tensor, found faster for large tensors: a
    strided sample brackets the answer, one pass over slices counts the entries below the bracket
    and keeps those inside it, and only those are selected from."""
    n = values.numel()
    if n <= SAMPLED_SELECTION_ABOVE:
        return values.abs().kthvalue(rank).values
    sample = values[::max(8, n // 65536)].abs()  # at most 65536 values, at most 1/8 of them
    m = sample.numel()
    q = rank / n
    margin = 4 * math.sqrt(m * q * (1 - q)) + 16
    low = sample.kthvalue(max(1, int(q * m - margin))).values
    high = sample.kthvalue(min(m, int(q * m + margin) + 1)).values
    # a value shared by many entries (sparse deltas: 0) brackets itself: counting is enough
    single = bool(low == high)
    zero_bracket = single and bool(low == 0)
    counted = {}  # slice start -> (entries below the bracket, entries inside it or their count)

    def count(start: int, end: int, scratch: Scratch) -> None:
        size = end - start
        if zero_bracket:  # nothing is below 0 in magnitude (NaN counts as neither)
            counted[start] = 0, size - _count_nonzero(values[start:end], scratch)
            return
        # comparisons into floats (1 or 0; NaN is neither below nor inside), summed exactly
        a = torch.abs(values[start:end], out=scratch.get("magnitude", size))
        below = torch.lt(a, low, out=scratch.get("below", size))
        inside = torch.le(a, high, out=scratch.get("inside", size)).sub_(below)
        counted[start] = int(below.sum()), (int(inside.sum()) if single else _selected(a, inside.bool()))

    work.for_each_range(slices(n), count, lambda: work.scratch(values))
    below = sum(c for c, _ in counted.values())
    if single:
        if below < rank <= below + sum(c for _, c in counted.values()):
            return low
    else:
        band = torch.cat([counted[start][1] for start in sorted(counted)])
        if below < rank <= below + band.numel():
            return band.kthvalue(rank - below).values
    return values.abs().kthvalue(rank).values  # the sample misled us: select from everything


def _selected(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values[mask]`` (a bool mask), a new tensor. On the CPU numpy's boolean indexing does it:
    torch's goes through ``nonzero``, which costs several times as much. numpy has no bfloat16."""
    if values.device.type != "cpu" or values.dtype == torch.bfloat16:
        return values[mask]
    return torch.from_numpy(values.numpy()[mask.numpy()])


def _count_nonzero(values: torch.Tensor, scratch: Scratch) -> int:
    """``count_nonzero`` of a float slice (NaN counts, ±0 does not): a comparison into floats and
    their sum, exact for a slice (far fewer than 2^24 entries), and a fraction of the cost of
    ``count_nonzero`` on floats."""
    return int(torch.ne(values, 0, out=scratch.get("nonzero", values.numel(), values.dtype)).sum())


def trim_threshold(delta: torch.Tensor, k: float, work: Workspace) -> Optional[torch.Tensor]:
    """The smallest magnitude TIES keeps: the ``max(int((1-k)·n), 1)``-th smallest ``|delta|``;
    None when everything is kept: that is the smallest one (k = 1), or 0 (a sparse delta, such
    as one after DARE's dropout)."""
    rank = max(int((1 - k) * delta.numel()), 1)
    if rank == 1:
        return None
    flat = delta.flatten()
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    threshold = kth_smallest_magnitude(flat, rank, work)
    return None if threshold == 0 else threshold.to(delta.dtype)


def _shrink_below(threshold: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[float]:
    """hardshrink's ``lambd`` that keeps exactly the entries with ``|x| >= threshold``: it keeps
    ``|x| > lambd``, so lambd is the representable number just below the threshold."""
    if threshold is None:
        return None
    t = threshold.to(dtype)
    return float(torch.nextafter(t, torch.full_like(t, -math.inf)))


class TrimmedSlices:
    """The trimmed deltas of TIES, one slice at a time: entries below each delta's threshold are 0.

    Slices are read-only (without trimming they are the deltas themselves). Non-finite entries
    pass through, so the element they sit in comes out non-finite (and TIES then makes it 0);
    ``finite_only`` zeroes them instead, for the geometric median, whose distances span the
    whole tensor.
    """

    def __init__(self, deltas: Sequence[torch.Tensor], k: float, work: Workspace):
        self.flat = [d.reshape(-1) for d in deltas]
        self.lambdas = [_shrink_below(trim_threshold(d, k, work), d.dtype) for d in deltas]

    def get(self, i: int, start: int, end: int, scratch: Scratch, finite_only: bool = False) -> torch.Tensor:
        source, lambd = self.flat[i][start:end], self.lambdas[i]
        if lambd is None and not finite_only:
            return source
        out = scratch.get(("trimmed", i), end - start)
        if finite_only:
            source = torch.nan_to_num(source, nan=0.0, posinf=0.0, neginf=0.0, out=out)
        if lambd is not None:
            torch.ops.aten.hardshrink.out(source, lambd, out=out)
        return out

    def all(self, start: int, end: int, scratch: Scratch, finite_only: bool = False) -> List[torch.Tensor]:
        return [self.get(i, start, end, scratch, finite_only) for i in range(len(self.flat))]
