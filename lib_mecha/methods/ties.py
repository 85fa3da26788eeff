"""Multi-model merges of differences: TIES, Model Stock and the geometric median.

Identifiers, parameter names, defaults and meanings are sd-mecha's (reference §3.2), so
recipes travel between the two libraries, including ``ties_sum_extended``'s inverted
``apply_stock`` flag (its label and help say what it really does).

Memory: nothing here stacks the inputs. TIES walks the deltas twice (elect, then sum the
agreeing entries) and keeps only a few key-sized tensors besides the inputs, so three SD1.5
deltas fit in the engine's default budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from ._values import at_least_1d, finite_or_zero_, scalar
from .registry import merge_method
from .spec import DELTA, SAME, Bool, Float, Int, Tensor

K_HELP = "Fraction of each difference kept, by magnitude: 1 keeps everything, 0.2 keeps the largest 20%."
VOTE_HELP = "Elect each element's sign by the sum of the differences instead of a majority of their signs."


# parameter descriptors shared with dare.py (same names, defaults and meaning as sd-mecha)
def k_param(default: float):
    return Float(default, minimum=0.0, maximum=1.0, per_key=True, label="Keep fraction (k)", help=K_HELP)


VOTE_SGN = Bool(False, label="Elect sign by sum", help=VOTE_HELP)
COS_EPS = Float(1e-6, minimum=0.0, label="Cosine epsilon", help="Guards Model Stock's cosine against zero norms.")
MEDIAN_EPS = Float(1e-6, minimum=0.0, minimum_open=True, label="Median epsilon",
                   help="Geometric median: smallest distance used.")
MAXITER = Int(100, minimum=0, label="Median iterations", help="Geometric median: most iterations.")
FTOL = Float(1e-20, minimum=0.0, label="Median tolerance",
             help="Geometric median: stop when the mean distance changes by less than this fraction.")
APPLY_MEDIAN = Bool(False, label="Geometric median",
                    help="Combine the agreeing differences by their geometric median instead of their mean "
                         "(ignores the Model Stock setting).")


SAMPLED_SELECTION_ABOVE = 1 << 20  # elements; below this kthvalue on the whole tensor is as fast


def kth_smallest(values: torch.Tensor, rank: int) -> torch.Tensor:
    """Exactly ``values.kthvalue(rank)`` of a 1-D tensor, found faster for large tensors: a strided
    sample brackets the answer, and only the values inside the bracket are selected from."""
    n = values.numel()
    if n <= SAMPLED_SELECTION_ABOVE:
        return values.kthvalue(rank).values
    sample = values[::max(1, n // 65536)].clone()
    m = sample.numel()
    q = rank / n
    margin = 4 * math.sqrt(m * q * (1 - q)) + 16
    low = sample.kthvalue(max(1, int(q * m - margin))).values
    high = sample.kthvalue(min(m, int(q * m + margin) + 1)).values
    at_least_low = values >= low
    below = n - int(torch.count_nonzero(at_least_low))
    if low == high:  # a value shared by many entries (sparse deltas: 0): count it, do not copy it
        above = int(torch.count_nonzero(values > high))
        if below < rank <= n - above:
            return low
    band = values[at_least_low.logical_and_(values <= high)]
    if below < rank <= below + band.numel():
        return band.kthvalue(rank - below).values
    return values.kthvalue(rank).values  # the sample misled us: select from everything


def trim_threshold(delta: torch.Tensor, k: float) -> Optional[torch.Tensor]:
    """The smallest magnitude TIES keeps: the ``max(int((1-k)·n), 1)``-th smallest ``|delta|``;
    None when that is the smallest one (k = 1), so that everything is kept."""
    rank = max(int((1 - k) * delta.numel()), 1)
    if rank == 1:
        return None
    magnitudes = delta.abs().flatten()
    if magnitudes.dtype not in (torch.float32, torch.float64):
        magnitudes = magnitudes.float()
    return kth_smallest(magnitudes, rank).to(delta.dtype)


def trimmed_sign(delta: torch.Tensor, threshold: Optional[torch.Tensor]) -> torch.Tensor:
    """int8 sign of the trimmed delta: ±1 where ``|delta| ≥ threshold`` (and nonzero), else 0."""
    if threshold is None or threshold <= 0:
        positive, negative = delta > 0, delta < 0
    else:
        positive, negative = delta >= threshold, delta <= -threshold
    # bool and int8 share a layout: view instead of converting
    return positive.view(torch.int8).sub_(negative.view(torch.int8))


@dataclass
class TiesReduction:
    """What TIES leaves after trim and elect: the sum and count of the agreeing entries, and
    optionally the mean cosine between consecutive filtered deltas (per row, for Model Stock)
    or the filtered deltas themselves (for the geometric median)."""

    total: torch.Tensor
    count: torch.Tensor  # an integer tensor
    cos_mean: Optional[torch.Tensor] = None
    filtered: Optional[List[torch.Tensor]] = None


def row_cosine(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """torch's cosine_similarity along the last dimension, with one key-sized temporary."""
    dots = (x * y).sum(dim=-1)
    norms = (torch.linalg.vector_norm(x, dim=-1).clamp_(min=eps)
             * torch.linalg.vector_norm(y, dim=-1).clamp_(min=eps))
    return dots / norms


