"""A real, even filter applied to the N-dimensional spectrum of a tensor, in cache-sized passes.

``filtered = ifftn(W · fftn(x))`` for a real ``W`` that depends on each frequency index ``k``
through ``|k|`` only (crossover's filter). Because ``W`` is real and even, the result does not
depend on which dimension the real transform halves, and along any dimension ``W`` is
diagonal in the real cosine/sine basis as well as in the Fourier one. So the tensor is seen
as ``(P, R, C)``:

* ``C``, a small trailing block (a conv kernel's 3×3), is mixed by a ``C × C`` orthonormal
  cosine/sine basis: one small matrix product instead of FFTs of length 3;
* ``R``, the last dimension outside that block, gets a real FFT of each contiguous row;
* ``P``, the leading dimensions, get complex FFTs of the transposed spectrum.

Three passes, each over blocks that stay in the core's cache and spread over the threads the
engine grants (:class:`lib_mecha.workspace.Workspace`; blocks are fixed by the shape, so the
result does not depend on the thread count): rows → (basis, real FFT) → transposed spectrum; rows of the
transposed spectrum → (FFTs, ·W, inverse FFTs) → spectrum; spectrum rows → (inverse real FFT,
basis) → output rows.

Only one-dimensional transforms are called. In the MKL backend of torch's CPU builds (seen
with torch 2.13), a multi-dimensional complex transform over leading dimensions, batched over
a trailing one (a stride-1 batch), corrupts the heap for some sizes: ``fftn`` over dimensions
0 and 1 of complex ``(2, 200, 2)``, ``(9, 256, 2)`` or ``(9, 640, 321)`` tensors. ``irfftn``
runs such a transform (over all dimensions but the last, batched over the halved last one),
so ``irfftn`` of a real ``(9, 640, 640)`` tensor aborts the process.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import torch

from ..memory import Scratch
from ..workspace import Workspace, ranges

# Trailing dimensions with at most this many elements in all are mixed by a real basis (a
# C × C matrix product: 2·C multiply-adds per element and direction) instead of FFT'd.
BASIS_ELEMENTS = 64
# Real elements per block of a pass: a block stays in the core's cache between the steps of
# its pass, and torch's per-call overhead (MKL makes an FFT plan per call) stays small.
BLOCK_ELEMENTS = 1 << 17
# Fewest rows per block: tiles narrower than this make the transposing copies slow.
MIN_ROWS = 16


@dataclass(frozen=True)
class Layout:
    """A tensor of ``shape`` seen as ``(P, R, C)``.

    ``lead``, ``row`` and ``basis`` hold ``(original dimension, size)`` pairs: the leading
    dimensions (complex FFTs; ``P`` is the product of their sizes), the dimension of the real
    FFT (``R``) and the trailing block mixed by a real basis (``C``, 1 when empty). Dimensions
    of size 1 belong to none of them.
    """
    shape: Tuple[int, ...]
    lead: Tuple[Tuple[int, int], ...]
    row: Tuple[int, int]
    basis: Tuple[Tuple[int, int], ...]

    @property
    def P(self) -> int:
        return math.prod(size for _, size in self.lead)

    @property
    def R(self) -> int:
        return self.row[1]

    @property
    def C(self) -> int:
        return math.prod(size for _, size in self.basis)

    @property
    def H(self) -> int:
        """Length of a row's real FFT: frequencies 0 … R // 2."""
        return self.R // 2 + 1


def layout_of(shape: Sequence[int]) -> Layout:
    """Lead, row and basis dimensions of a tensor of this shape: the longest trailing block of at
    most ``BASIS_ELEMENTS`` elements that leaves two dimensions to transform goes to the basis.
    ``lead`` is empty when at most one dimension is longer than 1."""
    dims = [(d, size) for d, size in enumerate(shape) if size > 1] or [(len(shape) - 1, 1)]
    split = len(dims)
    while split > 2 and math.prod(size for _, size in dims[split - 1:]) <= BASIS_ELEMENTS:
        split -= 1
    return Layout(tuple(shape), tuple(dims[:split - 1]), dims[split - 1], tuple(dims[split:]))


