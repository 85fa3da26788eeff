"""Frequency crossover: low frequencies from A, high frequencies from B (sd-mecha's ``crossover``).

The tensor is taken to the frequency domain (``rfftn`` over every dimension). Each frequency
gets a normalised radius ``r`` in [0, 1] (the root mean square of its per-dimension frequency
index, each divided by the dimension's Nyquist index), and a filter ``F(r)`` mixes
``(1 - F)·Â + F·B̂``. With ``tilt = 0`` the filter is a hard step ``F = [r > 1 - alpha]``;
as tilt grows it becomes a ramp of slope ``cot(π·tilt/2)`` through the point where the step
was, and ``tilt = 1`` degenerates to a plain weighted sum. Tilt is taken modulo 4; between 2
and 4 the roles of low and high frequencies swap.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ._values import is_close, scalar
from .registry import merge_method
from .spec import SAME, Float, Tensor


def frequency_radius(shape: Sequence[int], device=None) -> torch.Tensor:
    """Normalised frequency radius of every bin of an ``rfftn`` output of the given shape."""
    last = len(shape) - 1
    squares = None
    for dim, size in enumerate(shape):
        if dim == last or size == 1:
            coordinate = torch.linspace(0, 1, size, device=device)
        else:
            positive = torch.linspace(0, (size - 1) // 2, size - size // 2, device=device)
            negative = torch.linspace(size // 2, 1, size // 2, device=device)
            coordinate = torch.cat([positive, negative]) / (size // 2)
        view = [1] * len(shape)
        view[dim] = size
        term = coordinate.reshape(view) ** 2
        squares = term if squares is None else squares + term
    if len(shape) == 1:
        return squares.sqrt()
    return (squares / len(shape)).sqrt()


def crossover_filter(shape: Sequence[int], alpha: float, tilt: float, device=None) -> torch.Tensor:
    """The mixing weight of B per frequency bin (0 = A, 1 = B)."""
    tilt = tilt - math.floor(tilt / 4) * 4
    inverted = tilt > 2
    if inverted:
        alpha = 1 - alpha
    radius = frequency_radius(shape, device)
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


@merge_method(returns=SAME, label="Frequency crossover", category="spectral",
              help="Low frequencies of the weights from A, high frequencies from B (FFT over the whole tensor).")
def crossover(a=Tensor(SAME), b=Tensor(SAME),
              alpha=Float(0.5, minimum=0.0, maximum=1.0, per_key=True,
                          help="Share of the spectrum taken from B, starting at the highest frequencies."),
              tilt=Float(0.0, soft_minimum=0.0, soft_maximum=1.0, per_key=True,
                         help="0 is a hard cut between A's and B's frequencies; toward 1 it blurs into a "
                              "plain weighted sum.")):
    alpha = scalar("crossover", "alpha", alpha)
    tilt = scalar("crossover", "tilt", tilt)
    if alpha == 0:
        return a
    if alpha == 1:
        return b
    if is_close(tilt, 1.0) or a.dim() == 0 or a.numel() == 0 or torch.allclose(a, b):
        return torch.lerp(a, b, alpha)
    # (1 - F)·Â + F·B̂ = Â + F·(B - A)^: by linearity one forward transform, of the difference, suffices
    spectrum = torch.fft.rfftn(b - a, s=a.shape)
    spectrum.mul_(crossover_filter(spectrum.shape, alpha, tilt, device=a.device))
    return torch.fft.irfftn(spectrum, s=a.shape).to(a.dtype).add_(a)
