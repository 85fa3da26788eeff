"""Cosine-adaptive interpolation (SuperMerger's cosineA / cosineB), with sd-mecha's identifiers.

Both compute a similarity ``s`` between A and B along dimension 0 (per column of a matrix;
one number for a vector), then take ``k = 1 - clamp(s - alpha, 0, 1)`` and return
``A + k·(B - A)``: where A and B already point the same way, more of A is kept.
"""
from __future__ import annotations

import torch

from ._values import as_tensor_like, at_least_1d
from .registry import merge_method
from .spec import WEIGHT, Float, Tensor

_ALPHA_HELP = ("Similarity threshold: 1 gives B everywhere; lower values keep A wherever A and B "
               "are more similar than alpha.")
_NOTE = ("A similarity that cannot be computed (an all-zero column) counts as 0; sd-mecha "
         "returns NaN there.")


def _cosine_mix(a, b, alpha, similarity):
    similarity = torch.nan_to_num(similarity, nan=0.0)
    k = 1 - torch.clamp(similarity - as_tensor_like(alpha, similarity), 0, 1)
    return torch.lerp(a, b, k.to(a.dtype))


def _column_cosines(a, b):
    """Per-column dot products and norms along dimension 0, with one key-sized temporary.

    The cosine of A and B normalised along dimension 0 (sd-mecha's cosine A) is the cosine of A
    and B themselves; all-zero columns, which normalising turns into zeros, give 0/0 here and
    count as 0 in :func:`_cosine_mix`."""
    dots = (a * b).sum(dim=0)
    return dots, torch.linalg.vector_norm(a, dim=0), torch.linalg.vector_norm(b, dim=0)


@merge_method(returns=WEIGHT, label="Cosine A", category="cosine",
              help="Weighted sum that keeps A's structure where A and B agree (cosine similarity per column).",
              notes=(_NOTE,))
def add_cosine_a(a=Tensor(WEIGHT), b=Tensor(WEIGHT),
                 alpha=Float(1.0, soft_minimum=0.0, soft_maximum=1.0, per_key=True, help=_ALPHA_HELP)):
    if a.numel() == 0:
        return a.clone()
    (a1, b1), restore = at_least_1d(a, b)
    dots, norm_a, norm_b = _column_cosines(a1, b1)
    return restore(_cosine_mix(a1, b1, alpha, dots / (norm_a * norm_b)))


@merge_method(returns=WEIGHT, label="Cosine B", category="cosine",
              help="Like Cosine A, with the similarity averaged between per-column and whole-tensor cosine.",
              notes=(_NOTE,))
def add_cosine_b(a=Tensor(WEIGHT), b=Tensor(WEIGHT),
                 alpha=Float(1.0, soft_minimum=0.0, soft_maximum=1.0, per_key=True, help=_ALPHA_HELP)):
    if a.numel() == 0:
        return a.clone()
    (a1, b1), restore = at_least_1d(a, b)
    dots, norm_a, norm_b = _column_cosines(a1, b1)
    per_column = dots / (norm_a.clamp(min=1e-8) * norm_b.clamp(min=1e-8))  # torch's cosine_similarity
    whole = dots.sum() / (torch.linalg.vector_norm(norm_a) * torch.linalg.vector_norm(norm_b))
    return restore(_cosine_mix(a1, b1, alpha, (per_column + whole) / 2))
