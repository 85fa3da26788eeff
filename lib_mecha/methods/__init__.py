"""The merge-method catalogue. Built-in families are loaded by the explicit list below."""
from __future__ import annotations

from . import linear, logistics  # noqa: F401  (registration)
from . import (cosine, crossover, dare, ema, geometric, masks, slicing, spectral, supermerger,  # noqa: F401
               ties)
from .registry import (all_methods, bind, build, builder_for, merge_method, merge_space_of, register, resolve,
                       unregister)
from .spec import (DELTA, PARAM, SAME, WEIGHT, Bool, CurrentKey, Float, Int, KeyWorkspace, MethodSpec, Param, Str,
                   Tensor)
from .user_files import load_method_files
from ..workspace import Workspace, ranges

BUILTIN_FAMILIES = ("linear", "logistics", "geometric", "masks", "cosine", "ties", "dare", "spectral", "crossover",
                    "slicing", "ema", "supermerger")


def describe_all():
    """Every registered method described as plain data, sorted by category then name."""
    specs = sorted(all_methods().values(), key=lambda s: (s.category, s.name))
    return [s.describe() for s in specs]


__all__ = [
    "all_methods", "bind", "build", "builder_for", "merge_method", "merge_space_of", "register", "resolve",
    "unregister", "describe_all", "load_method_files", "DELTA", "PARAM", "SAME", "WEIGHT", "Bool", "CurrentKey",
    "Float", "Int", "KeyWorkspace", "MethodSpec", "Param", "Str", "Tensor", "Workspace", "ranges",
]
