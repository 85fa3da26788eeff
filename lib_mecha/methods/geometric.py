"""Non-linear two- and three-model combinations: projections, geometric means, quotients.

Identifiers, parameter names, defaults and meanings are sd-mecha's (reference §3.1).
Negative bases of fractional powers follow the principal branch of the complex logarithm
(a negative number to the power t is ``|x|^t·e^{iπt}``) and only the real part is kept, as
sd-mecha does by computing in complex numbers; here the same value is computed with real
arithmetic, which is faster and needs half the memory.
"""
from __future__ import annotations

import math

import torch

from ._values import as_tensor_like
from .registry import merge_method
from .spec import SAME, Float, Tensor


@merge_method(returns=SAME, label="Perpendicular component", category="geometric",
              help="The part of B at right angles to A (B minus its projection on A, whole tensor).",
              notes=("When A is all zeros or the result is not finite, the result is zeros, as in sd-mecha.",))
def perpendicular_component(a=Tensor(SAME), b=Tensor(SAME)):
    norm_a = torch.linalg.vector_norm(a)
    # (a/|a|)·(b/|a|) rather than a·b/|a|² keeps large norms from overflowing
    projection = ((a / norm_a) * (b / norm_a)).sum()
    result = b - a * projection
    if not torch.isfinite(result).all():
        return torch.zeros_like(a)
    return result


def _power_parts(x: torch.Tensor, exponent):
    """``x^t`` on the principal branch as (modulus, angle): ``|x|^t`` and ``π·t·[x < 0]``."""
    modulus = x.abs().pow(exponent)
    angle = (x < 0).to(modulus.dtype) * exponent * math.pi
    return modulus, angle


@merge_method(returns=SAME, label="Geometric sum", category="geometric", elementwise=True,
              help="Weighted geometric mean A^(1-alpha)·B^alpha, element by element "
                   "(real part, so negative weights work).")
def geometric_sum(a=Tensor(SAME), b=Tensor(SAME),
                  alpha=Float(0.5, soft_minimum=0.0, soft_maximum=1.0, per_key=True,
                              help="0 keeps A, 1 gives B; in between, a geometric rather than arithmetic mix.")):
    alpha = as_tensor_like(alpha, a)
    a_part, a_angle = _power_parts(a, 1 - alpha)
    b_part, b_angle = _power_parts(b, alpha)
    return a_part * b_part * torch.cos(a_angle + b_angle)


@merge_method(returns=SAME, label="Multiply quotient", category="geometric", elementwise=True,
              help="A·(B/C)^alpha': multiplies A by B's ratio to C, where A and B moved away from C "
                   "in opposite log-directions; elsewhere keeps A.")
def multiply_quotient(a=Tensor(SAME), b=Tensor(SAME), c=Tensor(SAME),
                      alpha=Float(1.0, soft_minimum=0.0, soft_maximum=2.0, per_key=True,
                                  help="Strength of the quotient; 0 keeps A.")):
    log_c = torch.log(c.abs())
    log_ac = torch.log(a.abs()) - log_c
    log_bc = torch.log(b.abs()) - log_c
    threshold = torch.maximum(log_ac.abs(), log_bc.abs())
    weight = torch.clamp(-torch.nan_to_num(log_ac * log_bc / threshold ** 2, nan=0.0), min=0)
    exponent = as_tensor_like(alpha, a) * weight
    quotient = b / c
    powered, angle = _power_parts(quotient, exponent)
    result = a * powered * torch.cos(angle)
    return torch.where(torch.isnan(result), a, result)