def ties_reduce(deltas: Sequence[torch.Tensor], k: float, vote_sgn: bool, *, owned: bool = False,
                cos_eps: Optional[float] = None, keep_filtered: bool = False) -> TiesReduction:
    """Trim, elect and sum in two streaming passes over the deltas.

    Each trimmed delta is remembered only as an int8 sign (one byte per element); the sum and
    count take the entries whose sign equals the elected one. Entries where the vote is a tie
    (elected sign 0) contribute nothing, so they end up 0 as in sd-mecha. Fresh key-sized
    tensors cost page faults, so scratch buffers are reused; ``owned`` deltas (the caller's
    scratch copies) are filtered in place.
    """
    first = deltas[0]
    counter = torch.int8 if len(deltas) < 127 else torch.int32
    signs = []
    vote = torch.zeros(first.shape, dtype=first.dtype if vote_sgn else counter, device=first.device)
    buffers = [torch.empty_like(first)] if vote_sgn else []
    zero = first.new_zeros(())
    for d in deltas:
        sign = trimmed_sign(d, trim_threshold(d, k))
        if vote_sgn:
            vote += torch.where(sign != 0, d, zero, out=buffers[0])
        else:
            vote += sign
        signs.append(sign)
    elected = torch.sign(vote).to(torch.int8)
    del vote
    elected.masked_fill_(elected == 0, 2)  # a tie matches no delta's sign
    total = torch.zeros_like(first)
    count = torch.zeros(first.shape, dtype=counter, device=first.device)
    agrees = torch.empty(first.shape, dtype=torch.bool, device=first.device)
    cos_sum, previous, filtered = None, None, []
    for i, (d, sign) in enumerate(zip(deltas, signs)):
        torch.eq(sign, elected, out=agrees)
        count += agrees.view(torch.int8) if counter == torch.int8 else agrees
        if owned:
            kept = d.masked_fill_(agrees.logical_not(), 0)
        elif keep_filtered:
            kept = torch.where(agrees, d, zero)
        else:  # two alternating buffers: the previous filtered delta is still needed for the cosine
            while len(buffers) < 2:
                buffers.append(torch.empty_like(first))
            kept = torch.where(agrees, d, zero, out=buffers[i % 2])
        total += kept
        if cos_eps is not None:
            if previous is not None:
                cos = row_cosine(previous, kept, cos_eps)
                cos_sum = cos if cos_sum is None else cos_sum + cos
            previous = kept
        if keep_filtered:
            filtered.append(kept)
        del kept
    cos_mean = None if cos_sum is None else cos_sum / (len(deltas) - 1)
    return TiesReduction(total, count, cos_mean, filtered if keep_filtered else None)


def stock_factor(cos_mean: Optional[torch.Tensor], n: int, like: torch.Tensor) -> torch.Tensor:
    """Model Stock's ``t = n·cosθ / (1 + (n-1)·cosθ)``, shaped to broadcast per row; 1 for one delta."""
    if n < 2 or cos_mean is None:
        return torch.ones((), dtype=like.dtype, device=like.device)
    return (n * cos_mean / (1 + (n - 1) * cos_mean)).unsqueeze(-1)


def model_stock_t(deltas: Sequence[torch.Tensor], cos_eps: float) -> torch.Tensor:
    """Model Stock's factor from the mean cosine between consecutive deltas along the last
    dimension (so one factor per row)."""
    n = len(deltas)
    if n < 2:
        return stock_factor(None, n, deltas[0])
    cos_mean = sum(row_cosine(deltas[i], deltas[i + 1], cos_eps) for i in range(n - 1)) / (n - 1)
    return stock_factor(cos_mean, n, deltas[0])


@merge_method(returns=DELTA, varargs=Tensor(DELTA), label="TIES", category="ties",
              help="TIES-merging: trim each difference to its largest entries, elect a sign per element, "
                   "and average the differences that agree with it.")
