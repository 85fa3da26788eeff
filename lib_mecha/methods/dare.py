"""Random dropout of differences: DARE and DELLA before TIES, and n-supermario ``dropout``.

Identifiers, parameters, defaults and meanings are sd-mecha's (reference §3.2). The random
draws are ours (see :mod:`.seeding`): the same seed gives the same result on any machine and
thread count, but not the same draws as sd-mecha's generators.
"""
from __future__ import annotations

import math
from typing import List

import torch

from ..memory import Scratch
from ..workspace import Workspace
from ._values import as_tensor_like, is_close, largest_magnitude, scalar, slices
from .registry import merge_method
from .seeding import Draws
from .spec import DELTA, Bool, CurrentKey, Float, Int, KeyWorkspace, Tensor
from .ties import APPLY_MEDIAN, COS_EPS, FTOL, MAXITER, MEDIAN_EPS, VOTE_SGN, k_param, ties_extended

PROBABILITY_HELP = "Chance that each entry of a difference is dropped; 0.9 keeps one entry in ten."


def _kept_(shifted_draws: torch.Tensor, limit, out: torch.Tensor) -> torch.Tensor:
    """1 where the draw is below the keep-probability, else 0, as floats in ``out``, from the
    draws plus one (:meth:`.Draws.shifted_uniform`) and ``limit`` = 1 + keep-probability (a
    number or a tensor). A comparison written straight into a float tensor costs as little as
    a float op, a fraction of a bool mask or ``heaviside``. A keep-probability outside [0, 1]
    needs no clamping: the draws are in [1, 2),
    so a limit of 2 and more always keeps and one of 1 and less never does."""
    return torch.lt(shifted_draws, limit, out=out)


# elements; larger deltas take magnitude ranks from a histogram, which costs a fraction of
# sorting them
EXACT_RANKS_UP_TO = 1 << 16
CROWDED_BIN_SHARE = 0.01       # ...unless one of its bins holds more than this share of the elements
# The histogram's bins are the float16 values: |delta|/max|delta| in [0, 1] converted to float16
# is its bin, and the float16's bits (15361 patterns up to 1.0, in order) index the table.
HALF_ONE_BITS = 0x3C00


def _exact_rank_fraction(magnitudes: torch.Tensor) -> torch.Tensor:
    n = magnitudes.numel()
    order = torch.argsort(magnitudes, stable=True)
    rank = torch.empty(n, dtype=magnitudes.dtype, device=magnitudes.device)
    rank[order] = torch.arange(1, n + 1, dtype=magnitudes.dtype, device=magnitudes.device)
    return rank.div_(n).sub_((n + 1) / (2 * n))


