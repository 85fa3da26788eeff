"""Small helpers shared by the method families: scalar parameters that may arrive as tensors,
running a whole-tensor method on 0-dim inputs, and the slices whole-tensor methods loop over."""
from __future__ import annotations

import math

import torch

from ..errors import ParameterError
from ..workspace import ranges

# The elementwise work of whole-tensor methods runs over slices of this many elements, with
# reused buffers: key-sized temporaries would each fault their pages in and stream through
# memory. Smaller slices make the threads queue for the GIL between small ops, larger ones
# no longer fit in a core's cache (bench/README.md has the measurements behind the choice).
SLICE_ELEMENTS = 1 << 18


def slices(n: int, row: int = 1):
    """``(start, end)`` ranges of at most SLICE_ELEMENTS covering ``n`` elements, each a whole
    number of ``row``-long rows."""
    return ranges(n, SLICE_ELEMENTS, row)


def scalar(method: str, name: str, value) -> float:
    """A per-key parameter that the method needs as one number.

    The engine passes per-key values as Python scalars, or as a tensor when a mask feeds the
    parameter; a method that cannot use a mask takes a one-element tensor and refuses the rest.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ParameterError(method, name, "takes one number per key, not a mask",
                                 "give a number or block weights instead of a tensor-valued recipe")
        return float(value.item())
    return float(value)


def is_close(value, target: float) -> bool:
    """``value ≈ target`` for a scalar or a one-element tensor; False for a mask."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return False
        value = value.item()
    return math.isclose(float(value), target, rel_tol=1e-9, abs_tol=1e-12)


def as_tensor_like(value, like: torch.Tensor) -> torch.Tensor:
    """A scalar or tensor parameter as a tensor on ``like``'s device and dtype (for broadcasting)."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def finite_or_zero_(t: torch.Tensor) -> torch.Tensor:
    """NaN and ±Inf become 0, in place."""
    return t.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def at_least_1d(*tensors):
    """Views of the inputs with 0-dim ones as shape (1,), and a function that undoes it."""
    zero_dim = tensors[0].dim() == 0
    if not zero_dim:
        return tensors, lambda t: t
    return tuple(t.reshape(1) for t in tensors), lambda t: t.reshape(())


def largest_magnitude(t: torch.Tensor) -> float:
    """``max |t|`` of a non-empty tensor, NaN if it holds a NaN; one ``aminmax`` pass (a fraction
    of ``vector_norm(t, inf)``'s cost)."""
    low, high = torch.aminmax(t)
    return float(torch.maximum(low.neg(), high))
