"""Work items: the planned keys cut into the pieces the scheduler runs, each with its memory estimate.

A key is one item, or, when every step of it is elementwise and it is large, one item per
slice of its flattened elements (every input is read over the same range). An item's cost is
its estimated working set in bytes: the scheduler takes it from the memory budget before the
item starts and gives it back when the item has been written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch

from ..methods import resolve
from .expr import Read, calls, reads
from .plan import KeyPlan, Plan

MIB = 1 << 20


@dataclass(frozen=True)
class WorkItem:
    plan: KeyPlan
    start: Optional[int]  # None: the whole key
    end: Optional[int]
    cost: int             # estimated bytes in flight while it runs

    @property
    def is_slice(self) -> bool:
        return self.start is not None

    @property
    def shape(self) -> Tuple[int, ...]:
        """The shape of the item's result: the key's, or the slice's length."""
        return (self.end - self.start,) if self.start is not None else tuple(self.plan.shape)

    def read_shape(self, expr: Read) -> Tuple[int, ...]:
        """What the item reads of an input: the same range of every input for a slice; each input
        whole for a whole key (inputs of another shape, such as a LoRA's factors, too)."""
        return (self.end - self.start,) if self.start is not None else tuple(expr.shape)

    @property
    def nbytes(self) -> int:
        """Output bytes the item produces."""
        return (self.end - self.start) * self.plan.dtype.itemsize if self.start is not None else self.plan.nbytes


def bytes_per_element(kp: KeyPlan, compute_dtype: torch.dtype) -> int:
    """Rough working set per output element: raw and cast copy of each input, each
    intermediate result and the temporaries its method declares, and the output."""
    compute = compute_dtype.itemsize
    total = kp.dtype.itemsize
    for r in reads(kp.expr):
        total += r.dtype.itemsize + (compute if not kp.copy_only else 0)
    total += sum(math.ceil(compute * (1 + resolve(c.method).temporaries)) for c in calls(kp.expr))
    return max(total, 1)


def cut(plan: Plan, compute_dtype: torch.dtype, budget_bytes: int, threads: int, chunk: int) -> Iterator[WorkItem]:
    """The plan's keys as work items, biggest first: keys of one size follow each other (the
    memory of one fits the next), and the keys that run alone do not wait for a tail of small
    ones to drain. Elementwise keys over ``chunk`` elements, or whose share of the budget is
    too small, come in slices of at most ``chunk`` elements."""
    per_item = max(budget_bytes // max(threads, 1), MIB)
    for kp in sorted(plan.keys, key=lambda k: -k.numel):
        per_elem = bytes_per_element(kp, compute_dtype)
        whole = per_elem * max(kp.numel, 1)
        if not kp.chunkable or kp.numel <= chunk and whole <= per_item:
            yield WorkItem(kp, None, None, whole)
            continue
        step = max(min(chunk, per_item // per_elem), 4096)
        for start in range(0, kp.numel, step):
            end = min(start + step, kp.numel)
            yield WorkItem(kp, start, end, per_elem * (end - start))
