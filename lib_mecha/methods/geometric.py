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

from ..memory import Scratch
from ..workspace import ranges
from ._values import as_tensor_like, largest_magnitude, slices
from .registry import merge_method
from .spec import SAME, Float, KeyWorkspace, Tensor

BLOCK_ELEMENTS = 1 << 16  # elementwise methods with many steps: a dozen buffers of this size stay in cache


@merge_method(returns=SAME, label="Perpendicular component", category="geometric",
              help="The part of B at right angles to A (B minus its projection on A, whole tensor).",
              notes=("When A is all zeros or the result is not finite, the result is zeros, as in sd-mecha.",))
def perpendicular_component(a=Tensor(SAME), b=Tensor(SAME), work=KeyWorkspace()):
    if a.numel() == 0:
        return a.clone()
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    spans = slices(flat_a.numel())
    # a·a and a·b in float64, so that large norms neither overflow nor lose the small projection;
    # one partial sum per slice, added in slice order (the same result on any number of threads)
    partial = {}

    def dots(start: int, end: int, scratch: Scratch) -> None:
        x = scratch.get("a", end - start, torch.float64).copy_(flat_a[start:end])
        y = scratch.get("b", end - start, torch.float64).copy_(flat_b[start:end])
        partial[start] = torch.stack([torch.dot(x, x), torch.dot(x, y)])

    work.for_each_range(spans, dots, lambda: work.scratch(a))
    squared_norm, dot = sum(partial[start] for start, _ in spans).tolist()
    projection = dot / squared_norm if squared_norm > 0 else math.nan
    if not math.isfinite(projection):
        return torch.zeros_like(a)
    result = work.empty_like(flat_a)
    finite = {}

    def subtract_projection(start: int, end: int, _) -> None:
        out = torch.mul(flat_a[start:end], -projection, out=result[start:end]).add_(flat_b[start:end])
        finite[start] = math.isfinite(largest_magnitude(out))  # NaN and inf propagate

    work.for_each_range(spans, subtract_projection)
    if not all(finite.values()):
        return torch.zeros_like(a)
    return result.view(a.shape)


@merge_method(returns=SAME, label="Geometric sum", category="geometric", elementwise=True,
              help="Weighted geometric mean A^(1-alpha)·B^alpha, element by element "
                   "(real part, so negative weights work).")
def geometric_sum(a=Tensor(SAME), b=Tensor(SAME),
                  alpha=Float(0.5, soft_minimum=0.0, soft_maximum=1.0, per_key=True,
                              help="0 keeps A, 1 gives B; in between, a geometric rather than arithmetic mix.")):
    if isinstance(alpha, torch.Tensor) and alpha.numel() > 1:
        alpha_t = as_tensor_like(alpha, a)
        angle = (a < 0).to(a.dtype) * (1 - alpha_t) + (b < 0).to(a.dtype) * alpha_t
        return a.abs().pow(1 - alpha_t).mul_(b.abs().pow(alpha_t)).mul_(torch.cos(angle * math.pi))
    alpha = float(alpha)
    if alpha == 0:
        return a
    if alpha == 1:
        return b
    # |a|^(1-α)·|b|^α as one exp of a log-sum: three transcendental passes instead of four
    modulus = a.abs().log_().mul_(1 - alpha).add_(b.abs().log_(), alpha=alpha).exp_()
    # the principal branch's angle π·((1-α)·[a<0] + α·[b<0]); arithmetic on the sign masks is
    # cheaper than selecting among four constants with torch.where
    angle = (a < 0).to(a.dtype).mul_((1 - alpha) * math.pi).add_((b < 0).to(a.dtype), alpha=alpha * math.pi)
    return modulus.mul_(angle.cos_())


@merge_method(returns=SAME, label="Multiply quotient", category="geometric", elementwise=True,
              help="A·(B/C)^alpha': multiplies A by B's ratio to C, where A and B moved away from C "
                   "in opposite log-directions; elsewhere keeps A.")
def multiply_quotient(a=Tensor(SAME), b=Tensor(SAME), c=Tensor(SAME),
                      alpha=Float(1.0, soft_minimum=0.0, soft_maximum=2.0, per_key=True,
                                  help="Strength of the quotient; 0 keeps A."),
                      work=KeyWorkspace()):
    a, b, c = (t.contiguous() for t in torch.broadcast_tensors(a, b, c))
    alpha = as_tensor_like(alpha, a)
    alpha = float(alpha) if alpha.numel() == 1 else alpha.expand(a.shape).reshape(-1)
    flat = [t.reshape(-1) for t in (a, b, c)]
    out = work.empty_like(flat[0])
    # block by block: the dozen steps below stay in the core's cache (with whole-slice
    # temporaries, each a fresh allocation, the method costs several times as much)
    work.for_each_range(ranges(out.numel(), BLOCK_ELEMENTS),
                        lambda start, end, scratch: _multiply_quotient_block(
                            *(t[start:end] for t in flat), alpha if isinstance(alpha, float) else alpha[start:end],
                            out[start:end], scratch),
                        lambda: work.scratch(out))
    return out.view(a.shape)


def _multiply_quotient_block(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, alpha, out: torch.Tensor,
                             scratch: Scratch) -> None:
    n = a.numel()
    log_c = torch.abs(c, out=scratch.get("log_c", n)).log_()
    log_a = torch.abs(a, out=scratch.get("log_a", n)).log_().sub_(log_c)
    log_b = torch.abs(b, out=scratch.get("log_b", n)).log_().sub_(log_c)  # log|b/c|, reused for the modulus
    threshold = torch.abs(log_a, out=log_c)
    torch.maximum(threshold, torch.abs(log_b, out=out), out=threshold)
    weight = log_a.mul_(log_b).div_(threshold.square_())
    exponent = weight.nan_to_num_(nan=0.0).neg_().clamp_(min=0).mul_(alpha)
    modulus = log_b.mul_(exponent).exp_()  # |b/c|^exponent
    # b/c < 0: the principal branch adds the angle π·exponent (cos 0 = 1 elsewhere); comparisons
    # written into floats (1 or 0) cost a fraction of bool masks
    negative = torch.lt(b, 0, out=threshold).sub_(torch.lt(c, 0, out=out)).abs_()
    result = exponent.mul_(negative).mul_(math.pi).cos_().mul_(modulus).mul_(a)
    torch.where(torch.isnan(result), a, result, out=out)
