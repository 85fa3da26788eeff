"""Masks from three models: per-element strengths for adding a difference.

Each returns a tensor in param space, meant as the ``alpha`` of
``add_difference(a, subtract(b, c), alpha=<mask>)`` (the recipe helpers ``train_difference``,
``add_opposite`` and ``clamped_add_opposite`` in :mod:`lib_mecha.compose` build exactly that).
Identifiers, parameters and formulas are sd-mecha's (reference §3.1); 0/0 gives 0.
"""
from __future__ import annotations

import torch

from .registry import merge_method
from .spec import PARAM, SAME, Float, Tensor

_ALPHA_HELP = "Scales the mask; 1 is the method's natural strength."


def _alpha():
    return Float(1.0, soft_minimum=0.0, soft_maximum=2.0, per_key=True, help=_ALPHA_HELP)


@merge_method(returns=PARAM, label="Train difference mask", category="masks", elementwise=True,
              help="Strength for adding B - C to A (SuperMerger's train difference): "
                   "1.8·|B - A| / (|B - A| + |B - C|).")
def train_difference_mask(a=Tensor(SAME), b=Tensor(SAME), c=Tensor(SAME), alpha=_alpha()):
    distance_ba = (b - a).abs()
    ratio = distance_ba / (distance_ba + (b - c).abs())
    return alpha * 1.8 * torch.nan_to_num(ratio, nan=0.0)


@merge_method(returns=PARAM, label="Add opposite mask", category="masks", elementwise=True,
              help="Strength for adding B - C to A where A and B moved away from C in opposite "
                   "directions: 2·|A - B| / (|A - B| + |A + B - 2C|).")
def add_opposite_mask(a=Tensor(SAME), b=Tensor(SAME), c=Tensor(SAME), alpha=_alpha()):
    distance_ab = (a - b).abs()
    ratio = distance_ab / (distance_ab + (a + b - 2 * c).abs())
    return alpha * 2 * torch.nan_to_num(ratio, nan=0.0)


@merge_method(returns=PARAM, label="Strict opposite mask", category="masks", elementwise=True,
              help="Like the opposite mask, but zero unless A and B lie on opposite sides of C: "
                   "2·max(0, (C - A)(B - C)) / max(|A - C|, |B - C|)².")
def add_strict_opposite_mask(a=Tensor(SAME), b=Tensor(SAME), c=Tensor(SAME), alpha=_alpha()):
    threshold = torch.maximum((a - c).abs(), (b - c).abs())
    ratio = torch.nan_to_num((c - a) * (b - c) / threshold ** 2, nan=0.0)
    return alpha * torch.clamp(ratio, min=0) * 2
