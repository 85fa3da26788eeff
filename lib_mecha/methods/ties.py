"""Multi-model merges of differences: TIES, Model Stock and the geometric median.

Identifiers, parameter names, defaults and meanings are sd-mecha's (reference §3.2), so
recipes travel between the two libraries, including ``ties_sum_extended``'s inverted
``apply_stock`` flag (its label and help say what it really does).

Memory: nothing here stacks the inputs or makes key-sized temporaries. After the per-delta
trim thresholds (one selection pass each, :mod:`._trim`), all the work runs slice by slice
over reused buffers, in float arithmetic (torch's bool-producing ops cost several times a
float op), and writes straight into the one key-sized result; row statistics are in
:mod:`._rows`, the geometric median in :mod:`._median`.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch

from ..memory import Scratch
from ..workspace import Workspace
from ._median import weiszfeld
from ._rows import mean_consecutive_cosine, stock_factor_
from ._trim import TrimmedSlices
from ._values import at_least_1d, finite_or_zero_, scalar, slices
from .registry import merge_method
from .spec import DELTA, SAME, Bool, Float, Int, KeyWorkspace, Tensor

NON_FINITE_NOTE = ("An element where some difference is NaN or infinite comes out 0 (with the geometric median, "
                   "such entries are left out instead).")
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


def sum_into(out: torch.Tensor, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The sum of ``tensors``, added in order, written into ``out``."""
    if len(tensors) == 1:
        return out.copy_(tensors[0])
    torch.add(tensors[0], tensors[1], out=out)
    for t in tensors[2:]:
        out.add_(t)
    return out


class SignElection:
    """TIES's elect-and-average over one slice, in float arithmetic.

    An element's elected sign is that of the sum of its entries' signs (a majority, 0 on a tie),
    or with ``vote_sgn`` that of the sum of the entries. An entry agrees when its sign times the
    elected one is 1; the result is the sum of the agreeing entries, taken in delta order (so
    bitwise that of summing them), over their count, and 0 where the vote ties.
    """

    @staticmethod
    def elect(trimmed: Sequence[torch.Tensor], vote_sgn: bool, scratch: Scratch):
        """``(elected, signs)``: the elected sign per element, and each entry's sign (buffers)."""
        n = trimmed[0].numel()
        signs = [torch.sign(t, out=scratch.get(("sign", i), n)) for i, t in enumerate(trimmed)]
        votes = sum_into(scratch.get("votes", n), trimmed if vote_sgn else signs)
        return votes.sign_(), signs

    @staticmethod
    def agreeing(trimmed: Sequence[torch.Tensor], signs: List[torch.Tensor], elected: torch.Tensor,
                 total: torch.Tensor, kept: List[torch.Tensor]) -> torch.Tensor:
        """Each delta's agreeing entries (others 0) into ``kept``, and their sum, in delta order,
        into ``total``. Turns ``signs`` into the agreement masks (1 where an entry agrees, else 0)."""
        for i, (t, agrees) in enumerate(zip(trimmed, signs)):
            agrees.mul_(elected).clamp_min_(0)
            torch.mul(t, agrees, out=kept[i])
            if i == 0:
                total.copy_(kept[0])
            else:
                total.add_(kept[i])
        return total

    @staticmethod
    def mean(trimmed: Sequence[torch.Tensor], signs: List[torch.Tensor], elected: torch.Tensor, scratch: Scratch,
             out: torch.Tensor, kept: Optional[List[torch.Tensor]] = None, zero_non_finite: bool = True
             ) -> torch.Tensor:
        """The mean of the agreeing entries into ``out`` (0 where it is not finite, see
        NON_FINITE_NOTE, unless the caller zeroes those later); with ``kept``, each delta's
        agreeing entries (others 0) too. Overwrites ``signs``."""
        n = out.numel()
        total, count = scratch.get("total", n), scratch.get("count", n)
        if kept is not None:
            SignElection.agreeing(trimmed, signs, elected, total, kept)
        else:
            for i, (t, agrees) in enumerate(zip(trimmed, signs)):
                agrees.mul_(elected).clamp_min_(0)  # 1 where the entry has the elected sign, else 0
                if i == 0:
                    torch.mul(t, agrees, out=total)
                else:
                    total.addcmul_(t, agrees)  # t·agrees is exact, so this is the plain sum
        sum_into(count, signs)
        mean = torch.div(total, count.clamp_min_(1), out=out)
        return finite_or_zero_(mean) if zero_non_finite else mean


