"""Concrete seeds for methods whose null seed draws fresh randomness on every merge.

A live re-merge reuses every key whose fingerprint did not change, and a fingerprint only
stands for a tensor if the tensor is reproducible. So before a live merge, each ``seed=None``
of a method declared with ``fresh_seed`` gets a concrete seed, written into the recipe (the
hot-loaded merge's recipe text shows it, and Save uses the same one). The seed is remembered by
the node's position in the recipe, so moving a slider of that step keeps its random draws.
"""
from __future__ import annotations

import secrets
from typing import Dict, Optional

from ..methods import resolve
from ..recipe import LiteralNode, MergeNode, RecipeNode

SeedBook = Dict[str, int]


def pin_seeds(root: RecipeNode, book: Optional[SeedBook] = None) -> RecipeNode:
    """``root`` with every fresh (null) seed replaced by a concrete one.

    ``book`` maps a node's position to the seed it got before; positions without one draw a new
    seed, which is added to ``book``. Returns ``root`` itself when nothing needed a seed.
    """
    book = book if book is not None else {}
    done: Dict[int, RecipeNode] = {}

    def visit(node: RecipeNode, position: str) -> RecipeNode:
        if id(node) in done:
            return done[id(node)]
        result = node
        if isinstance(node, MergeNode):
            args = tuple(visit(a, f"{position}.{i}") for i, a in enumerate(node.args))
            kwargs = tuple((k, visit(v, f"{position}.{k}")) for k, v in node.kwargs)
            seed_name = resolve(node.method).fresh_seed
            if seed_name is not None:
                kwargs = tuple((k, _seeded(v, book, f"{position}:{node.method}")) if k == seed_name else (k, v)
                               for k, v in kwargs)
                args = _seed_positional(node, args, seed_name, book, position)
            if args != node.args or kwargs != node.kwargs:
                result = MergeNode(node.method, args, kwargs)
        done[id(node)] = result
        return result

    return visit(root, "root")


def _seed_positional(node: MergeNode, args, seed_name: str, book: SeedBook, position: str):
    spec = resolve(node.method)
    fixed = [p for p in spec.positional if not p.variadic]
    for i, p in enumerate(fixed):
        if p.name == seed_name and i < len(args):
            return args[:i] + (_seeded(args[i], book, f"{position}:{node.method}"),) + args[i + 1:]
    return args


def _seeded(value: RecipeNode, book: SeedBook, slot: str) -> RecipeNode:
    if not (isinstance(value, LiteralNode) and not value.is_dict and value.value is None):
        return value
    if slot not in book:
        book[slot] = secrets.randbelow(2 ** 31)
    return LiteralNode(book[slot], value.model_config, value.merge_space)