def real_fourier_basis(size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """An orthonormal basis of R^n made of sampled cosines and sines (float64, one per row) and
    the frequency ``|k|`` of each row: ``1/√n``; ``√(2/n)·cos(2πkj/n)`` and ``√(2/n)·sin(2πkj/n)``
    for ``0 < k < n/2``; ``(-1)^j/√n`` for ``k = n/2``. A real filter that depends on ``|k|``
    only is diagonal in it."""
    j = torch.arange(size, dtype=torch.float64)
    rows, classes = [torch.full((size,), 1 / math.sqrt(size), dtype=torch.float64)], [0]
    for k in range(1, size // 2 + 1):
        angle = 2 * math.pi * k * j / size
        if 2 * k == size:
            rows.append(torch.cos(angle) / math.sqrt(size))
            classes.append(k)
        else:
            rows += [torch.cos(angle) * math.sqrt(2 / size), torch.sin(angle) * math.sqrt(2 / size)]
            classes += [k, k]
    return torch.stack(rows), torch.tensor(classes)


def layout_basis(layout: Layout) -> Tuple[torch.Tensor, list]:
    """The ``C × C`` basis of the trailing block (the Kronecker product of its dimensions'
    bases) and, per dimension of the block, the ``|k|`` of every basis row."""
    matrix, classes = torch.ones(1, 1, dtype=torch.float64), []
    for _, size in layout.basis:
        q, k = real_fourier_basis(size)
        matrix = torch.kron(matrix, q)
        classes = [c.repeat_interleave(size) for c in classes] + [k.repeat(matrix.shape[0] // size)]
    return matrix, classes


class TiledMatrix:
    """A ``rows × columns`` matrix kept as tiles of ``width`` columns, each tile contiguous
    (``rows × width``). Writing a tile, or reading a block of rows (one contiguous piece per
    tile), touches few memory pages: a block written transposed into a row-major matrix lands
    on another page every row, and those TLB misses cost more than the FFTs."""

    def __init__(self, storage: torch.Tensor, rows: int, columns: int, width: int):
        self.columns, self.width = columns, width
        self.tiles = storage[:self.numel(rows, columns, width)].view(-1, rows, width)

    @staticmethod
    def numel(rows: int, columns: int, width: int) -> int:
        return -(-columns // width) * rows * width

    def write_tile(self, index: int, block: torch.Tensor) -> None:
        """Columns ``index·width …`` (as many as ``block`` has) of every row."""
        self.tiles[index, :, :block.shape[1]].copy_(block)

    def read_rows(self, start: int, end: int, out: torch.Tensor) -> torch.Tensor:
        """Rows ``start:end`` into ``out`` (``(end - start) × columns``)."""
        full, rest = divmod(self.columns, self.width)
        if full:
            out[:, :full * self.width].view(end - start, full, self.width).copy_(
                self.tiles[:full, start:end].permute(1, 0, 2))
        if rest:
            out[:, full * self.width:].copy_(self.tiles[full, start:end, :rest])
        return out


@functools.lru_cache(maxsize=64)
def batches_slowly(length: int) -> bool:
    """Whether MKL runs a batch of complex FFTs of this length slower than one at a time: long
    lengths with a large prime factor (49408 = 2^8·193, 49664 = 2^9·97), but not primes (4099)
    nor lengths of small factors (49152 = 2^14·3), which batch faster (bench/README.md)."""
    factor, largest, rest = 2, 1, length
    while factor * factor <= rest:
        while rest % factor == 0:
            largest, rest = factor, rest // factor
        factor += 1
    largest = max(largest, rest)
    return largest >= 97 and length // largest >= 64


def fft_along(block: torch.Tensor, axis: int, inverse: bool) -> torch.Tensor:
    """The (inverse) complex FFT of ``block`` along ``axis`` (> 0), batched over the other axes."""
    transform = torch.fft.ifft if inverse else torch.fft.fft
    if not batches_slowly(block.shape[axis]):
        return transform(block, dim=axis)
    out = torch.empty_like(block)
    for i in range(block.shape[0]):
        out[i] = transform(block[i], dim=axis - 1)
    return out


class PassSizes:
    """Block sizes of the passes: rows of the tensor per block of passes 1 and 3 (the tile width
    of the transposed spectrum), rows of the transposed spectrum per block of pass 2 (the tile
    width of the spectrum)."""

    def __init__(self, layout: Layout):
        self.rows = max(MIN_ROWS, BLOCK_ELEMENTS // (layout.R * layout.C))
        self.spectrum_rows = max(MIN_ROWS, BLOCK_ELEMENTS // (2 * layout.P))


def filter_difference(a: torch.Tensor, b: torch.Tensor, layout: Layout, basis: Optional[torch.Tensor],
                      weights: Callable[[int, int], torch.Tensor], work: Workspace) -> torch.Tensor:
    """``a + ifftn(W · fftn(b - a))``, computed on ``layout`` (``a``'s shape, float32 or float64).

    ``weights(start, end)`` gives ``W`` for the rows ``start:end`` of the transposed spectrum,
    shape ``(end - start, P)``: row ``c·H + k`` holds basis row ``c`` at real-FFT frequency
    ``k``, its columns the leading dimensions' frequencies (flattened in their order). It is
    called from the granted threads too. ``basis`` is the ``C × C`` basis of
    :func:`layout_basis` in ``a``'s dtype (None when ``C = 1``)."""
    return SpectrumPasses(a, b, layout, basis, weights, work).run()


class SpectrumPasses:
    """One call of :func:`filter_difference`: its buffers and its three passes."""

    def __init__(self, a, b, layout: Layout, basis: Optional[torch.Tensor], weights: Callable, work: Workspace):
        self.layout, self.basis, self.weights, self.work = layout, basis, weights, work
        P, R, C, H = layout.P, layout.R, layout.C, layout.H
        self.a, self.b = a.reshape(P, R, C), b.reshape(P, R, C)
        self.complex_dtype = torch.complex128 if a.dtype == torch.float64 else torch.complex64
        self.sizes = PassSizes(layout)
        # spectrum of the rows: transposed (C·H × P, tiles of a row block) after pass 1, back to
        # P × C·H (tiles of a pass-2 block) after pass 2
        shapes = {"transposed": (C * H, P, self.sizes.rows), "spectrum": (P, C * H, self.sizes.spectrum_rows)}
        # key-sized: lent by the engine during a merge (fresh memory faults its pages in), and
        # counted in crossover's estimate
        self.transposed, self.spectrum = (
            TiledMatrix(work.empty(TiledMatrix.numel(*shape), self.complex_dtype, a.device), *shape)
            for shape in shapes.values())
        self.out = work.empty(P * R * C, a.dtype, a.device).view(P, R, C)
        self.lead = [size for _, size in layout.lead]

    def run(self) -> torch.Tensor:
        layout, sizes = self.layout, self.sizes
        row_spans = ranges(layout.P, sizes.rows)
        self.work.for_each_range(row_spans, self.forward_rows, self.scratch)
        self.work.for_each_range(ranges(layout.C * layout.H, sizes.spectrum_rows), self.filter_spectrum_rows,
                                 self.scratch)
        self.work.for_each_range(row_spans, self.inverse_rows, self.scratch)
        return self.out.view(layout.shape)

    def scratch(self) -> Scratch:
        """A thread's buffers for one pass. ``torch.get_num_threads`` first: until torch has set up
        a thread (which its parallel ops do too), MKL runs that thread's FFTs on every core, and
        two such threads slow each other down."""
        torch.get_num_threads()
        return self.work.scratch(self.a)

    def forward_rows(self, start: int, end: int, scratch: Scratch) -> None:
        """Rows ``start:end`` of ``b - a`` → basis → real FFT → a tile of the transposed spectrum."""
        rows, R, C = end - start, self.layout.R, self.layout.C
        d = torch.sub(self.b[start:end], self.a[start:end], out=scratch.get("d", rows * R * C).view(rows, R, C))
        y = torch.matmul(self.basis, d.transpose(1, 2)) if C > 1 else d.view(rows, 1, R)
        spectrum = torch.fft.rfft(y, dim=-1).view(rows, -1)
        self.transposed.write_tile(start // self.sizes.rows, spectrum.t())

    def filter_spectrum_rows(self, start: int, end: int, scratch: Scratch) -> None:
        """Rows ``start:end`` of the transposed spectrum → FFTs of the leading dimensions → ·W →
        inverse FFTs → a tile of the spectrum."""
        rows, P = end - start, self.layout.P
        block = self.transposed.read_rows(start, end, scratch.get("t", rows * P, self.complex_dtype).view(rows, P))
        block = block.view(rows, *self.lead)
        for axis in range(len(self.lead), 0, -1):
            block = fft_along(block, axis, inverse=False)
        block.mul_(self.weights(start, end).view(rows, *self.lead))
        for axis in range(len(self.lead), 0, -1):
            block = fft_along(block, axis, inverse=True)
        self.spectrum.write_tile(start // self.sizes.spectrum_rows, block.reshape(rows, P).t())

    def inverse_rows(self, start: int, end: int, scratch: Scratch) -> None:
        """Rows ``start:end`` of the spectrum → inverse real FFT → basis → + a → the output's rows."""
        rows, R, C, H = end - start, self.layout.R, self.layout.C, self.layout.H
        s = self.spectrum.read_rows(start, end, scratch.get("s", rows * C * H, self.complex_dtype).view(rows, C * H))
        y = torch.fft.irfft(s.view(rows, C, H), n=R, dim=-1)
        y = torch.matmul(y.transpose(1, 2), self.basis) if C > 1 else y.view(rows, R, 1)
        torch.add(self.a[start:end], y, out=self.out[start:end])
