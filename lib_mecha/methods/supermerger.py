"""SuperMerger's merge modes that sd-mecha lacks, under identifiers of ours.

Formulas (worked out from SuperMerger's README and calcmode documentation, checked against
what its modes compute):

* ``sum_twice``:   (1 - β)·((1 - α)·A + α·B) + β·C
* ``triple_sum``:  (1 - α - β)·A + α·B + β·C
* ``smooth_add_difference``: A + α·G_σ(M(B - C)), where M is a median filter of width
  ``median_size`` (3) and G_σ a Gaussian blur, both over every dimension of the tensor with
  reflected borders. SuperMerger uses scipy's median_filter(size=3), the median of each
  element's 3^N neighbourhood (``exact_median``); by default M is the separable median instead
  (of 3 neighbours along each dimension in turn), which removes isolated spikes as well, evens
  out noise less, and costs a thirtieth (see filters.py)
* ``extract_features``: with dB = B - A, dC = C - A, c = cos(dB, dC) along the last dimension
  (per row) and d = ((c + 1)/2)^γ: A + lerp(dB, dC, α)·lerp(d, 1 - d, β). β = 0 keeps what B
  and C share, β = 1 what sets them apart; α chooses whose version of it.
* ``add_noise`` (SuperMerger's "plus random"): A + α·N(0, 1), seeded per key
* ``self_scale`` (SuperMerger's "self"): α·A

SuperMerger leaves keys whose name contains ``to_out``, ``proj_out`` or ``norm`` alone in the
last two; ``skip_out_and_norm`` does the same here.
"""
from __future__ import annotations

import torch

from ..memory import Scratch
from ._rows import row_cosine
from ._values import as_tensor_like, at_least_1d, is_close, scalar, slices
from .filters import add_smoothed_difference
from .registry import merge_method
from .seeding import Draws
from .spec import SAME, Bool, CurrentKey, Float, Int, KeyWorkspace, Tensor
SUPERMERGER_SKIPPED = ("to_out", "proj_out", "norm")
_SKIP_HELP = "Like SuperMerger, leave keys whose name contains to_out, proj_out or norm unchanged."


def _skipped(key, skip: bool) -> bool:
    return skip and key is not None and any(part in key for part in SUPERMERGER_SKIPPED)


@merge_method(returns=SAME, label="Sum twice", category="supermerger", elementwise=True,
              help="Two weighted sums in a row: (1 - beta)·((1 - alpha)·A + alpha·B) + beta·C.")
def sum_twice(a=Tensor(SAME), b=Tensor(SAME), c=Tensor(SAME),
              alpha=Float(0.5, soft_minimum=0.0, soft_maximum=1.0, per_key=True, help="Share of B in the first sum."),
              beta=Float(0.5, soft_minimum=0.0, soft_maximum=1.0, per_key=True, help="Share of C in the second sum.")):
    return torch.lerp(torch.lerp(a, b, as_tensor_like(alpha, a)), c, as_tensor_like(beta, a))


@merge_method(returns=SAME, label="Triple sum", category="supermerger", elementwise=True,
              help="Three models at once: (1 - alpha - beta)·A + alpha·B + beta·C.")
def triple_sum(a=Tensor(SAME), b=Tensor(SAME), c=Tensor(SAME),
               alpha=Float(1 / 3, soft_minimum=0.0, soft_maximum=1.0, per_key=True, help="Share of B."),
               beta=Float(1 / 3, soft_minimum=0.0, soft_maximum=1.0, per_key=True, help="Share of C.")):
    return a + (b - a) * as_tensor_like(alpha, a) + (c - a) * as_tensor_like(beta, a)


@merge_method(returns=SAME, label="Smooth add difference", category="supermerger",
              help="A + alpha·(B - C), with the difference smoothed by a median then a Gaussian filter, "
                   "which tames the 'burning' of repeated additions.",
              notes=("The median is separable unless exact_median is on: the median of median_size neighbours "
                     "along each dimension in turn. Like SuperMerger's median of each element's whole "
                     "neighbourhood it removes isolated spikes and keeps steps and smooth changes, but it "
                     "evens out noise less (on random differences its result is about 1.4 times as large in "
                     "3x3 convolutions, 1.05 times in other layers). exact_median gives SuperMerger's result, "
                     "about 30 times more slowly.",))
def smooth_add_difference(a=Tensor(SAME), b=Tensor(SAME), c=Tensor(SAME),
                          alpha=Float(1.0, soft_minimum=0.0, soft_maximum=2.0, per_key=True,
                                      help="Strength of the smoothed difference (smoothing weakens it; "
                                           "up to 2 is reasonable)."),
                          median_size=Int(3, minimum=1, maximum=5,
                                          help="Width of the median window (1 = none; of an even width's two "
                                               "middle values the larger, as in scipy)."),
                          sigma=Float(1.0, minimum=0.0, soft_maximum=3.0,
                                      help="Spread of the Gaussian blur, in elements (0 = none)."),
                          *, exact_median=Bool(False, label="Exact median (slow)",
                                               help="The median of each element's whole median_size^N "
                                                    "neighbourhood (81 values in a 3x3 convolution): exactly "
                                                    "SuperMerger's result, but about 30 times slower than the "
                                                    "separable median used otherwise (minutes instead of "
                                                    "seconds for an SD1.5 model)."),
                          work=KeyWorkspace()):
    return add_smoothed_difference(a, alpha, b, c, median_size, sigma, exact_median, work=work)


