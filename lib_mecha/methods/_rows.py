"""Statistics of the rows of a slice (its last dimension): sums, norms and cosines, in a loop's
reused buffers. Model Stock and ``extract_features`` work per row of a weight.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ..memory import Scratch

# Rows at most this long (a conv weight's kernel width: 3) are summed by adding their columns:
# torch's reductions over a few elements per row cost several times as much.
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
    slice's size faults its pages in every time."""

    def __init__(self, like: torch.Tensor, scratch: Optional[Scratch]):
        self.scratch = scratch if scratch is not None else Scratch(like)
        self.dtype = like.dtype

    def product(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x * y``, in a buffer that the next call overwrites."""
        return torch.mul(x, y, out=self.scratch.get("row product", x.numel(), self.dtype).view(x.shape))

    def rows(self, name, like: torch.Tensor) -> torch.Tensor:
        """A buffer with one element per row of ``like``."""
        return self.scratch.get(("row", name), like[..., 0].numel(), self.dtype).view(like.shape[:-1])


# The smallest normal float32. MKL's square root takes a slow path for 0 (and subnormals),
# which mostly-zero rows (a sparse delta after TIES's trim or DARE's dropout) are full of.
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
