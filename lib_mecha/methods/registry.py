"""The one registry of merge methods, and building merge nodes from calls.

Registration is atomic: the registry is copied, checked and swapped under a lock, so a
failed registration leaves nothing behind. A duplicate name raises; an unknown name raises
:class:`~lib_mecha.errors.UnknownMethod` with the nearest known names.
"""
from __future__ import annotations

import threading
from types import MappingProxyType
from typing import Callable, Dict, Mapping, Optional

from ..errors import MergeSpaceError, ParameterError, UnknownMethod
from ..recipe import LiteralNode, MergeNode, ModelNode, RecipeNode, as_node
from .spec import DELTA, PARAM, REQUIRED, SAME, WEIGHT, MethodSpec, Param, make_spec

_lock = threading.Lock()
_methods: Mapping[str, MethodSpec] = MappingProxyType({})


def register(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add a method. Raises ValueError when the name is taken (unless ``replace``)."""
    global _methods
    with _lock:
        current = dict(_methods)
        if spec.name in current and not replace:
            raise ValueError(f"a merge method named {spec.name!r} is already registered")
        current[spec.name] = spec
        _methods = MappingProxyType(current)
    return spec


def unregister(name: str) -> None:
    global _methods
    with _lock:
        current = dict(_methods)
        current.pop(name, None)
        _methods = MappingProxyType(current)


def resolve(name: str) -> MethodSpec:
    try:
        return _methods[name]
    except KeyError:
        raise UnknownMethod(name, _methods.keys()) from None


def all_methods() -> Mapping[str, MethodSpec]:
    return _methods


def merge_method(func: Optional[Callable] = None, *, name: Optional[str] = None, returns: str = SAME,
                 varargs: Optional[Param] = None, register_it: bool = True, replace: bool = False,
                 **options):
    """Decorator: turn an annotated function into a registered merge method.

    The decorated name becomes a recipe builder: calling it with nodes or values returns a
    :class:`~lib_mecha.recipe.MergeNode`. The raw function stays reachable as
    ``builder.spec.func`` (and ``builder.__wrapped__``); ``builder.spec.apply`` calls it on tensors the
    caller keeps.

    Example:
        >>> @merge_method(returns=SAME, elementwise=True, help="a + alpha·(b - a)")
        ... def my_lerp(a=Tensor(SAME), b=Tensor(SAME), alpha=Float(0.5, per_key=True)):
        ...     return a + alpha * (b - a)
    """
    def wrap(f):
        spec = make_spec(f, name=name, returns=returns, varargs=varargs, **options)
        if register_it:
            register(spec, replace=replace)
        return builder_for(spec)
    return wrap(func) if func is not None else wrap


def builder_for(spec: MethodSpec) -> Callable[..., MergeNode]:
    def builder(*args, **kwargs) -> MergeNode:
        return bind(spec, args, kwargs)
    builder.__name__ = spec.name
    builder.__qualname__ = spec.name
    builder.__doc__ = _docstring(spec)
    builder.__wrapped__ = spec.func
    builder.spec = spec
    return builder


def build(name: str, *args, **kwargs) -> MergeNode:
    """Build a merge node for a registered method by name."""
    return bind(resolve(name), args, kwargs)


def bind(spec: MethodSpec, args, kwargs) -> MergeNode:
    """Match a call to the method's parameters, fill in defaults and check what can be checked
    before any file is opened: arity, literal values and ranges, and merge spaces."""
    fixed = [p for p in spec.positional if not p.variadic]
    var = spec.variadic
    kwargs = dict(kwargs)
    bound = {}
    if len(args) > len(fixed) and var is None:
        raise ParameterError(spec.name, None, f"takes {len(fixed)} positional arguments, got {len(args)}")
    for p, value in zip(fixed, args):
        bound[p.name] = value
    extra = list(args[len(fixed):])
    for p in fixed:
        if p.name in kwargs:
            if p.name in bound:
                raise ParameterError(spec.name, p.name, "given twice")
            bound[p.name] = kwargs.pop(p.name)
    kw_values = {}
    for p in spec.keyword_only:
        if p.name in kwargs:
            kw_values[p.name] = kwargs.pop(p.name)
    if kwargs:
        unknown = next(iter(kwargs))
        raise ParameterError(spec.name, unknown, "no such parameter",
                             "parameters are: " + ", ".join(p.name for p in spec.params if p.kind != "key"))
    pos_nodes = []
    for p in fixed:
        if p.name not in bound:
            if p.required:
                raise ParameterError(spec.name, p.name, "missing required argument")
            bound[p.name] = p.default
        pos_nodes.append(_coerce(spec, p, bound[p.name]))
    if var is not None:
        if var.is_tensor and not extra and not fixed:
            raise ParameterError(spec.name, var.name, "needs at least one model")
        pos_nodes.extend(_coerce(spec, var, v) for v in extra)
    kw_nodes = []
    for p in spec.keyword_only:
        if p.name not in kw_values:
            if p.required:
                raise ParameterError(spec.name, p.name, "missing required argument")
            kw_values[p.name] = p.default
        kw_nodes.append((p.name, _coerce(spec, p, kw_values[p.name])))
    node = MergeNode(spec.name, tuple(pos_nodes), tuple(kw_nodes))
    merge_space_of(node)  # raises MergeSpaceError now rather than at merge time
    return node


def _coerce(spec: MethodSpec, p: Param, value) -> RecipeNode:
    if isinstance(value, str) and p.is_tensor:
        raise ParameterError(spec.name, p.name, f"got the string {value!r} where a model is expected",
                             f"use lib_mecha.model({value!r})")
    node = as_node(value)
    if isinstance(node, LiteralNode) and not node.is_dict:
        p.check(spec.name, node.value)
    elif isinstance(node, LiteralNode) and node.is_dict and not p.per_key and not p.is_tensor:
        raise ParameterError(spec.name, p.name, "takes one value, not per-key values")
    elif isinstance(node, LiteralNode) and node.is_dict:
        for _, v in node.value:
            if not isinstance(v, RecipeNode):
                p.check(spec.name, v)
    return node


def merge_space_of(node: RecipeNode) -> str:
    """The merge space a node produces, checking every method's space constraints.

    Raises :class:`~lib_mecha.errors.MergeSpaceError` naming the method, the parameter and
    both spaces when, say, weights are passed where deltas are expected.
    """
    return _space(node, {})


def _space(node: RecipeNode, memo: Dict[RecipeNode, str]) -> str:
    if node in memo:
        return memo[node]
    if isinstance(node, ModelNode):
        result = node.merge_space or WEIGHT
    elif isinstance(node, LiteralNode):
        result = node.merge_space or PARAM
    else:
        spec = resolve(node.method)
        same = None
        for p, arg in spec.arguments(node):
            got = _space(arg, memo)
            if not p.is_tensor:
                continue
            if p.space == SAME:
                if got == PARAM:
                    continue  # a scalar broadcasts into any space
                if same is None:
                    same = got
                elif got != same:
                    raise MergeSpaceError(
                        f"{spec.name}: parameter {p.name!r} is in {got} space but the other inputs are in "
                        f"{same} space", _space_hint(same, got))
            elif got != p.space and got != PARAM:
                raise MergeSpaceError(
                    f"{spec.name}: parameter {p.name!r} expects a {p.space} but got a {got}",
                    _space_hint(p.space, got))
        if spec.returns == SAME:
            result = same or PARAM
        else:
            result = spec.returns
    memo[node] = result
    return result


def _space_hint(expected: str, got: str) -> str:
    if expected == DELTA and got == WEIGHT:
        return "turn a model into a delta with subtract(model, base)"
    if expected == WEIGHT and got == DELTA:
        return "add the delta to a base model with add_difference(base, delta)"
    return "check which inputs are weights and which are differences"


def _docstring(spec: MethodSpec) -> str:
    lines = [spec.help or spec.label or spec.name, "", "Args:"]
    for p in spec.params:
        if p.kind == "key":
            continue
        default = "" if p.default is REQUIRED else f" (default {p.default!r})"
        lines.append(f"    {p.name}: {p.kind}{default}. {p.help}")
    return "\n".join(lines)
