"""Random dropout of differences: DARE and DELLA before TIES, and n-supermario ``dropout``.

Identifiers, parameters, defaults and meanings are sd-mecha's (reference §3.2). The random
draws are ours (see :mod:`.seeding`): the same seed gives the same result on any machine and
thread count, but not the same draws as sd-mecha's generators.
"""
from __future__ import annotations

import math
from typing import List

import torch

from ._values import as_tensor_like, is_close, scalar
from .registry import merge_method
from .seeding import bernoulli_like, key_generator, uniform_like
from .spec import DELTA, Bool, CurrentKey, Float, Int, Tensor
from .ties import APPLY_MEDIAN, COS_EPS, FTOL, MAXITER, MEDIAN_EPS, VOTE_SGN, k_param, slices, ties_extended

PROBABILITY_HELP = "Chance that each entry of a difference is dropped; 0.9 keeps one entry in ten."


EXACT_RANKS_UP_TO = 1 << 20  # elements; larger deltas estimate magnitude ranks from a histogram
RANK_BINS = 1 << 16


def _exact_rank_fraction(magnitudes: torch.Tensor) -> torch.Tensor:
    n = magnitudes.numel()
    order = torch.argsort(magnitudes, stable=True)
    rank = torch.empty(n, dtype=magnitudes.dtype, device=magnitudes.device)
    rank[order] = torch.arange(1, n + 1, dtype=magnitudes.dtype, device=magnitudes.device)
    return rank.div_(n).sub_((n + 1) / (2 * n))


def centered_rank_fraction(magnitudes: torch.Tensor) -> torch.Tensor:
    """``rank/n - (n+1)/(2n)`` per element of a 1-D tensor (rank 1 = smallest, ties in storage order).

    Exact up to EXACT_RANKS_UP_TO elements. Above, sorting every delta would dominate the merge,
    so ranks come from a histogram of RANK_BINS bins (equal in sqrt(magnitude)), interpolated inside each bin; the
    error is at most the fullest bin's share of the elements, and when that exceeds 1% (a few
    huge outliers crowd everything into one bin) the exact ranks are used after all."""
    n = magnitudes.numel()
    top = magnitudes.max() if n else None
    if n <= EXACT_RANKS_UP_TO or not torch.isfinite(top) or top <= 0:
        return _exact_rank_fraction(magnitudes)
    # bins equal in sqrt(|d|): heavy tails (a few huge entries) still spread the bulk over many bins
    scaled = magnitudes.div(top).sqrt_().mul_(RANK_BINS)
    bins = scaled.long().clamp_(max=RANK_BINS - 1)
    counts = torch.bincount(bins, minlength=RANK_BINS)
    if int(counts.max()) > n // 100:
        return _exact_rank_fraction(magnitudes)
    below = torch.cumsum(counts, 0).sub_(counts).to(magnitudes.dtype)
    within = scaled.sub_(bins.to(magnitudes.dtype)).mul_(counts.to(magnitudes.dtype)[bins])
    return within.add_(below[bins]).add_(0.5).div_(n).sub_(0.5)


def della_keep_probability(delta: torch.Tensor, probability, della_eps: float):
    """Keep-probability per entry: ``1 - p``, shifted by DELLA's magnitude-rank term
    ``della_eps·(rank/n - (n+1)/(2n))`` (see :func:`centered_rank_fraction`)."""
    keep = 1 - probability
    if della_eps == 0:
        return keep
    shift = centered_rank_fraction(delta.abs().flatten()).mul_(della_eps)
    shift = torch.nan_to_num_(shift, nan=0.0, posinf=0.0, neginf=0.0).reshape(delta.shape)
    return shift.add_(as_tensor_like(keep, delta)).clamp_(0, 1)


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
        key=CurrentKey()):
    if is_close(probability, 1.0):
        return torch.zeros_like(deltas[0])
    if deltas[0].numel() == 0:
        return deltas[0].clone()
    della = scalar("ties_sum_with_dropout", "della_eps", della_eps)
    generator = key_generator(None if seed is None or seed < 0 else seed, key, "dare", fresh_when_none=False)
    dropped: List[torch.Tensor] = [drop(d, della_keep_probability(d, probability, della), generator) for d in deltas]
    result = ties_extended(dropped, scalar("ties_sum_with_dropout", "k", k), vote_sgn, apply_stock,
                           apply_median, cos_eps, eps, maxiter, ftol)
    if not rescale:
        return result
    return result.div_(as_tensor_like(1 - probability, result))


def drop(delta: torch.Tensor, keep, generator: torch.Generator) -> torch.Tensor:
    """``delta`` with each entry kept where a uniform draw falls below ``keep`` (a number or a
    tensor like ``delta``) and 0 elsewhere.

    The draws are made slice by slice into one reused buffer (the same numbers as one draw of the
    whole tensor), and the test is float arithmetic, ``max(sign(keep - u), 0)``, which costs a
    fraction of a comparison into a bool mask and a ``where``.
    """
    flat = delta.reshape(-1)
    out = torch.empty_like(flat)
    bounds = slices(flat.numel())
    draws = torch.empty(bounds[0][1] if bounds else 0, dtype=torch.float32)  # on the CPU, as seeding.py says
    keep_flat = keep.reshape(-1).float() if isinstance(keep, torch.Tensor) else None
    for start, end in bounds:
        u = draws[:end - start].uniform_(generator=generator).to(delta.device)
        if keep_flat is None:
            u.neg_().add_(float(keep))
        else:
            torch.sub(keep_flat[start:end], u, out=u)
        torch.mul(flat[start:end], u.sign_().clamp_min_(0), out=out[start:end])
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
              stochastic=True,
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
            key=CurrentKey()):
    first = deltas[0]
    if first.numel() == 0:
        return first.clone()
    generator = key_generator(seed, key, "dropout")
    n = len(deltas)
    if overlap % 2 == 1:
        masks = [bernoulli_like(first, 1 - probability, generator) for _ in deltas]
    else:
        cdf = torch.cumsum(overlap_pmf(n, probability, overlap, overlap_emphasis), 0).to(torch.float32)
        subset = torch.searchsorted(cdf, uniform_like(first, generator).flatten(), right=True)
        subset = subset.clamp_(max=2 ** n - 1).reshape(first.shape)
        masks = [((subset >> i) & 1).bool() for i in range(n)]
    total = torch.zeros_like(first)
    coverage = torch.zeros_like(first)
    for mask, delta in zip(masks, deltas):
        total += torch.where(mask, delta, 0.0)
        coverage += mask
    coverage.clamp_(min=1)
    if probability == 1.0:
        rescalar = 1.0
    else:
        rescalar = (1.0 - probability) ** rescale
        rescalar = rescalar if math.isfinite(rescalar) else 1.0
    return total / coverage / rescalar
