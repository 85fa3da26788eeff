"""The steps of the smoothing filters on one block of rows (see :mod:`.filters`): reflected
borders, Gaussian weights as matrices, and the median and blur steps as calls on fixed tensors.

Each ``*_steps`` function returns the steps (calls to run in order) that do its job on fixed
tensors: a block's steps are made once per block shape and run for every block of that shape
(Python's overhead per call would otherwise dominate small blocks).
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ..memory import Scratch
from ._networks import selection_program

# --- reflected borders -------------------------------------------------------------------------

def reflect(positions: torch.Tensor, n: int) -> torch.Tensor:
    """Where positions on a length-n axis fall under half-sample reflection (period 2n)."""
    positions = positions % (2 * n)
    return torch.where(positions >= n, 2 * n - 1 - positions, positions)


def window_halo(size: int) -> Tuple[int, int]:
    """How many neighbours a width-``size`` window reaches before and after its element."""
    return size // 2, size - 1 - size // 2


# --- Gaussian weights as matrices ----------------------------------------------------------------

def gaussian_weights(sigma: float, truncate: float = 4.0) -> List[float]:
    """w_k = exp(-k²/2σ²) / Σ exp(-j²/2σ²) for k = -r..r, r = int(truncate·σ + 0.5)."""
    radius = int(truncate * sigma + 0.5)
    weights = [math.exp(-0.5 * (k / sigma) ** 2) for k in range(-radius, radius + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def blur_matrix(weights: Sequence[float], n: int, start: int, stop: int, dtype=torch.float32,
                device=None) -> Tuple[torch.Tensor, int, int]:
    """The blur of outputs ``start..stop-1`` of a length-n axis as a matrix on inputs ``lo..hi-1``:
    out[i] = Σ_j W[i - start, j - lo]·x[j], reflected borders folded in. Returns (W, lo, hi)."""
    radius = len(weights) // 2
    sources = reflect(torch.arange(start, stop)[:, None] + torch.arange(-radius, radius + 1)[None, :], n)
    lo, hi = int(sources.min()), int(sources.max()) + 1
    taps = torch.tensor(weights, dtype=torch.float64).expand(sources.shape)
    matrix = torch.zeros(stop - start, hi - lo, dtype=torch.float64).scatter_add_(1, sources - lo, taps)
    return matrix.to(dtype=dtype, device=device), lo, hi


# --- steps -------------------------------------------------------------------------------------------

Steps = List[Callable[[], object]]


def run(steps: Steps) -> None:
    for step in steps:
        step()


def buffer(scratch: Scratch, name, shape: Sequence[int]) -> torch.Tensor:
    """Scratch buffer ``name`` viewed as ``shape``."""
    return scratch.get(name, math.prod(shape)).view(tuple(shape))


def select_steps(values: Sequence[torch.Tensor], rank: int, out: torch.Tensor, scratch: Scratch) -> Steps:
    """Steps making out the rank-th smallest of ``values`` elementwise (tensors of out's shape,
    views or not), through temporaries from ``scratch``."""
    steps, temporaries, answer = selection_program(len(values), rank)
    if not steps:
        return [functools.partial(out.copy_, values[answer])]
    registers = list(values) + [buffer(scratch, ("select", i), out.shape) for i in range(temporaries)] + [out]
    return [functools.partial(op, registers[a], registers[b], out=registers[d]) for op, a, b, d in steps]


def select(values: Sequence[torch.Tensor], rank: int, out: torch.Tensor, scratch: Scratch) -> torch.Tensor:
    """out = the rank-th smallest of ``values`` elementwise, at once."""
    run(select_steps(values, rank, out, scratch))
    return out


def sorted_select_steps(values: Sequence[torch.Tensor], rank: int, out: torch.Tensor, scratch: Scratch) -> Steps:
    """Like :func:`select_steps`, by copying the values side by side and selecting along them
    (``kthvalue``): faster than a network for hundreds of values."""
    stacked = buffer(scratch, "stacked", tuple(out.shape) + (len(values),))
    indices = scratch.get("stacked-indices", out.numel(), torch.long).view(out.shape)
    return [functools.partial(torch.stack, list(values), -1, out=stacked),
            functools.partial(torch.kthvalue, stacked, rank + 1, -1, out=(out, indices))]


def median3_steps(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, out: torch.Tensor,
                  low: torch.Tensor, high: torch.Tensor) -> Steps:
    """out = median(a, b, c) = b clamped to [min(a, c), max(a, c)], through the buffers low and high.
    out may be b itself (then a and c may overlap it: they are read before it is written)."""
    return [functools.partial(torch.minimum, a, c, out=low), functools.partial(torch.maximum, a, c, out=high),
            functools.partial(torch.clamp, b, low, high, out=out)]


# --- the steps of a block ------------------------------------------------------------------------

def as_three_dims(block: torch.Tensor, dim: int) -> torch.Tensor:
    """A contiguous block viewed as (before dim, dim, after dim)."""
    shape = block.shape
    return block.view(math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1:]))


def median3_along_steps(block: torch.Tensor, dim: int, scratch: Scratch) -> Steps:
    """The median of 3 along ``dim``, in place. The end elements keep their values (with reflected
    borders their windows are x₀, x₀, x₁ and x_{n-2}, x_{n-1}, x_{n-1})."""
    view = as_three_dims(block, dim)
    outer, n, inner = view.shape
    if n < 3:
        return []
    low, high = (buffer(scratch, name, (outer, n - 2, inner)) for name in ("median-low", "median-high"))
    return median3_steps(view[:, :-2], view[:, 1:-1], view[:, 2:], view[:, 1:-1], low, high)


def median_along_steps(block: torch.Tensor, dim: int, size: int, out: torch.Tensor, scratch: Scratch) -> Steps:
    """The median of ``size`` neighbours along ``dim`` (any size), into out."""
    halos = [window_halo(size) if p == dim else (0, 0) for p in range(block.dim())]
    padded = buffer(scratch, "median-padded", padded_shape(block.shape, halos))
    n = block.shape[dim]
    views = [padded.narrow(dim, k, n) for k in range(size)]
    return reflect_pad_steps(block, halos, padded) + select_steps(views, size // 2, out, scratch)


def padded_shape(shape: Sequence[int], halos: Sequence[Tuple[int, int]]) -> Tuple[int, ...]:
    return tuple(n + before + after for n, (before, after) in zip(shape, halos))


def reflect_pad_steps(block: torch.Tensor, halos: Sequence[Tuple[int, int]], out: torch.Tensor) -> Steps:
    """out = ``block`` extended by ``halos[d] = (before, after)`` reflected elements along each
    dimension d. The borders are copied one dimension after the other, each across the borders
    already made, which fills the corners too."""
    inner = out[tuple(slice(before, before + n) for n, (before, _) in zip(block.shape, halos))]
    steps = [functools.partial(inner.copy_, block)]
    for dim, (n, (before, after)) in enumerate(zip(block.shape, halos)):
        for position in itertools.chain(range(-before, 0), range(n, n + after)):
            source = int(reflect(torch.tensor(position), n))
            target = out.narrow(dim, before + position, 1)
            steps.append(functools.partial(target.copy_, out.narrow(dim, before + source, 1)))
    return steps


def blur_long_steps(block: torch.Tensor, dim: int, weights: Sequence[float], edges, out: torch.Tensor,
                    scratch: Scratch) -> Steps:
    """The blur along a long ``dim`` into out: a weighted sum of shifted views of the flat block
    (wrong only within r of the ends of the dimension), then those ends redone by ``edges``, the
    two (matrix, lo, hi) of :func:`blur_matrix` for the first and last r positions."""
    src, dst = as_three_dims(block, dim), as_three_dims(out, dim)
    outer, n, inner = src.shape
    radius = len(weights) // 2
    flat = block.view(-1)
    span = flat.numel() - 2 * radius * inner
    middle = out.view(-1)[radius * inner: radius * inner + span]
    steps = [functools.partial(torch.mul, flat[:span], weights[0], out=middle)]
    steps += [functools.partial(middle.add_, flat[k * inner: k * inner + span], alpha=weights[k])
              for k in range(1, len(weights))]
    for side, ((matrix, lo, hi), start) in enumerate(zip(edges, (0, n - radius))):
        edge = buffer(scratch, ("blur-edge", side), (outer, radius, inner))
        steps += matrix_along_steps(matrix, src[:, lo:hi, :], edge)
        steps.append(functools.partial(dst[:, start:start + radius, :].copy_, edge))
    return steps


def matrix_along_steps(matrix: torch.Tensor, view: torch.Tensor, out: torch.Tensor) -> Steps:
    """out[o] = matrix @ view[o] for every o of an (outer, k, inner) view."""
    if view.shape[2] == 1:
        return [functools.partial(torch.matmul, view[:, :, 0], matrix.t(), out=out[:, :, 0])]
    return [functools.partial(torch.matmul, matrix, view, out=out)]


@dataclass
class BlockSteps:
    """The steps of one block shape: the difference of the loaded rows goes into ``difference``
    (the rows' own layout), ``steps`` leave the block in ``result``, and :meth:`write` puts it
    into the output rows in their own layout."""
    difference: torch.Tensor
    steps: Steps
    result: torch.Tensor
    layout: Tuple[int, ...]
    short_blur: Optional[torch.Tensor]

    def run(self, b_rows: torch.Tensor, c_rows: Optional[torch.Tensor], out: torch.Tensor) -> None:
        if c_rows is None:
            self.difference.copy_(b_rows)
        else:
            torch.sub(b_rows, c_rows, out=self.difference)
        run(self.steps)
        self.write(out)

    def write(self, out: torch.Tensor) -> None:
        if self.short_blur is not None:  # one product back from the block layout to the rows' own
            width = self.short_blur.shape[0]
            torch.matmul(self.result.view(width, -1).t(), self.short_blur.t(), out=out.view(-1, width))
        else:
            native = [self.result.shape[self.layout.index(d)] for d in range(len(self.layout))]
            out.view(native).permute(self.layout).copy_(self.result)
