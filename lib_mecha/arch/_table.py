"""A small builder that turns (name, shape) rows from a network definition into a key table."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable, Optional, Sequence, Tuple

import torch

from .base import Architecture, KeySpec

Rows = Iterable[Tuple[str, Tuple[int, ...]]]


class TableBuilder:
    """Collects :class:`KeySpec` rows in insertion order; a duplicate key is a bug in a generator."""

    def __init__(self, identifier: str, label: str = ""):
        self.identifier = identifier
        self.label = label
        self._rows: "OrderedDict[str, KeySpec]" = OrderedDict()

    def add(self, key: str, shape: Sequence[int], component: str, dtype: torch.dtype = torch.float32,
            aliases: Sequence[str] = (), optional: bool = False) -> None:
        if key in self._rows:
            raise ValueError(f"{self.identifier}: key {key!r} generated twice")
        self._rows[key] = KeySpec(key, tuple(int(s) for s in shape), dtype, component,
                                  tuple(aliases), optional)

    def extend(self, rows: Rows, component: str, prefix: str = "", dtype: torch.dtype = torch.float32,
               alias: Optional[Callable[[str], Sequence[str]]] = None,
               optional: Callable[[str], bool] = lambda name: False,
               dtype_of: Optional[Callable[[str], torch.dtype]] = None) -> None:
        """Add every ``(name, shape)`` row as ``prefix + name``.

        ``alias(name)`` gives the old names of a row (full keys), ``optional(name)`` whether it may be
        absent, ``dtype_of(name)`` overrides ``dtype`` for a row (integer buffers).
        """
        for name, shape in rows:
            self.add(prefix + name, shape, component,
                     dtype_of(name) if dtype_of else dtype,
                     tuple(alias(name)) if alias else (), optional(name))

    def build(self) -> Architecture:
        return Architecture(self.identifier, self._rows, self.label)


def linear(name: str, out_f: int, in_f: int, bias: bool = True) -> Rows:
    yield f"{name}.weight", (out_f, in_f)
    if bias:
        yield f"{name}.bias", (out_f,)


def conv(name: str, out_c: int, in_c: int, k: int = 3, bias: bool = True) -> Rows:
    yield f"{name}.weight", (out_c, in_c, k, k)
    if bias:
        yield f"{name}.bias", (out_c,)


def norm(name: str, c: int, bias: bool = True) -> Rows:
    yield f"{name}.weight", (c,)
    if bias:
        yield f"{name}.bias", (c,)
