"""Cosine-adaptive interpolation (SuperMerger's cosineA / cosineB), with sd-mecha's identifiers.

Both compute a similarity ``s`` between A and B along dimension 0 (per column of a matrix;
one number for a vector), then take ``k = 1 - clamp(s - alpha, 0, 1)`` and return
``A + k·(B - A)``: where A and B already point the same way, more of A is kept.
"""
from __future__ import annotations

import torch

from ..memory import Scratch
from ..workspace import Workspace
from . import _values
from ._values import as_tensor_like, at_least_1d, slices
from .registry import merge_method
from .spec import WEIGHT, Float, KeyWorkspace, Tensor

_ALPHA_HELP = ("Similarity threshold: 1 gives B everywhere; lower values keep A wherever A and B "
               "are more similar than alpha.")
_NOTE = ("A similarity that cannot be computed (an all-zero column) counts as 0; sd-mecha "
         "returns NaN there.")


# The column sums are taken over this many blocks of rows, each summed in order and then added in
# block order: a fixed partition, so the result does not depend on the number of threads.
ROW_BLOCKS = 8


def _cosine_mix(a, b, alpha, similarity, work: Workspace):
    """``lerp(a, b, k)`` with ``k = 1 - clamp(similarity - alpha, 0, 1)`` per column, slice by slice."""
    similarity = torch.nan_to_num(similarity, nan=0.0)
    k = (1 - torch.clamp(similarity - as_tensor_like(alpha, similarity), 0, 1)).to(a.dtype)
    rows, columns = _as_rows(a), _as_rows(b)
    out = work.empty_like(rows)
    width = rows.shape[1]

    def mix(start: int, end: int, _) -> None:
        first, last = start // width, end // width
        torch.lerp(rows[first:last], columns[first:last], k, out=out[first:last])

    work.for_each_range(slices(rows.numel(), width), mix)
    return out.view(a.shape)


def _as_rows(t):
    return t.reshape(t.shape[0], -1)


def _column_cosines(a, b, work: Workspace):
    """Per-column dot products and norms along dimension 0, slice by slice (no key-sized temporary).

    The cosine of A and B normalised along dimension 0 (sd-mecha's cosine A) is the cosine of A
    and B themselves; all-zero columns, which normalising turns into zeros, give 0/0 here and
    count as 0 in :func:`_cosine_mix`."""
    x_rows, y_rows = _as_rows(a), _as_rows(b)
    count, width = x_rows.shape
    per_block = -(-count // ROW_BLOCKS)
    blocks = [(first, min(first + per_block, count)) for first in range(0, count, per_block)]
    step = max(1, _values.SLICE_ELEMENTS // width)  # rows per slice
    partial = {}

    def column_sums(first: int, last: int, scratch: Scratch) -> None:
        sums = torch.zeros(3, width, dtype=a.dtype, device=a.device)
        for start in range(first, last, step):
            x, y = x_rows[start:min(start + step, last)], y_rows[start:min(start + step, last)]
            product = scratch.get("product", x.numel()).view(x.shape)
            sums[0] += torch.mul(x, y, out=product).sum(0)
            sums[1] += torch.mul(x, x, out=product).sum(0)
            sums[2] += torch.mul(y, y, out=product).sum(0)
        partial[first] = sums

    work.for_each_range(blocks, column_sums, lambda: work.scratch(a))
    dots, squares_a, squares_b = sum(partial[first] for first, _ in blocks)
    return dots, squares_a.sqrt_(), squares_b.sqrt_()


@merge_method(returns=WEIGHT, label="Cosine A", category="cosine",
              help="Weighted sum that keeps A's structure where A and B agree (cosine similarity per column).",
              notes=(_NOTE,))
def add_cosine_a(a=Tensor(WEIGHT), b=Tensor(WEIGHT),
                 alpha=Float(1.0, soft_minimum=0.0, soft_maximum=1.0, per_key=True, help=_ALPHA_HELP),
                 work=KeyWorkspace()):
    if a.numel() == 0:
        return a.clone()
    (a1, b1), restore = at_least_1d(a, b)
    dots, norm_a, norm_b = _column_cosines(a1, b1, work)
    return restore(_cosine_mix(a1, b1, alpha, dots / (norm_a * norm_b), work))


@merge_method(returns=WEIGHT, label="Cosine B", category="cosine",
              help="Like Cosine A, with the similarity averaged between per-column and whole-tensor cosine.",
              notes=(_NOTE,))
def add_cosine_b(a=Tensor(WEIGHT), b=Tensor(WEIGHT),
                 alpha=Float(1.0, soft_minimum=0.0, soft_maximum=1.0, per_key=True, help=_ALPHA_HELP),
                 work=KeyWorkspace()):
    if a.numel() == 0:
        return a.clone()
    (a1, b1), restore = at_least_1d(a, b)
    dots, norm_a, norm_b = _column_cosines(a1, b1, work)
    per_column = dots / (norm_a.clamp(min=1e-8) * norm_b.clamp(min=1e-8))  # torch's cosine_similarity
    whole = dots.sum() / (torch.linalg.vector_norm(norm_a) * torch.linalg.vector_norm(norm_b))
    return restore(_cosine_mix(a1, b1, alpha, (per_column + whole) / 2, work))
