"""Multi-model merges of differences: TIES, Model Stock and the geometric median.

Identifiers, parameter names, defaults and meanings are sd-mecha's (reference §3.2), so
recipes travel between the two libraries, including ``ties_sum_extended``'s inverted
``apply_stock`` flag (its label and help say what it really does).

Speed and memory: nothing here stacks the inputs or makes key-sized temporaries. After the
per-delta trim thresholds (one selection pass each), all the work runs slice by slice over
reused buffers, in float arithmetic, and writes straight into the one key-sized result; the
geometric median iterates on the points' Gram matrix instead of on the tensors.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence

import torch

from .. import workers
from ..workers import Scratch
from ._values import at_least_1d, finite_or_zero_, scalar
from .registry import merge_method
from .spec import DELTA, SAME, Bool, Float, Int, Tensor

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


SAMPLED_SELECTION_ABOVE = 1 << 17  # elements; below this kthvalue on the whole tensor is as fast
# The elementwise work of these whole-tensor methods runs over slices of this many elements with
# reused buffers: key-sized temporaries would each fault their pages in and stream through
# memory, and torch's bool-producing ops (comparisons, where, masked_fill) cost 5-30x a float
# op, so the slices use float arithmetic only. The size is a compromise measured on the bench
# machine (TIES of three 29.5 M-element deltas, ns per element on one / two granted threads):
# 16 K: 14.1 / 18.2 (the threads queue for the GIL between small ops), 64 K: 10.4 / 8.8,
# 256 K: 11.3 / 6.8, 1 M: 12.8 / 6.7 (the buffers no longer fit in the core's cache).
SLICE_ELEMENTS = 1 << 18


def slices(n: int, row: int = 1):
    """``(start, end)`` ranges covering ``n`` elements, each a whole number of ``row``-long rows."""
    return workers.ranges(n, SLICE_ELEMENTS, row)


def kth_smallest_magnitude(values: torch.Tensor, rank: int) -> torch.Tensor:
    """Exactly ``values.abs().kthvalue(rank)`` of a 1-D tensor, found faster for large tensors: a
    strided sample brackets the answer, one pass over slices counts the entries below the bracket
    and keeps those inside it, and only those are selected from."""
    n = values.numel()
    if n <= SAMPLED_SELECTION_ABOVE:
        return values.abs().kthvalue(rank).values
    sample = values[::max(8, n // 65536)].abs()  # at most 65536 values, at most 1/8 of them
    m = sample.numel()
    q = rank / n
    margin = 4 * math.sqrt(m * q * (1 - q)) + 16
    low = sample.kthvalue(max(1, int(q * m - margin))).values
    high = sample.kthvalue(min(m, int(q * m + margin) + 1)).values
    # a value shared by many entries (sparse deltas: 0) brackets itself: counting is enough
    single = bool(low == high)
    zero_bracket = single and bool(low == 0)
    counted = {}  # slice start -> (entries below the bracket, entries inside it or their count)

    def count(start: int, end: int, scratch: Scratch) -> None:
        size = end - start
        if zero_bracket:  # nothing is below 0 in magnitude (NaN counts as neither)
            counted[start] = 0, size - _count_nonzero(values[start:end], scratch)
            return
        # comparisons into floats (1 or 0; NaN is neither below nor inside), summed exactly: a
        # slice has far fewer than 2^24 entries. A bool mask and count_nonzero cost 3x as much.
        a = torch.abs(values[start:end], out=scratch.get("magnitude", size))
        below = torch.lt(a, low, out=scratch.get("below", size))
        inside = torch.le(a, high, out=scratch.get("inside", size)).sub_(below)
        counted[start] = int(below.sum()), (int(inside.sum()) if single else _selected(a, inside.bool()))

    workers.for_each_range(slices(n), count, lambda: Scratch(values))
    below = sum(c for c, _ in counted.values())
    if single:
        if below < rank <= below + sum(c for _, c in counted.values()):
            return low
    else:
        band = torch.cat([counted[start][1] for start in sorted(counted)])
        if below < rank <= below + band.numel():
            return band.kthvalue(rank - below).values
    return values.abs().kthvalue(rank).values  # the sample misled us: select from everything


def _selected(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values[mask]`` (a bool mask), a new tensor. On the CPU numpy's boolean indexing does it:
    torch's goes through ``nonzero`` (measured at 256 K elements, 1% selected: 0.28 against
    0.86 ns per element). numpy has no bfloat16."""
    if values.device.type != "cpu" or values.dtype == torch.bfloat16:
        return values[mask]
    return torch.from_numpy(values.numpy()[mask.numpy()])


