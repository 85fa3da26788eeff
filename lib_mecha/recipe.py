"""Recipe nodes: immutable values with structural equality from birth.

A recipe is a DAG of three node kinds, the same as sd-mecha's:

* :class:`ModelNode`: a model file by path or name (resolved against the model folders
  only when the recipe is planned; nothing here touches the disk);
* :class:`LiteralNode`: a scalar, or a dict of values keyed by state-dict key or by block name;
* :class:`MergeNode`: a registered merge method applied to argument nodes, with every default
  filled in when the node is built, so two spellings of one call are one node.

Nodes are frozen and hashable. Equal subgraphs are equal values, which is what lets the
.mecha writer share lines and the planner read each input once per key.
"""
from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Tuple, Union

Scalar = Union[int, float, bool, str, None]
SCALAR_TYPES = (int, float, bool, str, type(None))


class RecipeNode:
    """Base of the three node kinds. Operators build merge nodes, as in sd-mecha."""

    def accept(self, visitor, *args, **kwargs):
        raise NotImplementedError

    def children(self) -> Tuple["RecipeNode", ...]:
        return ()

    # a + b: add a delta; a - b: the delta between two weights; a * x: scale a delta;
    # a | b: a's key where it can be produced, else b's.
    def __add__(self, other):
        from . import methods
        return methods.build("add_difference", self, other)

    def __radd__(self, other):
        from . import methods
        return methods.build("add_difference", other, self)

    def __sub__(self, other):
        from . import methods
        return methods.build("subtract", self, other)

    def __rsub__(self, other):
        from . import methods
        return methods.build("subtract", other, self)

    def __mul__(self, other):
        from . import methods
        return methods.build("scale", self, other)

    __rmul__ = __mul__

    def __or__(self, other):
        from . import methods
        return methods.build("fallback", self, other)

    def __ror__(self, other):
        from . import methods
        return methods.build("fallback", other, self)

    def to(self, device=None, dtype=None):
        from . import methods
        device = None if device is None else str(device)
        return methods.build("cast", self, device=device, dtype=_dtype_name(dtype))


