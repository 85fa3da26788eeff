"""N-dimensional median and Gaussian filters in torch, for smoothing differences.

Every dimension of the tensor is a spatial axis, and the borders are extended by half-sample
reflection (``d c b a | a b c d | d c b a``), the convention of ``scipy.ndimage`` whose
``median_filter(size=3)`` and ``gaussian_filter(sigma=1)`` SuperMerger's smooth add difference
uses. A window of width ``s`` covers offsets ``-s//2 .. s-1-s//2`` (centred for odd ``s``).

* exact median (:func:`median_filter`): the element ``s^N // 2`` of each element's sorted
  ``s^N`` neighbourhood, exactly scipy's (for even ``s`` that is the upper median);
* separable median (:func:`separable_median_filter`): the median of ``s`` neighbours along
  dimension 0, then of that along dimension 1, and so on (the same as the exact one in 1-D).
  Like the exact one it removes isolated spikes and keeps constant regions and steps;
* Gaussian (:func:`gaussian_filter`): along every dimension in turn, the weights
  ``w_k ∝ exp(-k²/2σ²)`` for ``k = -r..r``, ``r = int(truncate·σ + 0.5)``, summing to 1.

The separable median costs a few percent of the exact one, which takes 81 values in a 3x3
convolution (bench/README.md has the measurements).

A dimension of length 1 changes nothing under either filter and is dropped. The tensor is cut
into runs of whole rows (rows = indices of dimension 0), one per granted thread at a time;
results never depend on the thread count. A run goes through blocks of rows that stay in
cache: the difference b - c of the block and of the rows its median reads either side, the
median, the blur along dimensions 1.., into a window of the run's rows; then the blur along
dimension 0 is one banded matrix product per few rows of the window (a few flops per element
at full BLAS speed, the reflected borders folded into the matrix), written as
``base + scale·value``. A run also smooths the r rows either side of it that its blur reads,
so that runs are independent. Blocks are laid out with the trailing short dimensions first (a
convolution's 3x3 kernel: 9 planes), so every step works on long runs of memory, and the blur
of those dimensions is one 9x9 matrix product that also lays the block back out. A block's
steps are made once per block shape and replayed (Python's overhead).

The median of 3 is b clamped to [min(a, c), max(a, c)] on shifted views (its reflected end
elements keep their values: median(x₀, x₀, x₁) = x₀). Other widths, and the exact median, run
Batcher's sorting network pruned to the one output needed, as ``min``/``max`` of whole blocks:
about 1 300 of them per element for the exact median of 81 values (sharing work between
neighbouring windows, such as sorting along each axis first, leaves 71 of the 81 values as
candidates, so it does not bring that down much); windows of hundreds of values are copied
side by side and selected by ``kthvalue``. A long dimension's blur is a weighted sum of shifted
views with its ends redone by small matrices; a short one's is one matrix.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from ..memory import Scratch
from ..workspace import Workspace, ranges
from ._filter_steps import (BlockSteps, Steps, as_three_dims, blur_long_steps, blur_matrix, buffer, gaussian_weights,
                            matrix_along_steps, median3_along_steps, median3_steps, median_along_steps,
                            padded_shape, reflect, reflect_pad_steps, select_steps, sorted_select_steps,
                            window_halo)

# Sizes, chosen on SD1.5 shapes (a larger block costs cache misses, a smaller one Python's
# overhead per step; a run of rows recomputes the r rows either side of it that its blur reads)
BLOCK_ELEMENTS = 1 << 17        # elements per block of rows (at least one row)
EXACT_BLOCK_ELEMENTS = 1 << 16  # for the exact median of 81, which keeps ~70 block-sized temporaries
                                # (17 MB); blocks of a wider window are smaller in proportion
BLUR_ROWS = 8                   # output rows per banded product (2·(rows + 2r) flops per element) ...
BLUR_ELEMENTS = 1 << 15         # ... or more when rows are short, for products of this many elements
CHUNKS = 8                      # a tensor is cut into about this many runs of rows (for the threads) ...
CHUNK_ELEMENTS = 1 << 22        # ... of at most this many elements ...
CHUNK_MIN_ROWS = 32             # ... but at least this many rows
NETWORK_UP_TO = 300             # values a selection network takes (the exact median of 625 sorts instead)
FOLD_UP_TO = 16                 # a dimension this short is blurred by one n×n matrix
KRON_UP_TO = 64                 # trailing short dimensions are blurred by one matrix up to this size


class BlockBuffers:
    """One thread's buffers, and the steps made for each block shape (on those buffers)."""

    def __init__(self, scratch: Scratch):
        self.scratch = scratch
        self.blocks: Dict[int, BlockSteps] = {}

    def release(self) -> None:
        """The steps refer to the buffers: they go first, then the buffers go back."""
        self.blocks.clear()
        self.scratch.release()


