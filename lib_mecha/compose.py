"""Recipe helpers: common compositions of registered methods, under sd-mecha's public names.

Like sd-mecha's wrappers they are not methods of their own: they build the registered
methods they stand for, so the .mecha text names only registered methods and sd-mecha reads
it back.
"""
from __future__ import annotations

from typing import Optional

from .methods import build, merge_space_of
from .methods.spec import WEIGHT
from .recipe import RecipeNode, as_node


def add_difference(a, b, c: Optional[object] = None, *, alpha=1.0, clamp_to_ab: bool = False) -> RecipeNode:
    """``a + alpha·(b - c)``, or ``a + alpha·b`` when ``b`` is already a difference.

    Keys that the difference cannot produce are taken from ``a`` unchanged (``| a``), as in
    sd-mecha. ``clamp_to_ab`` keeps the result between ``a`` and ``b`` element by element.

    Example:
        >>> add_difference(model("base"), model("tuned"), model("original"), alpha=0.7)
    """
    a, b = as_node(a), as_node(b)
    original_b = b
    if c is not None:
        b = build("subtract", b, as_node(c))
    result = build("add_difference", a, b, alpha=alpha)
    if clamp_to_ab:
        bound = original_b if merge_space_of(a) == merge_space_of(original_b) else b
        result = build("clamp", result, a, bound)
    return build("fallback", result, a)


def is_weight(node) -> bool:
    return merge_space_of(as_node(node)) == WEIGHT