def _dtype_name(dtype) -> Optional[str]:
    if dtype is None or isinstance(dtype, str):
        return dtype
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class ModelNode(RecipeNode):
    """A model file. ``path`` is kept exactly as given; resolution happens at plan time."""

    path: str
    model_config: Optional[str] = None
    merge_space: Optional[str] = "weight"

    def accept(self, visitor, *args, **kwargs):
        return visitor.visit_model(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"model({self.path!r})"


class _Typed:
    """Wraps a literal value so that 1, 1.0 and True stay three different values."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def _tag(self):
        v = self.value
        if isinstance(v, float) and math.isnan(v):
            return ("float", "nan")
        return (type(v).__name__, v)

    def __eq__(self, other):
        return isinstance(other, _Typed) and self._tag() == other._tag()

    def __hash__(self):
        return hash(self._tag())


@dataclass(frozen=True, eq=False)
class LiteralNode(RecipeNode):
    """A scalar, or a mapping from keys (state-dict keys or block names) to values.

    ``value`` is a scalar or a tuple of ``(key, value)`` pairs in insertion order; use
    :attr:`mapping` to read a dict literal. Values inside a dict may be scalars or nodes.
    """

    value: Any
    model_config: Optional[str] = None
    merge_space: Optional[str] = None

    @property
    def is_dict(self) -> bool:
        return isinstance(self.value, tuple)

    @property
    def mapping(self) -> Mapping[str, Any]:
        if not self.is_dict:
            raise TypeError("not a dict literal")
        return dict(self.value)

    def accept(self, visitor, *args, **kwargs):
        return visitor.visit_literal(self, *args, **kwargs)

    def children(self) -> Tuple[RecipeNode, ...]:
        if self.is_dict:
            return tuple(v for _, v in self.value if isinstance(v, RecipeNode))
        return ()

    def _key(self):
        if self.is_dict:
            body = tuple((k, v if isinstance(v, RecipeNode) else _Typed(v)) for k, v in self.value)
        else:
            body = _Typed(self.value)
        return (body, self.model_config, self.merge_space)

    def __eq__(self, other):
        return isinstance(other, LiteralNode) and self._key() == other._key()

    def __hash__(self):
        # planning looks nodes up once per key and node: a block dict would be rehashed every time
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(("literal", self._key()))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __repr__(self) -> str:
        if self.is_dict:
            return f"literal({dict(self.value)!r})"
        return f"literal({self.value!r})"


@dataclass(frozen=True)
class MergeNode(RecipeNode):
    """A merge method applied to arguments; ``args`` are positional (variadic ones included),
    ``kwargs`` are the keyword-only parameters in declaration order."""

    method: str
    args: Tuple[RecipeNode, ...] = ()
    kwargs: Tuple[Tuple[str, RecipeNode], ...] = field(default=())

    def accept(self, visitor, *args, **kwargs):
        return visitor.visit_merge(self, *args, **kwargs)

    def children(self) -> Tuple[RecipeNode, ...]:
        return self.args + tuple(v for _, v in self.kwargs)

    def __hash__(self):
        cached = self.__dict__.get("_hash")   # see LiteralNode.__hash__
        if cached is None:
            cached = hash((self.method, self.args, self.kwargs))
            object.__setattr__(self, "_hash", cached)
        return cached

    def argument(self, name: str) -> RecipeNode:
        """The node bound to parameter ``name`` (positional or keyword-only)."""
        from . import methods
        return methods.resolve(self.method).bound_argument(self, name)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        return f"{self.method}({', '.join(parts)})"


def model(path: Union[str, "pathlib.PurePath"], config: Optional[str] = None,
          merge_space: Optional[str] = "weight") -> ModelNode:
    """A model input: a path, or a name resolved against the model folders when merging.

    Args:
        path: ``"a.safetensors"``, ``"a"`` (the extension may be omitted), ``"sub/a"`` or an
            absolute path.
        config: an architecture id (``"sd1-ldm"``) to skip detection; None detects it.
        merge_space: ``"weight"`` for a checkpoint, ``"delta"`` for a difference file.

    Example:
        >>> a = model("a"); b = model("b")
    """
    if isinstance(path, pathlib.PurePath):
        path = str(path)
    if not isinstance(path, str) or not path:
        raise TypeError(f"model() takes a path or a name, not {path!r}")
    return ModelNode(path, config, merge_space)


def literal(value, config: Optional[str] = None, merge_space: Optional[str] = None) -> LiteralNode:
    """A constant: a scalar, or a dict of per-key (or per-block) values.

    Example:
        >>> literal({"IN00": 0.1, "M00": 0.5}, config="sd1-supermerger_blocks")
    """
    if isinstance(value, LiteralNode):
        return value
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"literal dict keys must be strings, not {k!r}")
            if not isinstance(v, RecipeNode):
                _check_scalar(v)
            items.append((k, v))
        return LiteralNode(tuple(items), config, merge_space)
    _check_scalar(value)
    return LiteralNode(value, config, merge_space)


def _check_scalar(value):
    if not isinstance(value, SCALAR_TYPES):
        raise TypeError(f"a literal holds int, float, bool, str or None, not {type(value).__name__}")


def as_node(value) -> RecipeNode:
    """Coerce a builder argument: nodes pass through, paths become models, the rest literals.

    A plain ``str`` is a string literal (as in sd-mecha); wrap paths in :func:`model`.
    """
    if isinstance(value, RecipeNode):
        return value
    if isinstance(value, pathlib.PurePath):
        return model(value)
    return literal(value)


def walk(root: RecipeNode) -> Iterator[RecipeNode]:
    """Every distinct node of the DAG once, children before parents (post-order)."""
    seen = set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if node in seen:
            continue
        if expanded:
            seen.add(node)
            yield node
            continue
        stack.append((node, True))
        for child in reversed(node.children()):
            if child not in seen:
                stack.append((child, False))


def models_of(root: RecipeNode) -> Tuple[ModelNode, ...]:
    """The distinct model inputs, in first-use order."""
    return tuple(n for n in walk(root) if isinstance(n, ModelNode))