@merge_method(returns=SAME, label="Extract (dis)similar features", category="supermerger",
              help="Adds to A what B's and C's changes from A have in common (beta 0) or what sets them "
                   "apart (beta 1), row by row.")
def extract_features(a=Tensor(SAME, help="the common base"), b=Tensor(SAME), c=Tensor(SAME),
                     alpha=Float(0.5, minimum=0.0, maximum=1.0, per_key=True,
                                 help="Whose features: 0 takes them from B, 1 from C."),
                     beta=Float(0.0, minimum=0.0, maximum=1.0, per_key=True,
                                help="0 extracts similar features, 1 dissimilar ones, 0.5 both by half."),
                     gamma=Float(1.0, minimum=0.0, soft_maximum=10.0, per_key=True,
                                 help="Selectivity: high values count only very similar rows as similar."),
                     work=KeyWorkspace()):
    if a.numel() == 0:
        return a.clone()
    (a1, b1, c1), restore = at_least_1d(a, b, c)
    gamma = scalar("extract_features", "gamma", gamma)
    beta_t, alpha_t = as_tensor_like(beta, a1), as_tensor_like(alpha, a1)
    width = a1.shape[-1]
    flat = [t.reshape(-1, width) for t in (a1, b1, c1)]
    out = work.empty_like(flat[0])

    def extract(start: int, end: int, scratch: Scratch) -> None:  # whole rows: the cosine is per row
        rows = slice(start // width, end // width)
        base, b_rows, c_rows = (t[rows] for t in flat)
        delta_b = torch.sub(b_rows, base, out=scratch.get("b", end - start).view(b_rows.shape))
        delta_c = torch.sub(c_rows, base, out=scratch.get("c", end - start).view(c_rows.shape))
        cosine = row_cosine(delta_b, delta_c, 1e-8, scratch).clamp_(-1, 1).unsqueeze(-1)
        similar = ((cosine + 1) / 2) ** gamma
        selection = torch.lerp(similar, 1 - similar, beta_t)
        torch.add(base, delta_b.lerp_(delta_c, alpha_t).mul_(selection), out=out[rows])

    work.for_each_range(slices(out.numel(), width), extract, lambda: work.scratch(a1))
    return restore(out.view(a1.shape))


@merge_method(returns=SAME, label="Add noise", category="supermerger", stochastic=True, fresh_seed="seed",
              help="Adds seeded Gaussian noise of standard deviation alpha (SuperMerger's 'plus random').",
              notes=("seed null draws fresh noise on every merge; give a seed to make it reproducible.",))
def add_noise(a=Tensor(SAME),
              alpha=Float(0.001, minimum=0.0, soft_maximum=0.01, per_key=True,
                          help="Standard deviation of the noise, in weight units (SD weights are ~0.01-0.1)."),
              *, skip_out_and_norm=Bool(True, label="Skip out and norm layers", help=_SKIP_HELP),
              seed=Int(None, nullable=True, help="Random seed; the same seed gives the same noise."),
              key=CurrentKey(), work=KeyWorkspace()):
    if _skipped(key, skip_out_and_norm) or is_close(alpha, 0.0) or a.numel() == 0:
        return a
    draws = Draws(seed, key, "noise")
    flat = a.reshape(-1)
    scale = as_tensor_like(alpha, a)
    scale = scale.expand(a.shape).reshape(-1) if scale.numel() > 1 else scale.reshape(())
    out = work.empty_like(flat)

    def noisy(start: int, end: int, scratch: Scratch) -> None:
        noise = draws.normal(scratch.get("noise", end - start, torch.float32, "cpu"), start)
        part = scale[start:end] if scale.dim() else scale
        torch.addcmul(flat[start:end], noise.to(device=a.device, dtype=a.dtype), part, out=out[start:end])

    work.for_each_range(slices(flat.numel()), noisy, lambda: work.scratch(a))
    return out.view(a.shape)


@merge_method(returns=SAME, label="Self scaling", category="supermerger", elementwise=True,
              help="Multiplies the weights by alpha (SuperMerger's 'self').",
              notes=("SuperMerger leaves a block alone when its alpha is 0; here 0 gives zeros. "
                     "Use 1 for blocks that must stay unchanged.",))
def self_scale(a=Tensor(SAME),
               alpha=Float(1.0, soft_minimum=0.5, soft_maximum=1.5, per_key=True, help="Factor; 1 keeps A."),
               *, skip_out_and_norm=Bool(True, label="Skip out and norm layers", help=_SKIP_HELP), key=CurrentKey()):
    if _skipped(key, skip_out_and_norm):
        return a
    return a * as_tensor_like(alpha, a)
