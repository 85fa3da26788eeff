"""Frequency crossover: low frequencies from A, high frequencies from B (sd-mecha's ``crossover``).

The tensor is taken to the frequency domain (``rfftn`` over every dimension). Each frequency
gets a normalised radius ``r`` in [0, 1] (the root mean square of its per-dimension frequency
index, each divided by the dimension's Nyquist index), and a filter ``F(r)`` mixes
``(1 - F)·Â + F·B̂``. With ``tilt = 0`` the filter is a hard step ``F = [r > 1 - alpha]``;
as tilt grows it becomes a ramp of slope ``cot(π·tilt/2)`` through the point where the step
was, and ``tilt = 1`` degenerates to a plain weighted sum. Tilt is taken modulo 4; between 2
and 4 the roles of low and high frequencies swap.

By linearity ``(1 - F)·Â + F·B̂ = Â + F·(B - A)^``: only the difference is transformed. On the
CPU that runs in cache-sized passes of one-dimensional transforms (:mod:`._fft_passes`, which
also says why ``irfftn`` itself is avoided); the filter of each key is kept for the next key of
the same shape and parameters (by each thread, until the merge ends). Other devices use
``rfftn``/``irfftn``.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Callable, Optional, Sequence

import torch

from ..workspace import Workspace
from ._fft_passes import Layout, filter_difference, layout_basis, layout_of
from ._values import is_close, scalar
from .registry import merge_method
from .spec import SAME, Float, KeyWorkspace, Tensor

# Each thread keeps the filters of its last keys, up to this many and this many bytes.
FILTERS_KEPT = 4
FILTER_CACHE_BYTES = 128 << 20
# allclose(a, b) is first checked on this many elements: inputs that differ mostly differ there.
CLOSE_PREFIX = 4096


# --- the filter ----------------------------------------------------------------------------------

def folded_coordinates(size: int, device=None) -> torch.Tensor:
    """``|f| / (size // 2)`` at every index of a full FFT axis of length ``size`` (``f`` the signed
    frequency of the index)."""
    if size == 1:
        return torch.linspace(0, 1, 1, device=device)
    positive = torch.linspace(0, (size - 1) // 2, size - size // 2, device=device)
    negative = torch.linspace(size // 2, 1, size // 2, device=device)
    return torch.cat([positive, negative]) / (size // 2)


def half_coordinates(size: int, last: bool, device=None) -> torch.Tensor:
    """The coordinate of each frequency ``|f| = 0 … size // 2`` of a dimension of length ``size``;
    ``last``: the dimension ``rfftn`` halves, whose coordinates are ``linspace(0, 1, ·)``."""
    if last:
        return torch.linspace(0, 1, size // 2 + 1, device=device)
    return folded_coordinates(size, device)[:size // 2 + 1]


def frequency_radius(shape: Sequence[int], device=None) -> torch.Tensor:
    """Normalised frequency radius of every bin of an ``rfftn`` output of the given shape."""
    last = len(shape) - 1
    squares = None
    for dim, size in enumerate(shape):
        coordinate = torch.linspace(0, 1, size, device=device) if dim == last else folded_coordinates(size, device)
        view = [1] * len(shape)
        view[dim] = size
        term = coordinate.reshape(view) ** 2
        squares = term if squares is None else squares + term
    return radius_from_squares(squares, len(shape))


def radius_from_squares(squares: torch.Tensor, ndim: int) -> torch.Tensor:
    """``r = sqrt(Σ coordinate² / ndim)``; one dimension: ``sqrt(coordinate²)`` (as sd-mecha)."""
    if ndim == 1:
        return squares.sqrt()
    return (squares / ndim).sqrt()


def filter_weight(radius: torch.Tensor, alpha: float, tilt: float) -> torch.Tensor:
    """The mixing weight of B at each radius (0 = A, 1 = B)."""
    tilt = tilt - math.floor(tilt / 4) * 4
    inverted = tilt > 2
    if inverted:
        alpha = 1 - alpha
    if tilt < 1e-10 or abs(tilt - 4) < 1e-10:
        weight = (radius > 1 - alpha).float()
    elif abs(tilt - 2) < 1e-10:
        weight = (radius < 1 - alpha).float()
    else:
        cot = 1 / math.tan(math.pi * tilt / 2)
        if tilt <= 1 or 2 < tilt <= 3:
            weight = radius * cot + alpha * cot + alpha - cot
        else:
            weight = radius * cot - alpha * cot + alpha
        weight = weight.clamp(0, 1)
    return 1 - weight if inverted else weight


def crossover_filter(shape: Sequence[int], alpha: float, tilt: float, device=None) -> torch.Tensor:
    """The mixing weight of B per frequency bin of an ``rfftn`` output of the given shape."""
    return filter_weight(frequency_radius(shape, device), alpha, tilt)


class LayoutSquares:
    """``Σ coordinate²`` of every frequency of a layout's transposed spectrum (see
    :func:`._fft_passes.filter_difference`), block by block.

    The leading dimensions' frequencies are full FFT axes; the real FFT's are ``0 … R // 2``;
    a basis row stands for its frequencies ``|k|``. A dimension's coordinates are those
    ``rfftn``'s layout gives it (``linspace(0, 1, ·)`` for the last dimension, which ``rfftn``
    halves), and the terms are added in the order of the original dimensions, as
    :func:`frequency_radius` does: every radius is the same float as there, so a hard step
    cuts at the same bins.
    """

    def __init__(self, layout: Layout, device=None):
        self.layout = layout
        last = len(layout.shape) - 1
        rows = torch.arange(layout.C * layout.H, device=device)
        basis_row, frequency = rows // layout.H, rows % layout.H
        terms = {}  # original dimension -> ("lead", view over the leading axes) or ("row", per spectrum row)
        for i, (dim, size) in enumerate(layout.lead):
            view = [1] * (1 + len(layout.lead))
            view[1 + i] = size
            terms[dim] = ("lead", (folded_coordinates(size, device) ** 2).reshape(view))
        dim, size = layout.row
        terms[dim] = ("row", (half_coordinates(size, dim == last, device) ** 2)[frequency])
        for (dim, size), k in zip(layout.basis, layout_basis(layout)[1]):
            terms[dim] = ("row", (half_coordinates(size, dim == last, device) ** 2)[k.to(device)[basis_row]])
        self.terms = [terms[dim] for dim in sorted(terms)]

    def block(self, start: int, end: int) -> torch.Tensor:
        """Rows ``start:end``, shape ``(end - start, P)``."""
        ones = [1] * len(self.layout.lead)
        squares = None
        for kind, term in self.terms:
            term = term if kind == "lead" else term[start:end].reshape(-1, *ones)
            squares = term if squares is None else squares + term
        return squares.reshape(end - start, self.layout.P)


class FilterStore:
    """A thread's filters of its last keys, by shape, alpha, tilt and device (keys of one shape
    run one after another: the engine merges the biggest first). Each thread of a merge has
    its own (``work.per_thread(FilterStore)``): a filter's memory is reused for the next one
    while no other thread can be reading it."""

    def __init__(self):
        self.filters: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()

    def get(self, key: tuple) -> Optional[torch.Tensor]:
        found = self.filters.get(key)
        if found is not None:
            self.filters.move_to_end(key)
        return found

    def room_for(self, numel: int, device) -> Optional[torch.Tensor]:
        """Memory for one more filter, after dropping the least recently used ones as needed (one
        of theirs when it has the size: fresh memory faults its pages in); None when a filter
        this big is not kept."""
        if numel * 4 > FILTER_CACHE_BYTES:
            return None
        spare = None
        while self.filters and (len(self.filters) >= FILTERS_KEPT or
                                numel * 4 + sum(f.numel() * 4 for f in self.filters.values()) > FILTER_CACHE_BYTES):
            _, dropped = self.filters.popitem(last=False)
            if dropped.numel() == numel and dropped.device == torch.device(device):
                spare = dropped
        return spare if spare is not None else torch.empty(numel, device=device)

    def keep(self, key: tuple, weights: torch.Tensor) -> None:
        self.filters[key] = weights


_layout_parts: "OrderedDict[tuple, tuple]" = OrderedDict()
_layout_parts_lock = threading.Lock()


def layout_parts(shape: Sequence[int], dtype: torch.dtype, device) -> tuple:
    """The layout of a shape, its basis in ``dtype`` and its :class:`LayoutSquares` (the last 16
    shapes' are kept)."""
    key = (tuple(shape), dtype, str(device))
    with _layout_parts_lock:
        if key in _layout_parts:
            _layout_parts.move_to_end(key)
            return _layout_parts[key]
    layout = layout_of(shape)
    basis = layout_basis(layout)[0].to(dtype=dtype, device=device) if layout.basis else None
    parts = (layout, basis, LayoutSquares(layout, device))
    with _layout_parts_lock:
        _layout_parts[key] = parts
        while len(_layout_parts) > 16:
            _layout_parts.popitem(last=False)
    return parts


def filter_blocks(squares: LayoutSquares, alpha: float, tilt: float, keep_into: Optional[torch.Tensor]
                  ) -> Callable[[int, int], torch.Tensor]:
    """The filter of the transposed spectrum block by block, also written into ``keep_into``."""
    layout = squares.layout

    def block(start: int, end: int) -> torch.Tensor:
        weights = filter_weight(radius_from_squares(squares.block(start, end), len(layout.shape)), alpha, tilt)
        if keep_into is not None:
            keep_into[start:end] = weights
        return weights
    return block


def transform_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    """float64 when an input is, else float32 (the CPU FFTs take nothing else)."""
    return torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32


def transformed_crossover(a: torch.Tensor, b: torch.Tensor, alpha: float, tilt: float,
                          work: Workspace) -> torch.Tensor:
    """The crossover of a tensor with two or more dimensions longer than 1, on the CPU."""
    dtype = transform_dtype(a, b)
    layout, basis, squares = layout_parts(a.shape, dtype, a.device)
    key = (tuple(a.shape), alpha, tilt, str(a.device))
    filters = work.per_thread(FilterStore)
    kept = filters.get(key)
    if kept is not None:
        out = filter_difference(a.to(dtype), b.to(dtype), layout, basis, lambda start, end: kept[start:end], work)
    else:
        room = filters.room_for(layout.C * layout.H * layout.P, a.device)
        weights = room.view(layout.C * layout.H, layout.P) if room is not None else None
        out = filter_difference(a.to(dtype), b.to(dtype), layout, basis, filter_blocks(squares, alpha, tilt, weights),
                                work)
        if weights is not None:
            filters.keep(key, weights)
    return out.to(a.dtype)


def single_axis_crossover(a: torch.Tensor, b: torch.Tensor, alpha: float, tilt: float) -> torch.Tensor:
    """The crossover of a tensor with at most one dimension longer than 1: one real FFT."""
    dim, size = layout_of(a.shape).row
    squares = half_coordinates(size, dim == a.dim() - 1, a.device) ** 2
    spectrum = torch.fft.rfft((b - a).reshape(-1).to(transform_dtype(a, b)))
    spectrum.mul_(filter_weight(radius_from_squares(squares, a.dim()), alpha, tilt))
    return torch.fft.irfft(spectrum, n=size).view(a.shape).to(a.dtype).add_(a)


def whole_tensor_crossover(a: torch.Tensor, b: torch.Tensor, alpha: float, tilt: float) -> torch.Tensor:
    """``rfftn``/``irfftn`` over the whole tensor (devices other than the CPU)."""
    spectrum = torch.fft.rfftn(b - a, s=a.shape)
    spectrum.mul_(crossover_filter(spectrum.shape, alpha, tilt, device=a.device))
    return torch.fft.irfftn(spectrum, s=a.shape).to(a.dtype).add_(a)


def all_close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``torch.allclose(a, b)``, answered from a prefix when they differ there (most inputs do)."""
    if a.numel() > CLOSE_PREFIX:
        if not torch.allclose(a.reshape(-1)[:CLOSE_PREFIX], b.reshape(-1)[:CLOSE_PREFIX]):
            return False
    return torch.allclose(a, b)


# two complex spectra of about half the key's entries each, and the filter's weights (kept for
# the next key of the shape): in float32 elements per entry
SPECTRUM_TEMPORARIES = 2.5


@merge_method(returns=SAME, label="Frequency crossover", category="spectral", temporaries=SPECTRUM_TEMPORARIES,
              help="Low frequencies of the weights from A, high frequencies from B (FFT over the whole tensor).")
def crossover(a=Tensor(SAME), b=Tensor(SAME),
              alpha=Float(0.5, minimum=0.0, maximum=1.0, per_key=True,
                          help="Share of the spectrum taken from B, starting at the highest frequencies."),
              tilt=Float(0.0, soft_minimum=0.0, soft_maximum=1.0, per_key=True,
                         help="0 is a hard cut between A's and B's frequencies; toward 1 it blurs into a "
                              "plain weighted sum."),
              work=KeyWorkspace()):
    alpha = scalar("crossover", "alpha", alpha)
    tilt = scalar("crossover", "tilt", tilt)
    if alpha == 0:
        return a
    if alpha == 1:
        return b
    if is_close(tilt, 1.0) or a.dim() == 0 or a.numel() == 0 or all_close(a, b):
        return torch.lerp(a, b, alpha)
    if a.device.type != "cpu":
        return whole_tensor_crossover(a, b, alpha, tilt)
    if not layout_of(a.shape).lead:
        return single_axis_crossover(a, b, alpha, tilt)
    return transformed_crossover(a, b, alpha, tilt, work)
