"""Copying regions instead of mixing values (sd-mecha's ``tensor_sum`` and ``top_k_tensor_sum``;
SuperMerger's "tensor" calculation mode).

A region is given by ``width`` and ``offset`` as fractions of the whole, and wraps around:
width 0.3 at offset 0.8 covers [0.8, 1) and [0, 0.1).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch

from ._rank_transfer import transfer
from ._values import scalar
from .registry import merge_method
from .spec import SAME, Float, KeyWorkspace, Tensor

_WIDTH_HELP = "Size of the region taken from B, as a fraction of the whole (negative widths extend backwards)."
_OFFSET_HELP = "Where the region starts, as a fraction of the whole; it wraps around past 1."


def region(width: float, offset: float, n: int) -> Tuple[int, int, bool]:
    """``(start, end, inverted)`` in items: the region is [start, end), or its complement when inverted."""
    if width < 0:
        offset += width
        width = -width
    width = min(width, 1)
    if offset < 0:
        offset = 1 + offset - int(offset)
    offset = math.fmod(offset, 1.0)
    if width + offset <= 1:
        return round(offset * n), round((width + offset) * n), False
    return round((width + offset - 1) * n), round(offset * n), True


@merge_method(returns=SAME, label="Copy region (rows)", category="slicing",
              help="Copies a band of rows (first dimension) from B into A, unchanged.")
def tensor_sum(a=Tensor(SAME), b=Tensor(SAME),
               width=Float(0.5, soft_minimum=0.0, soft_maximum=1.0, per_key=True, help=_WIDTH_HELP),
               offset=Float(0.0, soft_minimum=0.0, soft_maximum=1.0, per_key=True, help=_OFFSET_HELP)):
    width = scalar("tensor_sum", "width", width)
    offset = scalar("tensor_sum", "offset", offset)
    if a.dim() == 0:
        return b if width > 0.5 else a
    start, end, inverted = region(width, offset, a.shape[0])
    if inverted:  # the region wraps: B everywhere except A's rows [start, end)
        result = b.clone()
        result[start:end] = a[start:end]
    else:
        result = a.clone()
        result[start:end] = b[start:end]
    return result


def _kth_magnitude(sorted_values: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0:
        return torch.tensor(-1.0, device=sorted_values.device)
    return torch.kthvalue(sorted_values.abs().float(), k).values


def _rearranged_by_sorting(a_flat: torch.Tensor, b_flat: torch.Tensor, start: int, end: int,
                           inverted: bool) -> torch.Tensor:
    """The rearrangement by whole-tensor float sorts: for dtypes other than float32, devices
    other than the CPU and tensors of 2^31 elements or more."""
    a_sorted = torch.sort(a_flat).values
    b_order = torch.argsort(b_flat, stable=True)
    b_rank = torch.empty_like(b_order)  # the inverse permutation: a scatter, not a second sort
    b_rank[b_order] = torch.arange(b_order.numel(), device=b_order.device)
    del b_order
    low, high = _kth_magnitude(a_sorted, start), _kth_magnitude(a_sorted, end)
    magnitude = a_sorted.abs()
    in_band = (low <= magnitude) & (magnitude <= high)
    if inverted:
        in_band = ~in_band
    # entry i of the result takes the value of A whose rank equals B's rank at i
    take = torch.gather(in_band, 0, b_rank)
    rearranged = torch.gather(a_sorted, 0, b_rank)
    return torch.where(take, rearranged, a_flat)


@merge_method(returns=SAME, label="Copy region (by rank)", category="slicing", stored_dtype=True,
              help="Within a band of A's values chosen by magnitude, rearranges A's values into B's order "
                   "(B's pattern with A's distribution).")
def top_k_tensor_sum(a=Tensor(SAME), b=Tensor(SAME),
                     width=Float(1.0, soft_minimum=0.0, soft_maximum=1.0, per_key=True,
                                 help="Size of the magnitude band that is rearranged, as a fraction of all values."),
                     offset=Float(0.0, soft_minimum=0.0, soft_maximum=1.0, per_key=True,
                                  help="Where the band starts, from the smallest magnitudes; wraps past 1."),
                     work=KeyWorkspace()):
    """Entry i takes ``sort(A)[rank_B(i)]`` where that rank's magnitude lies in the band (the
    ``start``-th to ``end``-th smallest magnitudes of A, or outside them when the region wraps),
    and keeps ``A[i]`` elsewhere; ``rank_B`` is B's stable ascending order (NaN last)."""
    width = scalar("top_k_tensor_sum", "width", width)
    offset = scalar("top_k_tensor_sum", "offset", offset)
    if a.numel() == 0:
        return a.clone()
    start, end, inverted = region(width, offset, a.numel())
    if a.dtype != b.dtype:  # one read in its stored dtype, the other computed (see stored_dtype)
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dtype), b.to(dtype)
    fast = (a.dtype in (torch.float32, torch.float16, torch.bfloat16) and a.device.type == b.device.type == "cpu"
            and a.numel() < 1 << 31)
    if not fast:
        return _rearranged_by_sorting(a.flatten(), b.flatten(), start, end, inverted).reshape(a.shape)
    return transfer(a.flatten(), b.flatten(), start, end, inverted, work).reshape(a.shape)