def ties_sum(*models, k=k_param(1.0), vote_sgn=VOTE_SGN):
    first = models[0]
    if first.numel() == 0:
        return first.clone()
    (*deltas,), restore = at_least_1d(*models)
    reduction = ties_reduce(deltas, scalar("ties_sum", "k", k), vote_sgn)
    return restore(finite_or_zero_(reduction.total.div_(reduction.count)))


@merge_method(returns=DELTA, varargs=Tensor(DELTA), label="TIES (extended)", category="ties",
              help="TIES with Model Stock scaling (on by default) or a geometric median of the agreeing "
                   "differences instead of their mean.",
              notes=("apply_stock is inverted, as in sd-mecha: false (the default) APPLIES the Model Stock "
                     "factor, true gives plain TIES. The UI shows it as 'Skip Model Stock scaling'.",))
def ties_sum_extended(*models, k=k_param(0.2), vote_sgn=VOTE_SGN,
                      apply_stock=Bool(False, label="Skip Model Stock scaling",
                                       help="Inverted name kept from sd-mecha: when false (default) the result is "
                                            "scaled by Model Stock's factor; true gives plain TIES."),
                      apply_median=APPLY_MEDIAN, cos_eps=COS_EPS, eps=MEDIAN_EPS, maxiter=MAXITER, ftol=FTOL):
    return _ties_extended(models, scalar("ties_sum_extended", "k", k), vote_sgn, apply_stock, apply_median,
                          cos_eps, eps, maxiter, ftol)


def _ties_extended(models, k, vote_sgn, apply_stock, apply_median, cos_eps, eps, maxiter, ftol, owned=False):
    first = models[0]
    if first.numel() == 0:
        return first.clone()
    (*deltas,), restore = at_least_1d(*models)
    stock = not apply_median and not apply_stock
    reduction = ties_reduce(deltas, k, vote_sgn, owned=owned, cos_eps=cos_eps if stock else None,
                            keep_filtered=apply_median)
    if apply_median:
        result = weiszfeld(reduction.filtered, eps, maxiter, ftol)
    elif stock:
        factor = stock_factor(reduction.cos_mean, len(deltas), reduction.total)
        result = reduction.total.mul_(factor).div_(reduction.count)
    else:
        result = reduction.total.div_(reduction.count)
    return restore(finite_or_zero_(result))


@merge_method(returns=DELTA, varargs=Tensor(DELTA), label="Model Stock", category="ties",
              help="Average of the differences, scaled by how well they agree (Model Stock, per row).")
def model_stock(*deltas, cos_eps=COS_EPS):
    first = deltas[0]
    if first.numel() == 0:
        return first.clone()
    (*flat,), restore = at_least_1d(*deltas)
    total = flat[0].clone()
    for d in flat[1:]:
        total += d
    factor = model_stock_t(flat, cos_eps) / len(flat)  # per row: small
    return restore(total.mul_(factor).nan_to_num_())


@merge_method(returns=SAME, varargs=Tensor(SAME), label="Geometric median", category="ties",
              help="The point with the least total distance to all models (Weiszfeld's algorithm, "
                   "whole-tensor distances); robust to one outlier model.")
def geometric_median(*models, eps=MEDIAN_EPS, maxiter=MAXITER, ftol=FTOL):
    if models[0].numel() == 0:
        return models[0].clone()
    return weiszfeld(models, eps, maxiter, ftol)


def weiszfeld(points: Sequence[torch.Tensor], eps: float, maxiter: int, ftol: float) -> torch.Tensor:
    """Weiszfeld iterations from the mean: weights 1/max(‖x_i - m‖, eps), until the mean distance
    changes by at most ``ftol`` of itself. Two key-sized buffers are reused by every iteration
    (the median and a difference), since up to ``maxiter`` iterations may run per key."""
    median = torch.empty_like(points[0])
    difference = torch.empty_like(points[0])

    def weighted_mean(weights):
        total = float(sum(weights))
        torch.mul(points[0], weights[0] / total, out=median)
        for p, w in zip(points[1:], weights[1:]):
            median.add_(p, alpha=w / total)

    def distances():
        return torch.stack([torch.linalg.vector_norm(torch.sub(p, median, out=difference)) for p in points])

    weighted_mean([1.0] * len(points))
    current = distances()
    objective = current.mean()
    for _ in range(max(0, int(maxiter))):
        weighted_mean((1 / torch.clamp(current, min=eps)).tolist())
        current = distances()
        previous, objective = objective, current.mean()
        if abs(previous - objective) <= ftol * objective:
            break
    return median