def ties_reduce(deltas: Sequence[torch.Tensor], k: float, vote_sgn: bool, work: Workspace, *,
                stock_eps: Optional[float] = None, divisor=None) -> torch.Tensor:
    """Trim, elect and average, one slice at a time. With ``stock_eps`` each row is then scaled by
    Model Stock's factor from the mean cosine between consecutive filtered deltas (rows are kept
    whole; a factor that is not finite gives 0), and with ``divisor`` (a number, or a tensor of the
    deltas' shape) the result is divided by it: in the same pass over each slice, on the granted
    threads, instead of further passes over the whole result on one thread."""
    first = deltas[0]
    shape, n = first.shape, first.numel()
    row = shape[-1] if stock_eps is not None else 1
    trimmed = TrimmedSlices(deltas, k, work)
    mean = work.empty(n, first.dtype, first.device)
    divide = _slicer(divisor, first)

    def reduce(start: int, end: int, scratch: Scratch) -> None:
        out = mean[start:end]
        parts = trimmed.all(start, end, scratch)
        elected, signs = SignElection.elect(parts, vote_sgn, scratch)
        if stock_eps is None:
            SignElection.mean(parts, signs, elected, scratch, out)
        else:
            kept = [scratch.get(("kept", i), end - start) for i in range(len(parts))]
            # the Model Stock factor's product is zeroed where not finite: once is enough
            SignElection.mean(parts, signs, elected, scratch, out, kept, zero_non_finite=len(kept) < 2)
            if len(kept) > 1:
                rows = (end - start) // row
                cos_mean = mean_consecutive_cosine([x.view(rows, row) for x in kept], stock_eps, scratch)
                finite_or_zero_(out.view(rows, row).mul_(stock_factor_(cos_mean, len(kept), scratch)))
        if divide is not None:
            out.div_(divide(start, end))

    work.for_each_range(slices(n, row), reduce, lambda: work.scratch(first))
    return mean.view(shape)