@dataclass
class Smoothing:
    """G_σ(M(b - c)) for tensors viewed as (rows, *rest), with no length-1 dimension but
    possibly the rows. Blocks are laid out with the trailing short dimensions (a convolution's
    kernel) first, so that every step runs on long contiguous runs: ``layout`` is the order of the
    dimensions in a block's memory."""
    shape: Tuple[int, ...]
    median_size: int
    exact_median: bool
    weights: Optional[List[float]]  # None: no blur
    dtype: torch.dtype
    device: torch.device
    layout: Tuple[int, ...] = ()
    middle_blurs: List[Tuple[int, Optional[torch.Tensor], Tuple]] = field(default_factory=list)
    short_blur: Optional[torch.Tensor] = None  # the trailing short dimensions' blur, one matrix
    row_matrices: Dict[Tuple[int, int], Tuple[torch.Tensor, int, int]] = field(default_factory=dict)

    def __post_init__(self):
        radius = self.radius
        dims = list(range(1, len(self.shape)))
        short = []
        while dims and self.shape[dims[-1]] <= max(FOLD_UP_TO, 2 * radius) and \
                math.prod(self.shape[d] for d in short + [dims[-1]]) <= KRON_UP_TO:
            short.insert(0, dims.pop())
        self.layout = tuple(short + [0] + dims)
        if self.weights is None:
            return
        for dim in dims:
            n = self.shape[dim]
            if n <= max(FOLD_UP_TO, 2 * radius):
                self.middle_blurs.append((dim, self._full_matrix(n), ()))
            else:
                edges = tuple(blur_matrix(self.weights, n, start, start + radius, self.dtype, self.device)
                              for start in (0, n - radius))
                self.middle_blurs.append((dim, None, edges))
        if short:
            self.short_blur = functools.reduce(torch.kron, [self._full_matrix(self.shape[d]) for d in short])

    @property
    def radius(self) -> int:
        return len(self.weights) // 2 if self.weights is not None else 0

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def row_elements(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def median_halo(self) -> Tuple[int, int]:
        """Rows before and after a block that its median reads."""
        if self.median_size <= 1 or self.rows == 1:
            return 0, 0
        return window_halo(self.median_size)

    @property
    def blurs_rows(self) -> bool:
        return self.weights is not None and self.rows > 1

    @property
    def block_rows(self) -> int:
        """Rows per block."""
        elements = BLOCK_ELEMENTS
        if self.exact_median and self.median_size > 1:
            window = self.median_size ** sum(1 for n in self.shape if n > 1)
            elements = min(BLOCK_ELEMENTS, EXACT_BLOCK_ELEMENTS * 81 // window)
        return max(1, elements // self.row_elements)

    def _full_matrix(self, n: int) -> torch.Tensor:
        return blur_matrix(self.weights, n, 0, n, self.dtype, self.device)[0]

    @property
    def native_layout(self) -> bool:
        return self.layout == tuple(range(len(self.layout)))

    def position(self, dim: int) -> int:
        """Where dimension ``dim`` sits in a block."""
        return self.layout.index(dim)

    def block_shape(self, count: int) -> Tuple[int, ...]:
        return tuple(count if d == 0 else self.shape[d] for d in self.layout)

    # one block of rows: difference, median, blur within the rows

    def smooth_rows(self, b, c, start: int, stop: int, out: torch.Tensor, buffers: BlockBuffers) -> None:
        """out (stop - start, row elements) = rows start..stop-1 of M(b - c) blurred along every
        dimension but the rows."""
        count = stop - start
        if count not in buffers.blocks:
            buffers.blocks[count] = self.block_steps(count, buffers.scratch)
        before, after = self.median_halo
        first, last = start - before, stop + after
        if first >= 0 and last <= self.rows:
            index = slice(first, last)
        else:  # reflected rows
            index = reflect(torch.arange(first, last, device=b.device), self.rows)
        buffers.blocks[count].run(b[index], c[index] if c is not None else None, out)

    def block_steps(self, count: int, scratch: Scratch) -> BlockSteps:
        before, after = self.median_halo
        loaded = (count + before + after,) + self.shape[1:]
        difference = buffer(scratch, "difference", loaded)
        current = ["difference"]

        def other(shape) -> torch.Tensor:  # ping-pong between two block buffers
            current[0] = "block-b" if current[0] == "block-a" else "block-a"
            return buffer(scratch, current[0], shape)

        steps: Steps = []
        block = difference
        if not self.native_layout:
            # b and c are read once, in order (read across, they would stream through memory once per
            # kernel element), and the difference is laid out from the cache
            block = other(self.block_shape(loaded[0]))
            steps.append(functools.partial(block.copy_, difference.permute(self.layout)))
        if self.median_size > 1:
            median = self.exact_median_steps if self.exact_median else self.separable_median_steps
            block = median(block, count, steps, other, scratch)
        for dim, matrix, edges in self.middle_blurs:
            out = other(block.shape)
            if matrix is not None:
                steps += matrix_along_steps(matrix, as_three_dims(block, self.position(dim)),
                                            as_three_dims(out, self.position(dim)))
            else:
                steps += blur_long_steps(block, self.position(dim), self.weights, edges, out, scratch)
            block = out
        return BlockSteps(difference, steps, block, self.layout, self.short_blur)

    def separable_median_steps(self, rows: torch.Tensor, count: int, steps: Steps, other, scratch) -> torch.Tensor:
        """Median along the rows (``rows`` holds the halo rows too), then along each other dimension."""
        size, at = self.median_size, self.position(0)
        block = rows
        if self.rows > 1:
            block = other(self.block_shape(count))
            views = [rows.narrow(at, k, count) for k in range(size)]
            if size == 3:
                low, high = (buffer(scratch, name, block.shape) for name in ("median-low", "median-high"))
                steps += median3_steps(*views, block, low, high)
            else:
                steps += select_steps(views, size // 2, block, scratch)
        for dim in range(1, len(self.shape)):
            if size == 3:
                steps += median3_along_steps(block, self.position(dim), scratch)
            else:
                out = other(block.shape)
                steps += median_along_steps(block, self.position(dim), size, out, scratch)
                block = out
        return block

    def exact_median_steps(self, rows: torch.Tensor, count: int, steps: Steps, other, scratch) -> torch.Tensor:
        """The median of every element's size^N neighbourhood (``rows`` holds the halo rows too)."""
        size, at = self.median_size, self.position(0)
        halos = [(0, 0) if p == at else window_halo(size) for p in range(rows.dim())]
        padded = buffer(scratch, "median-padded", padded_shape(rows.shape, halos))
        steps += reflect_pad_steps(rows, halos, padded)
        block = other(self.block_shape(count))
        lengths = [self.shape[d] for d in self.layout]  # of the tensor, not of the block
        spans = [range(size) if n > 1 else range(1) for n in lengths]
        views = [padded[tuple(slice(o, o + n) for o, n in zip(offsets, block.shape))]
                 for offsets in itertools.product(*spans)]
        if len(views) <= NETWORK_UP_TO:
            steps += select_steps(views, len(views) // 2, block, scratch)
        else:
            steps += sorted_select_steps(views, len(views) // 2, block, scratch)
        return block

    # the blur along the rows

    def row_blur_matrix(self, start: int, stop: int) -> Tuple[torch.Tensor, int, int]:
        """:func:`blur_matrix` of dimension 0; blocks clear of both ends share one (made once)."""
        radius = self.radius
        inner = start >= radius and stop + radius <= self.rows
        key = (-1, stop - start) if inner else (start, stop)
        if key not in self.row_matrices:
            self.row_matrices[key] = blur_matrix(self.weights, self.rows, start, stop, self.dtype, self.device)
        matrix, lo, hi = self.row_matrices[key]
        return (matrix, start - radius, stop + radius) if inner else (matrix, lo, hi)

    # a run of rows: blocks of them smoothed into a window, blurred along the rows from there

    def smooth_chunk(self, b, c, start: int, stop: int, output: "Output", buffers: BlockBuffers) -> None:
        """Rows start..stop-1 of the result. The smoothed rows a blur reaches beyond the chunk are
        computed here too (again by the neighbouring chunk): every chunk is independent."""
        width, step, scratch = self.row_elements, self.block_rows, buffers.scratch
        if not self.blurs_rows:
            for first in range(start, stop, step):
                last = min(first + step, stop)
                rows = buffer(scratch, "rows", (last - first, width))
                self.smooth_rows(b, c, first, last, rows, buffers)
                output.write(first, last, rows)
            return
        low, high = max(start - self.radius, 0), min(stop + self.radius, self.rows)
        window = buffer(scratch, "window", (high - low, width))
        ready = low
        blur_step = max(BLUR_ROWS, BLUR_ELEMENTS // width)
        for first in range(start, stop, blur_step):
            last = min(first + blur_step, stop)
            matrix, lo, hi = self.row_blur_matrix(first, last)
            while ready < hi:
                end = min(ready + step, high)
                self.smooth_rows(b, c, ready, end, window[ready - low:end - low], buffers)
                ready = end
            output.blur_into(first, last, matrix, window[lo - low:hi - low], scratch)


class Output:
    """Writes rows of base + scale·value into ``out`` (rows, row elements); base and scale optional."""

    def __init__(self, out: torch.Tensor, base: Optional[torch.Tensor], scale):
        self.out, self.base, self.scale = out, base, scale

    def write(self, start: int, stop: int, value: torch.Tensor) -> None:
        out, base, scale = self.out[start:stop], self.base, self.scale
        if isinstance(scale, torch.Tensor):
            if base is None:
                torch.mul(value, scale[start:stop], out=out)
            else:
                torch.addcmul(base[start:stop], value, scale[start:stop], out=out)
        elif base is None:
            torch.mul(value, scale, out=out)
        else:
            torch.add(base[start:stop], value, alpha=scale, out=out)

    def blur_into(self, start: int, stop: int, matrix: torch.Tensor, rows: torch.Tensor, scratch: Scratch) -> None:
        """Rows start..stop-1 of base + scale·(matrix @ rows)."""
        out, base, scale = self.out[start:stop], self.base, self.scale
        if isinstance(scale, torch.Tensor):
            value = scratch.get("blurred", out.numel()).view(out.shape)
            self.write(start, stop, torch.mm(matrix, rows, out=value))
        elif base is None:
            torch.mm(matrix * scale if scale != 1 else matrix, rows, out=out)
        else:
            torch.addmm(base[start:stop], matrix, rows, alpha=scale, out=out)


def chunk_rows(plan: Smoothing) -> int:
    """Rows per run (the runs of a tensor depend on its shape only, never on the threads)."""
    rows = -(-plan.rows // CHUNKS)
    return max(min(rows, CHUNK_ELEMENTS // plan.row_elements), CHUNK_MIN_ROWS, 1)


def add_smoothed_difference(base: Optional[torch.Tensor], scale, b: torch.Tensor, c: Optional[torch.Tensor],
                            median_size: int = 3, sigma: float = 1.0, exact_median: bool = False,
                            truncate: float = 4.0, *, work: Optional[Workspace] = None) -> torch.Tensor:
    """base + scale·G_σ(M(b - c)), M the exact or separable median of width ``median_size`` (1:
    none), G_σ the Gaussian blur (σ = 0: none). ``base`` and ``c`` may be None (zero); ``scale``
    is a number or a tensor broadcastable to b. ``work``: the merge's workspace (default: one
    that lends nothing)."""
    work = work or Workspace()
    out = work.empty_like(b)  # contiguous, whatever b's layout
    if b.numel() == 0:
        return out
    shape = tuple(n for n in b.shape if n > 1) or (1,)
    if len(shape) == 1:
        shape = (1,) + shape  # one row: every dimension is within the row
    blur = sigma > 1e-15 and math.isfinite(sigma)
    plan = Smoothing(shape, median_size, exact_median, gaussian_weights(sigma, truncate) if blur else None,
                     b.dtype, b.device)
    rows, width = plan.rows, plan.row_elements
    inputs = [t.reshape(shape) if t is not None else None for t in (b, c)]
    if isinstance(scale, torch.Tensor) and scale.numel() == 1:
        scale = float(scale.item())
    if isinstance(scale, torch.Tensor):
        scale = scale.to(dtype=b.dtype, device=b.device).expand(b.shape).reshape(rows, width)
    output = Output(out.view(rows, width), base.reshape(rows, width) if base is not None else None, scale)

    def chunk(start: int, stop: int, buffers: BlockBuffers) -> None:
        plan.smooth_chunk(*inputs, start // width, stop // width, output, buffers)

    spans = ranges(rows * width, chunk_rows(plan) * width, width)
    work.for_each_range(spans, chunk, lambda: BlockBuffers(work.scratch(b)))
    return out


def median_filter(x: torch.Tensor, size: int = 3) -> torch.Tensor:
    """The median of each element's size^N neighbourhood (N = x.dim()): scipy.ndimage.median_filter."""
    return add_smoothed_difference(None, 1.0, x, None, size, 0.0, exact_median=True)


def separable_median_filter(x: torch.Tensor, size: int = 3) -> torch.Tensor:
    """The median of ``size`` neighbours along dimension 0, then along 1 of that, and so on."""
    return add_smoothed_difference(None, 1.0, x, None, size, 0.0)


def gaussian_filter(x: torch.Tensor, sigma: float = 1.0, truncate: float = 4.0) -> torch.Tensor:
    """Gaussian blur along every dimension: scipy.ndimage.gaussian_filter(x, sigma, truncate=truncate)."""
    return add_smoothed_difference(None, 1.0, x, None, 1, sigma, truncate=truncate)