class CenteredRanks:
    """``rank/n - (n+1)/(2n)`` of each ``|delta|`` (rank 1 = smallest, ties in storage order), by range.

    Exact up to EXACT_RANKS_UP_TO elements. Above, sorting every delta would dominate the merge,
    so elements are binned by their magnitude relative to the largest, rounded to float16 (a
    relative resolution of 2^-11), and every element of a bin gets the bin's mean rank: the error
    is at most half the bin's share of the elements (a few 1e-4 for SD deltas), and the ranks
    still average to exactly 0. When a bin holds more than CROWDED_BIN_SHARE of the elements
    (a delta that is mostly zeros), the exact ranks are used after all. The histogram is counted
    slice by slice on the granted threads, each element's bin is kept (2 bytes per element), and
    each range's ranks are looked up from those when asked, so no key-sized float tensor of
    ranks exists."""

    def __init__(self, delta: torch.Tensor, work: Workspace):
        self.flat = delta.reshape(-1)
        n = self.n = self.flat.numel()
        self.exact = None
        spans = slices(n)
        tops = {}
        work.for_each_range(spans, lambda start, end, _: tops.__setitem__(
            start, largest_magnitude(self.flat[start:end])))
        top = max(tops.values(), default=0.0)
        if n <= EXACT_RANKS_UP_TO or not math.isfinite(top) or top <= 0:
            self.exact = _exact_rank_fraction(self.flat.abs())
            return
        self.scale = 1 / top
        # each element's bin is kept (2 bytes per element) for the lookups: binning again would
        # cost three more passes per element
        self.bins = work.empty(n, torch.int16, self.flat.device)
        counted = {}
        work.for_each_range(spans, lambda start, end, scratch: counted.__setitem__(
            start, torch.bincount(self._bins(start, end, scratch), minlength=HALF_ONE_BITS + 1)),
            lambda: work.scratch(self.flat))
        counts = sum(counted[start] for start, _ in spans)
        if int(counts.max()) > CROWDED_BIN_SHARE * n:
            self.exact = _exact_rank_fraction(self.flat.abs())
            return
        # the mean rank of a bin's elements: below + (count + 1)/2, centred like the exact ranks
        below = torch.cumsum(counts, 0).sub_(counts).double()
        table = below.add_(counts.double().add_(1).div_(2)).div_(n).sub_((n + 1) / (2 * n))
        self.table = table.to(self.flat.dtype)

    def _bins(self, start: int, end: int, scratch: Scratch) -> torch.Tensor:
        """The bins of elements ``start:end``, written into ``self.bins``."""
        size = end - start
        relative = torch.abs(self.flat[start:end], out=scratch.get("relative", size)).mul_(self.scale)
        return self.bins[start:end].view(torch.float16).copy_(relative).view(torch.int16)

    def range(self, start: int, end: int, scratch: Scratch) -> torch.Tensor:
        """The centred rank fractions of elements ``start:end`` (a scratch buffer)."""
        if self.exact is not None:
            return self.exact[start:end]
        return self.lookup(self.table, start, end, scratch)

    def lookup(self, table: torch.Tensor, start: int, end: int, scratch: Scratch) -> torch.Tensor:
        """``table``'s entries (one per bin, as ``self.table``) for elements ``start:end``, in a
        scratch buffer the caller may overwrite: a function of the ranks computed once per bin
        instead of once per element. Only for binned ranks (``exact`` is None)."""
        index = scratch.get("index", end - start, torch.int32).copy_(self.bins[start:end])
        return torch.index_select(table, 0, index, out=scratch.get("ranks", end - start, table.dtype))


def centered_rank_fraction(magnitudes: torch.Tensor, work: Workspace) -> torch.Tensor:
    """:class:`CenteredRanks` of a 1-D tensor of magnitudes, whole."""
    ranks = CenteredRanks(magnitudes, work)
    out = torch.empty_like(ranks.flat)
    work.for_each_range(slices(ranks.n), lambda start, end, scratch: out[start:end].copy_(
        ranks.range(start, end, scratch)), lambda: work.scratch(out))
    return out


@merge_method(returns=DELTA, varargs=Tensor(DELTA), label="TIES with DARE / DELLA", category="ties",
              stochastic=True,
              help="Randomly drops entries of each difference (DARE; DELLA favours large ones), merges the "
                   "rest with TIES and rescales.",
              notes=("apply_stock is inverted, as in sd-mecha: false (the default) APPLIES Model Stock scaling.",
                     "seed null or negative uses one fixed default stream, as sd-mecha's unseeded generator does."))
def ties_sum_with_dropout(
        *deltas,
        probability=Float(0.9, minimum=0.0, maximum=1.0, maximum_open=True, per_key=True, label="Drop probability",
                          help=PROBABILITY_HELP),
        della_eps=Float(0.0, minimum=-1.0, maximum=1.0, soft_minimum=0.0, soft_maximum=0.2, per_key=True,
                        label="DELLA epsilon",
                        help="0 is plain DARE; above 0, large entries are kept more often than small ones."),
        rescale=Bool(True, help="Divide by the keep rate (1 - probability) so the expected size is unchanged."),
        k=k_param(0.2), vote_sgn=VOTE_SGN,
        apply_stock=Bool(False, label="Skip Model Stock scaling",
                         help="Inverted name kept from sd-mecha: false (default) scales by Model Stock's factor."),
        cos_eps=COS_EPS, apply_median=APPLY_MEDIAN, eps=MEDIAN_EPS, maxiter=MAXITER, ftol=FTOL,
        seed=Int(None, nullable=True, help="Random seed; the same seed gives the same result."),
        key=CurrentKey(), work=KeyWorkspace()):
    if is_close(probability, 1.0):
        return torch.zeros_like(deltas[0])
    if deltas[0].numel() == 0:
        return deltas[0].clone()
    della = scalar("ties_sum_with_dropout", "della_eps", della_eps)
    draws = Draws(None if seed is None or seed < 0 else seed, key, "dare", fresh_when_none=False)
    dropped: List[torch.Tensor] = [drop(d, probability, della, draws.child(i), work) for i, d in enumerate(deltas)]
    keep_rate = as_tensor_like(1 - probability, deltas[0]) if rescale else None
    return ties_extended(dropped, scalar("ties_sum_with_dropout", "k", k), vote_sgn, apply_stock,
                         apply_median, cos_eps, eps, maxiter, ftol, work, divisor=keep_rate)


