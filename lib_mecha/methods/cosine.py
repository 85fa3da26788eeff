"""Cosine-adaptive interpolation (SuperMerger's cosineA / cosineB), with sd-mecha's identifiers.

Both compute a similarity ``s`` between A and B along dimension 0 (per column of a matrix;
one number for a vector), then take ``k = 1 - clamp(s - alpha, 0, 1)`` and return
``A + k·(B - A)``: where A and B already point the same way, more of A is kept.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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


@merge_method(returns=WEIGHT, label="Cosine A", category="cosine",
              help="Weighted sum that keeps A's structure where A and B agree (cosine similarity per column).",
              notes=(_NOTE,))
def add_cosine_a(a=Tensor(WEIGHT), b=Tensor(WEIGHT),
                 alpha=Float(1.0, soft_minimum=0.0, soft_maximum=1.0, per_key=True, help=_ALPHA_HELP)):
    if a.numel() == 0:
        return a.clone()
    (a1, b1), restore = at_least_1d(a, b)
    similarity = F.cosine_similarity(F.normalize(a1, dim=0), F.normalize(b1, dim=0), dim=0)
    return restore(_cosine_mix(a1, b1, alpha, similarity))


@merge_method(returns=WEIGHT, label="Cosine B", category="cosine",
              help="Like Cosine A, with the similarity averaged between per-column and whole-tensor cosine.",
              notes=(_NOTE,))
def add_cosine_b(a=Tensor(WEIGHT), b=Tensor(WEIGHT),
                 alpha=Float(1.0, soft_minimum=0.0, soft_maximum=1.0, per_key=True, help=_ALPHA_HELP)):
    if a.numel() == 0:
        return a.clone()
    (a1, b1), restore = at_least_1d(a, b)
    per_column = F.cosine_similarity(a1, b1, dim=0)
    whole = (a1 * b1).sum() / (torch.linalg.vector_norm(a1) * torch.linalg.vector_norm(b1))
    return restore(_cosine_mix(a1, b1, alpha, (per_column + whole) / 2))
