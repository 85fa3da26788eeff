"""N-dimensional median and Gaussian filters in torch, for smoothing differences.

Both treat every dimension of the tensor as a spatial axis and extend the borders by
half-sample reflection (``d c b a | a b c d | d c b a``), the conventions of
``scipy.ndimage.median_filter`` and ``gaussian_filter`` (whose defaults SuperMerger's smooth
add difference uses). The median works on blocks of rows so its memory stays bounded.
"""
from __future__ import annotations

import itertools
import math

import torch

# elements per block of window copies in median_filter (3^4 copies of a 1280x1280x3x3 key would need 4.8 GB)
MEDIAN_BLOCK_ELEMENTS = 1 << 23


def reflect_indices(n: int, radius: int, device=None) -> torch.Tensor:
    """Indices into a length-n axis for positions -radius .. n-1+radius, reflected at the borders."""
    positions = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(positions >= n, 2 * n - 1 - positions, positions)


def reflect_pad(x: torch.Tensor, radius: int, dims=None) -> torch.Tensor:
    for dim in (range(x.dim()) if dims is None else dims):
        x = x.index_select(dim, reflect_indices(x.shape[dim], radius, x.device))
    return x


def median_filter(x: torch.Tensor, size: int = 3) -> torch.Tensor:
    """The median of each element's size^N neighbourhood (N = x.dim())."""
    if x.dim() == 0 or x.numel() == 0 or size <= 1:
        return x.clone()
    radius = size // 2
    padded = reflect_pad(x, radius)
    window = size ** x.dim()
    row_elements = max(1, x[0].numel())
    rows_per_block = max(1, MEDIAN_BLOCK_ELEMENTS // (window * row_elements))
    offsets = list(itertools.product(range(size), repeat=x.dim()))
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], rows_per_block):
        stop = min(start + rows_per_block, x.shape[0])
        copies = []
        for offset in offsets:
            index = [slice(start + offset[0], stop + offset[0])]
            index += [slice(o, o + n) for o, n in zip(offset[1:], x.shape[1:])]
            copies.append(padded[tuple(index)])
        out[start:stop] = torch.stack(copies, dim=-1).median(dim=-1).values
    return out


def gaussian_kernel(sigma: float, truncate: float = 4.0, dtype=torch.float32, device=None) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum()).to(dtype=dtype, device=device)


def gaussian_filter(x: torch.Tensor, sigma: float = 1.0, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur along every dimension (kernel radius ``int(truncate·sigma + 0.5)``)."""
    if x.dim() == 0 or x.numel() == 0 or sigma <= 1e-15 or not math.isfinite(sigma):
        return x.clone()
    kernel = gaussian_kernel(sigma, truncate, x.dtype, x.device)
    radius = (kernel.numel() - 1) // 2
    for dim in range(x.dim()):
        n = x.shape[dim]
        padded = x.index_select(dim, reflect_indices(n, radius, x.device))
        blurred = torch.zeros_like(x)
        for tap, weight in enumerate(kernel):
            blurred.add_(padded.narrow(dim, tap, n), alpha=float(weight))
        x = blurred
    return x
