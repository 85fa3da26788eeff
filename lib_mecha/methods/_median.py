"""The geometric median of whole tensors (Weiszfeld's algorithm), computed on their Gram matrix.

The median is a weighted mean of the points, so every distance follows from the points' Gram
matrix: one pass over the slices computes it (in float64, relative to the first point so that
nearly equal models lose no precision), the iterations then work on ``count``×``count``
numbers, and a second pass forms the median. Up to ``maxiter`` iterations cost nothing per
element.
"""
from __future__ import annotations

from typing import Callable, List

import torch

from ..memory import Scratch
from ..workspace import Workspace
from ._values import slices

Points = Callable[[int, int, Scratch], List[torch.Tensor]]


def weiszfeld(points: Points, count: int, like: torch.Tensor, eps: float, maxiter: int, ftol: float,
              work: Workspace) -> torch.Tensor:
    """Weiszfeld iterations from the mean: weights 1/max(‖x_i - m‖, eps), until the mean distance
    changes by at most ``ftol`` of itself; ``points(start, end, scratch)`` gives the points' slices."""
    spans = slices(like.numel())
    gram = _gram(points, count, like, spans, work)
    fractions = _weights(gram, like, eps, maxiter, ftol)
    median = work.empty(like.numel(), like.dtype, like.device)

    def combine(start: int, end: int, scratch: Scratch) -> None:
        part, out = points(start, end, scratch), median[start:end]
        torch.mul(part[0], fractions[0], out=out)
        for p, w in zip(part[1:], fractions[1:]):
            out.add_(p, alpha=w)

    work.for_each_range(spans, combine, lambda: work.scratch(like))
    return median.view(like.shape)


def _gram(points: Points, count: int, like: torch.Tensor, spans, work: Workspace) -> torch.Tensor:
    """The points' Gram matrix relative to the first point (float64), one share per slice added
    in slice order (the same result on any number of threads)."""
    partial = {}

    def gram_of(start: int, end: int, scratch: Scratch) -> None:
        part, size = points(start, end, scratch), end - start
        relative = scratch.get("relative", (count - 1) * size, torch.float64).view(count - 1, size)
        for p, row in zip(part[1:], relative):
            torch.sub(p, part[0], out=row)  # in the points' dtype, then widened
        relative = relative.cpu()
        partial[start] = relative @ relative.T

    gram = torch.zeros(count, count, dtype=torch.float64)
    if count > 1:
        work.for_each_range(spans, gram_of, lambda: work.scratch(like))
        for start, _ in spans:
            gram[1:, 1:] += partial[start]
    return gram


def _weights(gram: torch.Tensor, like: torch.Tensor, eps: float, maxiter: int, ftol: float) -> List[float]:
    """The median's weight of each point, from Weiszfeld's iterations on the Gram matrix."""
    count = gram.shape[0]

    def distances(weights: torch.Tensor) -> torch.Tensor:
        weights = weights.to(torch.float64) / weights.sum(dtype=torch.float64)
        projected = gram @ weights
        squared = (gram.diagonal() - 2 * projected + weights @ projected).clamp_(min=0)
        # the stopping test runs in the points' precision, as it would on the tensors themselves
        return squared.sqrt_().to(like.dtype if like.is_floating_point() else torch.float32)

    weights = torch.ones(count, dtype=torch.float64)
    current = distances(weights)
    objective = current.mean()
    for _ in range(max(0, int(maxiter))):
        weights = 1 / torch.clamp(current, min=eps)
        current = distances(weights)
        previous, objective = objective, current.mean()
        if abs(previous - objective) <= ftol * objective:
            break
    return (weights.to(torch.float64) / weights.sum(dtype=torch.float64)).tolist()
