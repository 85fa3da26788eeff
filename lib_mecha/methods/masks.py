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


def _scaled(alpha, factor):
    """alpha·factor, folded into one number when alpha is a scalar (one pass instead of two)."""
    return alpha * factor


def _alpha():
    return Float(1.0, soft_minimum=0.0, soft_maximum=2.0, per_key=True, help=_ALPHA_HELP)


@merge_method(returns=PARAM, label="Train difference mask", category="masks", elementwise=True,
              help="Strength for adding B - C to A (SuperMerger's train difference): "
                   "1.8·|B - A| / (|B - A| + |B - C|).")
def train_difference_mask(a=Tensor(SAME), b=Tensor(SAME), c=Tensor(SAME), alpha=_alpha()):
    distance_ba = (b - a).abs_()  # in place below: fresh key-sized tensors cost page faults
    ratio = distance_ba / (b - c).abs_().add_(distance_ba)
    return ratio.nan_to_num_(nan=0.0).mul_(_scaled(alpha, 1.8))


@merge_method(returns=PARAM, label="Add opposite mask", category="masks", elementwise=True,
              help="Strength for adding B - C to A where A and B moved away from C in opposite "
                   "directions: 2·|A - B| / (|A - B| + |A + B - 2C|).")
def add_opposite_mask(a=Tensor(SAME), b=Tensor(SAME), c=Tensor(SAME), alpha=_alpha()):
    distance_ab = (a - b).abs_()
    ratio = distance_ab / (a + b).sub_(c, alpha=2).abs_().add_(distance_ab)
    return ratio.nan_to_num_(nan=0.0).mul_(_scaled(alpha, 2))


@merge_method(returns=PARAM, label="Strict opposite mask", category="masks", elementwise=True,
              help="Like the opposite mask, but zero unless A and B lie on opposite sides of C: "
                   "2·max(0, (C - A)(B - C)) / max(|A - C|, |B - C|)².")
def add_strict_opposite_mask(a=Tensor(SAME), b=Tensor(SAME), c=Tensor(SAME), alpha=_alpha()):
    c_to_a = c - a
    b_from_c = b - c
    threshold = c_to_a.abs()
    torch.maximum(threshold, b_from_c.abs(), out=threshold)
    ratio = c_to_a.mul_(b_from_c).div_(threshold.square_())
    del b_from_c, threshold
    return ratio.nan_to_num_(nan=0.0).clamp_(min=0).mul_(_scaled(alpha, 2))