def _slicer(value, like: torch.Tensor):
    """``(start, end) -> value's elements start:end`` of a per-key value (a number or a tensor
    broadcast to ``like``'s shape); None for None."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor) or value.numel() == 1:
        number = float(value)
        return lambda start, end: number
    flat = value.expand(like.shape).reshape(-1)
    return lambda start, end: flat[start:end]


def filtered_deltas(deltas: Sequence[torch.Tensor], k: float, vote_sgn: bool, work: Workspace):
    """A function ``(start, end, scratch) -> [filtered slice of each delta]``: TIES's agreeing
    entries, the rest 0 (for the geometric median, which needs them twice). Non-finite entries
    count as 0."""
    trimmed = TrimmedSlices(deltas, k, work)

    def get(start: int, end: int, scratch: Scratch):
        kept = [scratch.get(("kept", i), end - start) for i in range(len(deltas))]
        total = scratch.get("total", end - start)
        # Zeroing non-finite entries costs a pass per delta, so it is done only for a slice that
        # has them: any such entry makes the sum of the agreeing entries non-finite (masked out,
        # it is NaN·0 = NaN), and then the slice is filtered again, zeroing them first.
        for finite_only in (False, True):
            parts = trimmed.all(start, end, scratch, finite_only)
            elected, signs = SignElection.elect(parts, vote_sgn, scratch)
            SignElection.agreeing(parts, signs, elected, total, kept)
            if finite_only or math.isfinite(float(total.sum())):
                return kept
    return get


@merge_method(returns=DELTA, varargs=Tensor(DELTA), label="TIES", category="ties",
              help="TIES-merging: trim each difference to its largest entries, elect a sign per element, "
                   "and average the differences that agree with it.",
              notes=(NON_FINITE_NOTE,))
def ties_sum(*models, k=k_param(1.0), vote_sgn=VOTE_SGN, work=KeyWorkspace()):
    first = models[0]
    if first.numel() == 0:
        return first.clone()
    (*deltas,), restore = at_least_1d(*models)
    return restore(ties_reduce(deltas, scalar("ties_sum", "k", k), vote_sgn, work))


@merge_method(returns=DELTA, varargs=Tensor(DELTA), label="TIES (extended)", category="ties",
              help="TIES with Model Stock scaling (on by default) or a geometric median of the agreeing "
                   "differences instead of their mean.",
              notes=("apply_stock is inverted, as in sd-mecha: false (the default) APPLIES the Model Stock "
                     "factor, true gives plain TIES. The UI shows it as 'Skip Model Stock scaling'.",
                     NON_FINITE_NOTE))
def ties_sum_extended(*models, k=k_param(0.2), vote_sgn=VOTE_SGN,
                      apply_stock=Bool(False, label="Skip Model Stock scaling",
                                       help="Inverted name kept from sd-mecha: when false (default) the result is "
                                            "scaled by Model Stock's factor; true gives plain TIES."),
                      apply_median=APPLY_MEDIAN, cos_eps=COS_EPS, eps=MEDIAN_EPS, maxiter=MAXITER, ftol=FTOL,
                      work=KeyWorkspace()):
    return ties_extended(models, scalar("ties_sum_extended", "k", k), vote_sgn, apply_stock, apply_median,
                         cos_eps, eps, maxiter, ftol, work)


def ties_extended(models, k, vote_sgn, apply_stock, apply_median, cos_eps, eps, maxiter, ftol, work: Workspace,
                  divisor=None):
    """ties_sum_extended's work, shared with TIES after DARE/DELLA dropout (which divides the
    result by the keep rate: ``divisor``)."""
    first = models[0]
    if first.numel() == 0:
        return first.clone()
    (*deltas,), restore = at_least_1d(*models)
    if apply_median:
        get = filtered_deltas(deltas, k, vote_sgn, work)
        result = finite_or_zero_(weiszfeld(get, len(deltas), deltas[0], eps, maxiter, ftol, work))
        return restore(result if divisor is None else result.div_(divisor))
    stock_eps = None if apply_stock else cos_eps  # apply_stock is inverted, as in sd-mecha
    return restore(ties_reduce(deltas, k, vote_sgn, work, stock_eps=stock_eps, divisor=divisor))


@merge_method(returns=DELTA, varargs=Tensor(DELTA), label="Model Stock", category="ties",
              help="Average of the differences, scaled by how well they agree (Model Stock, per row).")
def model_stock(*deltas, cos_eps=COS_EPS, work=KeyWorkspace()):
    first = deltas[0]
    if first.numel() == 0:
        return first.clone()
    (*flat,), restore = at_least_1d(*deltas)
    row = flat[0].shape[-1]
    n = len(flat)
    total = work.empty_like(flat[0]).view(-1, row)
    rows = [d.reshape(-1, row) for d in flat]

    def stock(start: int, end: int, scratch: Scratch) -> None:
        first_row, last_row = start // row, end // row
        part = [d[first_row:last_row] for d in rows]
        out = sum_into(total[first_row:last_row], part)
        if n > 1:  # Model Stock's factor from the mean cosine between consecutive deltas, per row
            out.mul_(stock_factor_(mean_consecutive_cosine(part, cos_eps, scratch), n, scratch).div_(n))
        out.nan_to_num_()

    work.for_each_range(slices(total.numel(), row), stock, lambda: work.scratch(first))
    return restore(total.view(flat[0].shape))


@merge_method(returns=SAME, varargs=Tensor(SAME), label="Geometric median", category="ties",
              help="The point with the least total distance to all models (Weiszfeld's algorithm, "
                   "whole-tensor distances); robust to one outlier model.")
def geometric_median(*models, eps=MEDIAN_EPS, maxiter=MAXITER, ftol=FTOL, work=KeyWorkspace()):
    if models[0].numel() == 0:
        return models[0].clone()
    flat = [m.reshape(-1) for m in models]
    return weiszfeld(lambda start, end, _: [f[start:end] for f in flat], len(models), models[0], eps, maxiter, ftol,
                     work)