def _count_nonzero(values: torch.Tensor, scratch: Scratch) -> int:
    """``count_nonzero`` of a float slice (NaN counts, ±0 does not): a comparison into floats and
    their sum, exact for a slice (far fewer than 2^24 entries). Measured at 256 K elements: 0.27
    ns per element, against 1.26 for ``count_nonzero`` on floats."""
    return int(torch.ne(values, 0, out=scratch.get("nonzero", values.numel(), values.dtype)).sum())


def trim_threshold(delta: torch.Tensor, k: float) -> Optional[torch.Tensor]:
    """The smallest magnitude TIES keeps: the ``max(int((1-k)·n), 1)``-th smallest ``|delta|``;
    None when everything is kept: that is the smallest one (k = 1), or 0 (a sparse delta, such
    as one after DARE's dropout)."""
    rank = max(int((1 - k) * delta.numel()), 1)
    if rank == 1:
        return None
    flat = delta.flatten()
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    threshold = kth_smallest_magnitude(flat, rank)
    return None if threshold == 0 else threshold.to(delta.dtype)


def _shrink_below(threshold: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[float]:
    """hardshrink's ``lambd`` that keeps exactly the entries with ``|x| >= threshold``: it keeps
    ``|x| > lambd``, so lambd is the representable number just below the threshold."""
    if threshold is None:
        return None
    t = threshold.to(dtype)
    return float(torch.nextafter(t, torch.full_like(t, -math.inf)))


class TrimmedSlices:
    """The trimmed deltas of TIES, one slice at a time: entries below each delta's threshold are 0.

    Slices are read-only (without trimming they are the deltas themselves). Non-finite entries
    pass through, so the element they sit in comes out non-finite (and TIES then makes it 0);
    ``finite_only`` zeroes them instead, for the geometric median, whose distances span the
    whole tensor.
    """

    def __init__(self, deltas: Sequence[torch.Tensor], k: float):
        self.flat = [d.reshape(-1) for d in deltas]
        self.lambdas = [_shrink_below(trim_threshold(d, k), d.dtype) for d in deltas]

    def get(self, i: int, start: int, end: int, scratch: Scratch, finite_only: bool = False) -> torch.Tensor:
        source, lambd = self.flat[i][start:end], self.lambdas[i]
        if lambd is None and not finite_only:
            return source
        out = scratch.get(("trimmed", i), end - start)
        if finite_only:
            source = torch.nan_to_num(source, nan=0.0, posinf=0.0, neginf=0.0, out=out)
        if lambd is not None:
            torch.ops.aten.hardshrink.out(source, lambd, out=out)
        return out

    def all(self, start: int, end: int, scratch: Scratch, finite_only: bool = False) -> List[torch.Tensor]:
        return [self.get(i, start, end, scratch, finite_only) for i in range(len(self.flat))]


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


def ties_reduce(deltas: Sequence[torch.Tensor], k: float, vote_sgn: bool, *, stock_eps: Optional[float] = None,
                divisor=None) -> torch.Tensor:
    """Trim, elect and average, one slice at a time. With ``stock_eps`` each row is then scaled by
    Model Stock's factor from the mean cosine between consecutive filtered deltas (rows are kept
    whole; a factor that is not finite gives 0), and with ``divisor`` (a number, or a tensor of the
    deltas' shape) the result is divided by it: in the same pass over each slice, on the granted
    threads, instead of further passes over the whole result on one thread."""
    first = deltas[0]
    shape, n = first.shape, first.numel()
    row = shape[-1] if stock_eps is not None else 1
    trimmed = TrimmedSlices(deltas, k)
    mean = workers.empty(n, first.dtype, first.device)
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

    workers.for_each_range(slices(n, row), reduce, lambda: Scratch(first))
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


def filtered_deltas(deltas: Sequence[torch.Tensor], k: float, vote_sgn: bool):
    """A function ``(start, end, scratch) -> [filtered slice of each delta]``: TIES's agreeing
    entries, the rest 0 (for the geometric median, which needs them twice). Non-finite entries
    count as 0."""
    trimmed = TrimmedSlices(deltas, k)

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


# Rows at most this long (a conv weight's kernel width: 3) are summed by adding their columns:
# torch's reductions over a few elements per row cost 3-15x as much (measured, rows of 3).
SHORT_ROW = 16


def _row_sums(t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The sums of ``t``'s rows (its last dimension), into ``out``."""
    width = t.shape[-1]
    if width > SHORT_ROW or width < 2:
        return torch.sum(t, dim=-1, out=out)
    torch.add(t[..., 0], t[..., 1], out=out)
    for column in range(2, width):
        out.add_(t[..., column])
    return out


class _RowBuffers:
    """Named buffers for the row statistics below, from a loop's Scratch: a fresh product of a
    slice's size faults its pages in every time (measured, Model Stock on rows of 3: 1.6 ns per
    element for ``x * y`` against 0.4 into a reused buffer)."""

    def __init__(self, like: torch.Tensor, scratch: Optional[Scratch]):
        self.scratch = scratch if scratch is not None else Scratch(like)
        self.dtype = like.dtype

    def product(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x * y``, in a buffer that the next call overwrites."""
        return torch.mul(x, y, out=self.scratch.get("row product", x.numel(), self.dtype).view(x.shape))

    def rows(self, name, like: torch.Tensor) -> torch.Tensor:
        """A buffer with one element per row of ``like``."""
        return self.scratch.get(("row", name), like[..., 0].numel(), self.dtype).view(like.shape[:-1])


# The smallest normal float32. MKL's square root takes a slow path for 0 (and subnormals):
# measured, 2.4 ns per element for mostly-zero rows (a sparse delta after TIES's trim or DARE's
# dropout) against 0.23 for others.
_TINY = torch.finfo(torch.float32).tiny


def _row_norms(x: torch.Tensor, eps: float, buffers: _RowBuffers, name="norm") -> torch.Tensor:
    out = buffers.rows(name, x)
    if x.shape[-1] > SHORT_ROW:
        norms = torch.linalg.vector_norm(x, dim=-1, out=out)
    else:
        squares = _row_sums(buffers.product(x, x), out)
        if 2 * math.sqrt(_TINY) <= eps:  # raising sums below _TINY to it leaves max(√sum, eps) as it was
            squares.clamp_(min=_TINY)
        norms = squares.sqrt_()
    return norms.clamp_(min=eps)


def row_cosine(x: torch.Tensor, y: torch.Tensor, eps: float, scratch: Optional[Scratch] = None) -> torch.Tensor:
    """torch's cosine_similarity along the last dimension, in buffers of ``scratch`` (a loop's;
    fresh ones without it)."""
    buffers = _RowBuffers(x, scratch)
    norms = torch.mul(_row_norms(x, eps, buffers, "x"), _row_norms(y, eps, buffers, "y"), out=buffers.rows("xy", x))
    return _row_sums(buffers.product(x, y), buffers.rows("cosine", x)).div_(norms)


def mean_consecutive_cosine(rows: Sequence[torch.Tensor], eps: float,
                            scratch: Optional[Scratch] = None) -> torch.Tensor:
    """The mean of :func:`row_cosine` over consecutive pairs (rows[0], rows[1]), (rows[1], rows[2])...;
    each tensor's row norms are computed once. The result is a buffer of ``scratch``."""
    buffers = _RowBuffers(rows[0], scratch)
    norms = [_row_norms(x, eps, buffers, ("norm", i)) for i, x in enumerate(rows)]
    total = buffers.rows("mean cosine", rows[0])
    both = buffers.rows("norm product", rows[0])
    for i, (x, y, norm_x, norm_y) in enumerate(zip(rows, rows[1:], norms, norms[1:])):
        cosine = _row_sums(buffers.product(x, y), total if i == 0 else buffers.rows("cosine", x))
        cosine.div_(torch.mul(norm_x, norm_y, out=both))
        if i > 0:
            total.add_(cosine)
    return total.div_(len(rows) - 1)


def stock_factor_(cos_mean: torch.Tensor, n: int, scratch: Scratch) -> torch.Tensor:
    """Model Stock's ``t = n·cosθ / (1 + (n-1)·cosθ)`` in place of ``cos_mean`` (n ≥ 2), shaped to
    broadcast per row."""
    denominator = torch.mul(cos_mean, n - 1, out=scratch.get("stock denominator", cos_mean.numel(),
                                                             cos_mean.dtype).view(cos_mean.shape)).add_(1)
    return cos_mean.mul_(n).div_(denominator).unsqueeze(-1)


@merge_method(returns=DELTA, varargs=Tensor(DELTA), label="TIES", category="ties",
              help="TIES-merging: trim each difference to its largest entries, elect a sign per element, "
                   "and average the differences that agree with it.",
              notes=(NON_FINITE_NOTE,))
def ties_sum(*models, k=k_param(1.0), vote_sgn=VOTE_SGN):
    first = models[0]
    if first.numel() == 0:
        return first.clone()
    (*deltas,), restore = at_least_1d(*models)
    return restore(ties_reduce(deltas, scalar("ties_sum", "k", k), vote_sgn))


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
                      apply_median=APPLY_MEDIAN, cos_eps=COS_EPS, eps=MEDIAN_EPS, maxiter=MAXITER, ftol=FTOL):
    return ties_extended(models, scalar("ties_sum_extended", "k", k), vote_sgn, apply_stock, apply_median,
                         cos_eps, eps, maxiter, ftol)


def ties_extended(models, k, vote_sgn, apply_stock, apply_median, cos_eps, eps, maxiter, ftol, divisor=None):
    """ties_sum_extended's work, shared with TIES after DARE/DELLA dropout (which divides the
    result by the keep rate: ``divisor``)."""
    first = models[0]
    if first.numel() == 0:
        return first.clone()
    (*deltas,), restore = at_least_1d(*models)
    if apply_median:
        get = filtered_deltas(deltas, k, vote_sgn)
        result = finite_or_zero_(weiszfeld(get, len(deltas), deltas[0], eps, maxiter, ftol))
        return restore(result if divisor is None else result.div_(divisor))
    stock_eps = None if apply_stock else cos_eps  # apply_stock is inverted, as in sd-mecha
    return restore(ties_reduce(deltas, k, vote_sgn, stock_eps=stock_eps, divisor=divisor))


@merge_method(returns=DELTA, varargs=Tensor(DELTA), label="Model Stock", category="ties",
              help="Average of the differences, scaled by how well they agree (Model Stock, per row).")
def model_stock(*deltas, cos_eps=COS_EPS):
    first = deltas[0]
    if first.numel() == 0:
        return first.clone()
    (*flat,), restore = at_least_1d(*deltas)
    row = flat[0].shape[-1]
    n = len(flat)
    total = workers.empty_like(flat[0]).view(-1, row)
    rows = [d.reshape(-1, row) for d in flat]

    def stock(start: int, end: int, scratch: Scratch) -> None:
        first_row, last_row = start // row, end // row
        part = [d[first_row:last_row] for d in rows]
        out = sum_into(total[first_row:last_row], part)
        if n > 1:  # Model Stock's factor from the mean cosine between consecutive deltas, per row
            out.mul_(stock_factor_(mean_consecutive_cosine(part, cos_eps, scratch), n, scratch).div_(n))
        out.nan_to_num_()

    workers.for_each_range(slices(total.numel(), row), stock, lambda: Scratch(first))
    return restore(total.view(flat[0].shape))


@merge_method(returns=SAME, varargs=Tensor(SAME), label="Geometric median", category="ties",
              help="The point with the least total distance to all models (Weiszfeld's algorithm, "
                   "whole-tensor distances); robust to one outlier model.")
def geometric_median(*models, eps=MEDIAN_EPS, maxiter=MAXITER, ftol=FTOL):
    if models[0].numel() == 0:
        return models[0].clone()
    flat = [m.reshape(-1) for m in models]
    return weiszfeld(lambda start, end, _: [f[start:end] for f in flat], len(models), models[0], eps, maxiter, ftol)


def weiszfeld(points: Callable[[int, int, Scratch], List[torch.Tensor]], count: int, like: torch.Tensor,
              eps: float, maxiter: int, ftol: float) -> torch.Tensor:
    """Weiszfeld iterations from the mean: weights 1/max(‖x_i - m‖, eps), until the mean distance
    changes by at most ``ftol`` of itself; ``points(start, end, scratch)`` gives the points' slices.

    The median is a weighted mean of the points, so every distance follows from their Gram
    matrix: one pass over the slices computes it (in float64, relative to the first point so
    that nearly equal models lose no precision), the iterations then work on ``count``×``count``
    numbers, and a second pass forms the median. Up to ``maxiter`` iterations cost nothing per
    element."""
    numel = like.numel()
    spans = slices(numel)
    partial = {}  # slice start -> its share of the Gram matrix, summed in slice order below

    def gram_of(start: int, end: int, scratch: Scratch) -> None:
        part, size = points(start, end, scratch), end - start
        relative = scratch.get("relative", (count - 1) * size, torch.float64).view(count - 1, size)
        for p, row in zip(part[1:], relative):
            torch.sub(p, part[0], out=row)  # in the points' dtype, then widened
        relative = relative.cpu()
        partial[start] = relative @ relative.T

    gram = torch.zeros(count, count, dtype=torch.float64)
    if count > 1:
        workers.for_each_range(spans, gram_of, lambda: Scratch(like))
        for start, _ in spans:
            gram[1:, 1:] += partial[start]

    def distances(weights: torch.Tensor) -> torch.Tensor:
        weights = weights.to(torch.float64) / weights.sum(dtype=torch.float64)
        projected = gram @ weights
        squared = (gram.diagonal() - 2 * projected + weights @ projected).clamp_(min=0)
        # the stopping test runs in the points' precision, as it would on the tensors themselves
        return squared.sqrt_().to(like.dtype if like.is_floating_point() else torch.float32)

    weights = torch.ones(count, dtype=torch.float64)
    current = distances(weights)
    objective = current.mean()
    for _ in range(max(0, int(maxiter))):
        weights = 1 / torch.clamp(current, min=eps)
        current = distances(weights)
        previous, objective = objective, current.mean()
        if abs(previous - objective) <= ftol * objective:
            break
    fractions = (weights.to(torch.float64) / weights.sum(dtype=torch.float64)).tolist()
    median = workers.empty(numel, like.dtype, like.device)

    def combine(start: int, end: int, scratch: Scratch) -> None:
        part, out = points(start, end, scratch), median[start:end]
        torch.mul(part[0], fractions[0], out=out)
        for p, w in zip(part[1:], fractions[1:]):
            out.add_(p, alpha=w)

    workers.for_each_range(spans, combine, lambda: Scratch(like))
    return median.view(like.shape)