def drop(delta: torch.Tensor, probability, della_eps: float, draws: Draws, work: Workspace) -> torch.Tensor:
    """``delta`` with each entry kept where its uniform draw falls below its keep-probability
    (``1 - probability``, with DELLA's rank shift when ``della_eps`` is not 0) and 0 elsewhere.

    Slice by slice on the granted threads, with reused buffers; the kept entries are multiplied
    by 1 and the others by 0 (:func:`_kept_`), which costs a fraction of a ``where``.
    """
    flat = delta.reshape(-1)
    out = work.empty_like(flat)
    keep = 1 - probability
    keep_flat = as_tensor_like(keep, delta).expand(delta.shape).reshape(-1) if isinstance(keep, torch.Tensor) else None
    # 1 + keep-probability, at least in float32: the draws' resolution is 2^-23
    limit_dtype = torch.promote_types(flat.dtype, torch.float32)
    ranks = CenteredRanks(flat, work) if della_eps != 0 else None
    limit_by_bin = None
    if ranks is not None and ranks.exact is None and keep_flat is None:
        # DELLA's keep-probability of each bin, with the same float operations as per element below
        keep_by_bin = torch.mul(ranks.table, della_eps).nan_to_num_(0.0, 0.0, 0.0).add_(keep)
        limit_by_bin = keep_by_bin.to(limit_dtype).add_(1)

    def drop_range(start: int, end: int, scratch: Scratch) -> None:
        size = end - start
        shifted = draws.shifted_uniform(scratch.get("draws", size, torch.float32, "cpu"), start).to(delta.device)
        if limit_by_bin is not None:
            limit = ranks.lookup(limit_by_bin, start, end, scratch)
        elif ranks is not None:  # DELLA: keep = 1 - p + eps·centred rank
            keep_here = torch.mul(ranks.range(start, end, scratch), della_eps, out=scratch.get("keep", size))
            keep_here.nan_to_num_(0.0, 0.0, 0.0).add_(keep_flat[start:end] if keep_flat is not None else keep)
            limit = torch.add(keep_here, 1, out=scratch.get("limit", size, limit_dtype))
        elif keep_flat is not None:
            limit = torch.add(keep_flat[start:end], 1, out=scratch.get("limit", size, limit_dtype))
        else:
            limit = 1 + float(keep)
        torch.mul(flat[start:end], _kept_(shifted, limit, scratch.get("kept", size)), out=out[start:end])

    work.for_each_range(slices(flat.numel()), drop_range, lambda: work.scratch(flat))
    return out.view(delta.shape)


def _popcounts(n: int) -> torch.Tensor:
    return torch.tensor([bin(i).count("1") for i in range(1, 2 ** n)], dtype=torch.float64)


def overlap_pmf(n: int, p: float, overlap: float, emphasis: float) -> torch.Tensor:
    """n-supermario's distribution over which of the n models keep an entry.

    Index i (0 ≤ i < 2^n) is the set of models whose bit is set in i; index 0 (no model) has
    probability p. The non-empty sets share 1 - p: an even integer ``overlap`` gives each entry
    to exactly one model; otherwise a softmax over ``tan(π(overlap' - 1/2))·(|set| - n/2)``
    (overlap' = -overlap when floor(overlap) is odd), blended by ``emphasis`` toward a binomial
    over set sizes (Binomial(n, p), spread evenly over the sets of each size)."""
    sizes = _popcounts(n)
    if math.isclose(overlap, round(overlap)):
        if round(overlap) % 2 == 0:
            pmf = (sizes == 1).double() / n
        else:
            pmf = (sizes == n).double()
    else:
        if math.floor(overlap) % 2 == 1:
            overlap = -overlap
        logits = math.tan(math.pi * (overlap - 0.5)) * (sizes - n / 2)
        pmf = torch.softmax(logits, dim=0)
    # Binomial(n, p) mass of each size, divided by the number of sets of that size
    spread = p ** sizes * (1 - p) ** (n - sizes)
    if emphasis != 0 and spread.sum() > 0:  # p = 0 leaves no mass to spread
        spread = spread / spread.sum()
        pmf = torch.lerp(pmf, torch.lerp(pmf, spread, 1 - abs(2 * overlap - 1)), emphasis)
        pmf = pmf.clamp(min=0)  # the inner weight can extrapolate past the binomial
        pmf = pmf / pmf.sum()
    return torch.cat([torch.tensor([p], dtype=torch.float64), pmf * (1 - p)])


