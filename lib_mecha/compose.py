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


def _deltas_from(base: RecipeNode, models) -> tuple:
    """Each model as a difference from ``base``; models already in delta space are used as they are."""
    return tuple(m if merge_space_of(m) != WEIGHT else build("subtract", m, base)
                 for m in (as_node(m) for m in models))


def add_perpendicular(a, b, c, *, alpha=1.0) -> RecipeNode:
    """``a + alpha·perp(a - c, b - c)``: adds the part of B's change from C that A's change from C
    does not already contain.

    Example:
        >>> add_perpendicular(model("a"), model("b"), model("sd15"), alpha=1.0)
    """
    a, b, c = as_node(a), as_node(b), as_node(c)
    perpendicular = build("perpendicular_component", build("subtract", a, c), build("subtract", b, c))
    return build("add_difference", a, perpendicular, alpha=alpha)


def add_difference_ties(base, *models, alpha=1.0, k=1.0) -> RecipeNode:
    """TIES-merge the models' differences from ``base`` and add the result to it.

    Example:
        >>> add_difference_ties(model("sd15"), model("a"), model("b"), model("c"), k=0.2)
    """
    base = as_node(base)
    merged = build("ties_sum", *_deltas_from(base, models), k=k)
    return add_difference(base, merged, alpha=alpha)


def add_difference_ties_extended(base, *models, alpha=1.0, k=0.2, vote_sgn=False, apply_stock=False,
                                 cos_eps=1e-6, apply_median=False, eps=1e-6, maxiter=100,
                                 ftol=1e-20) -> RecipeNode:
    """Like :func:`add_difference_ties` with ``ties_sum_extended`` (note: ``apply_stock=False``
    applies Model Stock scaling, as in sd-mecha)."""
    base = as_node(base)
    merged = build("ties_sum_extended", *_deltas_from(base, models), k=k, vote_sgn=vote_sgn,
                   apply_stock=apply_stock, apply_median=apply_median, cos_eps=cos_eps, eps=eps,
                   maxiter=maxiter, ftol=ftol)
    return add_difference(base, merged, alpha=alpha)


def add_ties_with_dare(base, *models, della_eps=0.0, probability=0.9, rescale=True, alpha=1.0, seed=None,
                       k=1.0, vote_sgn=False, apply_stock=False, cos_eps=1e-6, apply_median=False, eps=1e-6,
                       maxiter=100, ftol=1e-20) -> RecipeNode:
    """DARE (or DELLA with ``della_eps``) then TIES over the models' differences from ``base``,
    added back to it: ``base + alpha·ties_sum_with_dropout(models - base, ...)``.

    Example:
        >>> add_ties_with_dare(model("sd15"), model("a"), model("b"), probability=0.5, seed=42)
    """
    base = as_node(base)
    merged = build("ties_sum_with_dropout", *_deltas_from(base, models), probability=probability,
                   della_eps=della_eps, rescale=rescale, k=k, vote_sgn=vote_sgn, apply_stock=apply_stock,
                   cos_eps=cos_eps, apply_median=apply_median, eps=eps, maxiter=maxiter, ftol=ftol, seed=seed)
    return build("add_difference", base, merged, alpha=alpha)


def dropout(a, *models, probability=0.9, alpha=0.5, overlap=1.0, overlap_emphasis=0.0, seed=None,
            rescale=1.0) -> RecipeNode:
    """n-supermario: ``a + alpha·dropout(models - a, ...)``. ``alpha`` defaults to 0.5 as in sd-mecha."""
    a = as_node(a)
    deltas = tuple(build("subtract", as_node(m), a) for m in models)
    merged = build("dropout", *deltas, probability=probability, rescale=rescale, overlap=overlap,
                   overlap_emphasis=overlap_emphasis, seed=seed)
    return build("add_difference", a, merged, alpha=alpha)


def n_model_stock(base, *models, cos_eps=1e-6) -> RecipeNode:
    """Model Stock over the models' differences from ``base``, added back to it."""
    base = as_node(base)
    merged = build("model_stock", *_deltas_from(base, models), cos_eps=cos_eps)
    return build("add_difference", base, merged, alpha=1.0)


def copy_region(a, b, c=None, *, width=1.0, offset=0.0, top_k=False) -> RecipeNode:
    """Copy a region of B into A (``tensor_sum``), or rearrange A's values in B's order within a
    magnitude band (``top_k_tensor_sum`` when ``top_k``); around C's weights when C is given."""
    a, b = as_node(a), as_node(b)
    if c is not None:
        c = as_node(c)
        a, b = build("subtract", a, c), build("subtract", b, c)
    result = build("top_k_tensor_sum" if top_k else "tensor_sum", a, b, width=width, offset=offset)
    if c is not None:
        result = build("add_difference", c, result, alpha=1.0)
    return result


tensor_sum = copy_region


def rotate(a, b, c=None, *, alignment=1.0, alpha=0.0) -> RecipeNode:
    """Rotate A toward B (orthogonal Procrustes); with C, rotate A's difference from C toward B's
    and add it back to C."""
    a, b = as_node(a), as_node(b)
    if c is not None:
        c = as_node(c)
        a, b = build("subtract", a, c), build("subtract", b, c)
    result = build("rotate", a, b, alignment=alignment, alpha=alpha)
    if c is not None:
        result = build("add_difference", c, result, alpha=1.0)
    return result


def _masked_difference(mask_method: str, a, b, c, alpha) -> RecipeNode:
    a, b, c = as_node(a), as_node(b), as_node(c)
    return add_difference(a, b, c, alpha=build(mask_method, a, b, c, alpha=alpha))


def train_difference(a, b, c, *, alpha=1.0) -> RecipeNode:
    """SuperMerger's train difference: ``a + (b - c)·train_difference_mask(a, b, c, alpha)``.

    Example:
        >>> train_difference(model("mine"), model("style"), model("sd15"))
    """
    return _masked_difference("train_difference_mask", a, b, c, alpha)


def add_opposite(a, b, c, *, alpha=1.0) -> RecipeNode:
    """``a + (b - c)·add_opposite_mask(a, b, c, alpha)``."""
    return _masked_difference("add_opposite_mask", a, b, c, alpha)


def clamped_add_opposite(a, b, c, *, alpha=1.0) -> RecipeNode:
    """``a + (b - c)·add_strict_opposite_mask(a, b, c, alpha)``."""
    return _masked_difference("add_strict_opposite_mask", a, b, c, alpha)
