"""Per-key expressions: what the planner compiles a recipe into for one output key.

For every output key the planner turns the recipe DAG into a small expression tree whose
leaves are concrete: a :class:`Read` of one tensor from one opened input, or a :class:`Const`
(a scalar that is already resolved for this key: block weights and per-key patterns have
been applied). Inner nodes are :class:`Call` of a merge method.

Expressions are frozen values: equal sub-expressions are one value, so the executor reads
each input tensor once per key and computes each shared intermediate once, however often
the recipe mentions it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import torch


@dataclass(frozen=True)
class Read:
    """One tensor of one input: ``source`` indexes the plan's opened inputs."""

    source: int
    key: str
    shape: Tuple[int, ...]
    dtype: torch.dtype

    @property
    def is_float(self) -> bool:
        return self.dtype.is_floating_point


@dataclass(frozen=True, eq=False)
class Const:
    """A scalar resolved at plan time (a literal, or a block / per-key value).

    Equality includes the value's type: 1, 1.0 and True are three constants (Python would
    call them equal, and one would then stand in for the others).
    """

    value: Any
    shape: Optional[Tuple[int, ...]] = None  # scalars have no shape
    dtype: Optional[torch.dtype] = None

    def _key(self):
        return (type(self.value), self.value, self.shape, self.dtype)

    def __eq__(self, other):
        return isinstance(other, Const) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())


@dataclass(frozen=True)
class Call:
    """A merge method applied to sub-expressions, mirroring a MergeNode's arguments."""

    method: str
    args: Tuple["Expr", ...]
    kwargs: Tuple[Tuple[str, "Expr"], ...]
    shape: Optional[Tuple[int, ...]]
    dtype: Optional[torch.dtype] = None


Expr = Union[Read, Const, Call]


def children(expr: Expr) -> Tuple[Expr, ...]:
    if isinstance(expr, Call):
        return expr.args + tuple(v for _, v in expr.kwargs)
    return ()


def distinct(expr: Expr):
    """Every distinct sub-expression once, parents before children, left to right."""
    seen = set()
    stack = [expr]
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.add(e)
        yield e
        stack.extend(reversed(children(e)))


def reads(expr: Expr):
    """Every distinct Read in the expression, in evaluation order."""
    return [e for e in distinct(expr) if isinstance(e, Read)]


def calls(expr: Expr):
    return (e for e in distinct(expr) if isinstance(e, Call))
