"""Recipes as .mecha text (sd-mecha's format, version 0.1.0): the public read/write functions.

The format is specified in ``docs/mecha-format.md``; the work is done in :mod:`lib_mecha.text`
(tokenizer, reader, writer).
"""
from __future__ import annotations

import os
from typing import Sequence, Tuple, Union

from .errors import RecipeError, RecipeSyntaxError
from .recipe import RecipeNode
from .text.reader import FORMAT_VERSION, read
from .text.writer import write

TextInput = Union[str, bytes, Sequence[str]]

__all__ = ["FORMAT_VERSION", "serialize", "deserialize", "deserialize_path", "deserialize_with_comments"]


def serialize(recipe, *, comments: Sequence[str] = ()) -> str:
    """The .mecha text of a recipe, byte for byte what sd-mecha's ``serialize()`` writes for the
    same recipe (with its nodes' configs and merge spaces as given, i.e. ``finalize=False``).

    Args:
        recipe: a recipe node (a plain value becomes a literal).
        comments: texts written as ``# <text>`` lines after the version line (tool version,
            input hashes...); sd-mecha ignores them.

    Returns:
        The text, without a trailing newline.

    Raises:
        ParameterError: a value sd-mecha could not read back (inf, nan, a string with a line
            break, a bad dict key), naming the method and parameter.
        RecipeError: a model path holding ``=`` or a line break, or such a value outside any method.

    Example:
        >>> serialize(weighted_sum(model("a"), model("b"), alpha=0.3))  # doctest: +SKIP
    """
    return write(recipe, comments)


def deserialize(text: TextInput) -> RecipeNode:
    """The recipe written in ``text`` (a string, or a list of lines as ``readlines()`` gives).

    Accepts everything sd-mecha writes, plus CRLF line ends, blank lines, ``#`` comments and a
    trailing newline.

    Raises:
        RecipeSyntaxError: with the 1-based line of the whole text and the problem; an unknown
            method or a bad argument keeps the registry's error as ``__cause__``.
    """
    return read(text)[0]


def deserialize_with_comments(text: TextInput) -> Tuple[RecipeNode, Tuple[str, ...]]:
    """Like :func:`deserialize`, also returning the texts of the ``#`` comment lines."""
    return read(text)


def deserialize_path(path: Union[str, "os.PathLike[str]"]) -> RecipeNode:
    """The recipe in a .mecha file (UTF-8)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RecipeError(f"cannot read the recipe {os.fspath(path)}: {e.strerror or e}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeSyntaxError(f"{os.fspath(path)} is not UTF-8 text", data.count(b"\n", 0, e.start) + 1) from e
    return read(text)[0]
