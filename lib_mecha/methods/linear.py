"""Linear merges: interpolation, differences, averages and spherical interpolation.

Identifiers, parameter names, defaults and meanings are sd-mecha's (reference §3.1), so
recipes travel between the two libraries.
"""
from __future__ import annotations

import torch

from .registry import merge_method
from .spec import DELTA, SAME, WEIGHT, Float, Tensor


@merge_method(returns=SAME, label="Weighted sum", category="linear", elementwise=True,
              help="Linear interpolation: (1 - alpha)·A + alpha·B.")
def weighted_sum(a=Tensor(SAME), b=Tensor(SAME),
                 alpha=Float(0.5, soft_minimum=0.0, soft_maximum=1.0, per_key=True,
                             help="How much of B: 0 keeps A, 1 gives B.")):
    return torch.lerp(a, b, alpha)


@merge_method(returns=SAME, varargs=Tensor(SAME), label="Average", category="linear", elementwise=True,
              accumulates=True, help="The arithmetic mean of any number of models.")
def n_average(*models):
    # accumulates: the first model is this call's own buffer, the others may still be float16
    # (see spec.py), so each input is converted while it is added, in one pass
    total = models[0]
    for m in models[1:]:
        total.add_(m)
    return total.div_(len(models)) if len(models) > 1 else total


@merge_method(returns=DELTA, label="Subtract", category="linear", elementwise=True, accumulates=True,
              help="The difference A - B between two models (a delta).")
def subtract(a=Tensor(WEIGHT), b=Tensor(WEIGHT)):
    return a.sub_(b)  # accumulates: ``a`` is this call's own buffer (see spec.py)


@merge_method(returns=SAME, label="Add difference", category="linear", elementwise=True, accumulates=True,
              help="A + alpha·D: adds a difference (delta) to a model.")
def add_difference(a=Tensor(SAME), b=Tensor(DELTA, help="the difference to add"),
                   alpha=Float(1.0, soft_minimum=-1.0, soft_maximum=2.0, per_key=True,
                               help="Strength of the difference.")):
    # accumulates: ``a`` is this call's own buffer (see spec.py)
    if isinstance(alpha, torch.Tensor):
        return a.addcmul_(b, alpha)
    return a.add_(b, alpha=alpha)


@merge_method(returns=DELTA, label="Scale", category="linear", elementwise=True,
              help="alpha·D: scales a difference.")
def scale(a=Tensor(DELTA), alpha=Float(1.0, soft_minimum=-2.0, soft_maximum=2.0, per_key=True,
                                       help="Factor applied to the difference.")):
    return a * alpha


@merge_method(returns=SAME, label="Spherical interpolation", category="linear",
              help="Interpolates along the arc between A and B (whole tensor), "
                   "with the norm interpolated linearly; parallel tensors fall back to a weighted sum.")
def slerp(a=Tensor(SAME), b=Tensor(SAME),
          alpha=Float(0.5, soft_minimum=0.0, soft_maximum=1.0, per_key=True, help="0 keeps A, 1 gives B.")):
    norm_a = torch.linalg.vector_norm(a)
    norm_b = torch.linalg.vector_norm(b)
    if norm_a == 0 or norm_b == 0:
        return torch.lerp(a, b, alpha)
    unit_a = a / norm_a
    unit_b = b / norm_b
    omega = torch.arccos((unit_a * unit_b).sum().clamp(-1, 1))
    sin_omega = torch.sin(omega)
    if sin_omega.abs() < 1e-6:
        return torch.lerp(a, b, alpha)
    alpha_t = torch.as_tensor(alpha, dtype=a.dtype, device=a.device)
    result = (unit_a * torch.sin((1 - alpha_t) * omega) + unit_b * torch.sin(alpha_t * omega)) / sin_omega
    return result * torch.lerp(norm_a, norm_b, alpha_t)