@merge_method(returns=DELTA, varargs=Tensor(DELTA), label="Dropout (n-supermario)", category="ties",
              stochastic=True, fresh_seed="seed",
              help="Randomly gives each entry to some of the differences and averages those (a DARE variant).",
              notes=("seed null draws fresh randomness on every merge, as in sd-mecha; give a seed to "
                     "make the result reproducible.",))
def dropout(*deltas,
            probability=Float(0.9, minimum=0.0, maximum=1.0, maximum_open=True, label="Drop probability",
                              help=PROBABILITY_HELP),
            rescale=Float(1.0, soft_minimum=0.0, soft_maximum=1.0, label="Rescale exponent",
                          help="Exponent of the keep-rate rescaling: 1 restores the expected size, 0 none."),
            overlap=Float(1.0, soft_minimum=0.0, soft_maximum=2.0,
                          help="Odd whole numbers: each difference is dropped independently; even: every entry "
                               "goes to exactly one difference; in between: more or less sharing."),
            overlap_emphasis=Float(0.0, minimum=0.0, maximum=1.0,
                                   help="Blends the overlap distribution toward a binomial one."),
            seed=Int(None, nullable=True, help="Random seed; null draws a new one every merge."),
            key=CurrentKey(), work=KeyWorkspace()):
    first = deltas[0]
    if first.numel() == 0:
        return first.clone()
    draws = Draws(seed, key, "dropout")
    n = len(deltas)
    independent = overlap % 2 == 1
    if independent:  # each difference kept on its own draw
        streams = [draws.child(i) for i in range(n)]
    else:  # one draw per entry picks the set of differences that keep it
        cdf = torch.cumsum(overlap_pmf(n, probability, overlap, overlap_emphasis), 0).to(torch.float32)
    if probability == 1.0:
        rescalar = 1.0
    else:
        rescalar = (1.0 - probability) ** rescale
        rescalar = rescalar if math.isfinite(rescalar) else 1.0
    flat = [d.reshape(-1) for d in deltas]
    out = work.empty_like(flat[0])

    def drop_range(start: int, end: int, scratch: Scratch) -> None:
        size = end - start
        total, coverage = scratch.get("total", size), scratch.get("coverage", size)
        kept = scratch.get("kept", size)
        u = scratch.get("draws", size, torch.float32, "cpu")  # draws are made on the CPU (seeding.py)
        if not independent:
            draws.uniform(u, start)
            subset = torch.searchsorted(cdf, u, right=True, out=scratch.get("subset", size, torch.long, "cpu"))
            subset.clamp_(max=2 ** n - 1)
        for i, d in enumerate(flat):
            if independent:  # kept where u < 1 - p
                _kept_(streams[i].shifted_uniform(u, start).to(kept.device), 1 + (1 - probability), kept)
            else:  # bit i of the drawn set
                kept.copy_(torch.bitwise_and(torch.bitwise_right_shift(subset, i), 1))
            if i == 0:
                torch.mul(d[start:end], kept, out=total)
                coverage.copy_(kept)
            else:
                total.addcmul_(d[start:end], kept)  # d·kept is exact: the plain sum of the kept entries
                coverage.add_(kept)
        torch.div(total, coverage.clamp_(min=1), out=out[start:end]).div_(rescalar)

    work.for_each_range(slices(out.numel()), drop_range, lambda: work.scratch(out))
    return out.view(first.shape)

