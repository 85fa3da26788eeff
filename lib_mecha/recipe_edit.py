"""Variants of a recipe: its steps as the Mecha tab numbers them, and one step changed.

Used to compare merges (the X/Y/Z plot's Mecha axes, :mod:`lib_mecha.host.xyz_axes`): each cell
is the loaded recipe with one step's parameter value, block weights or method replaced.

Steps are numbered the way the tab shows a recipe: every merge method applied to models or to
other steps' results is a step, the steps an input comes from before the step that uses it, in
argument order; a LoRA added to a step's result (``apply_lora``) belongs to that step, and the
methods that compute a parameter's value (block weights, per-key patterns) are part of the value.

Every edit goes through the method registry's own checks (:func:`lib_mecha.methods.bind`): a value
out of its parameter's range, an input in the wrong merge space or a preset of another
architecture raise the usual :class:`~lib_mecha.errors.MechaError` naming the problem.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from .errors import ParameterError, RecipeError
from .methods import bind, merge_space_of, resolve
from .methods.spec import MethodSpec
from .recipe import LiteralNode, MergeNode, ModelNode, RecipeNode

LORA_METHOD = "apply_lora"   # the tab's LoRA panel: apply_lora(<step>, model(<file>), <strength>)


def _without_loras(node: MergeNode) -> MergeNode:
    """The step a chain of LoRAs is added to (the node itself when it is no LoRA)."""
    while node.method == LORA_METHOD and len(node.args) == 3 and isinstance(node.args[0], MergeNode):
        lora = node.args[1]
        if not (isinstance(lora, ModelNode) and lora.model_config is None and lora.merge_space == "weight"):
            break
        node = node.args[0]
    return node


def steps_of(root: RecipeNode) -> List[MergeNode]:
    """The recipe's steps in the tab's order (step N is ``steps_of(root)[N - 1]``)."""
    order: List[MergeNode] = []
    seen = set()

    def visit(node: RecipeNode) -> None:
        if not isinstance(node, MergeNode) or node in seen:
            return
        seen.add(node)
        inner = _without_loras(node)
        for p, arg in resolve(inner.method).arguments(inner):
            if p.is_tensor:
                visit(arg)
        order.append(inner)
    visit(root)
    return order


def step_of(root: RecipeNode, number: int) -> MergeNode:
    """Step ``number`` (from 1), or :class:`RecipeError` saying how many steps there are."""
    steps = steps_of(root)
    if not 1 <= number <= len(steps):
        have = f"{len(steps)} step" + ("s" if len(steps) != 1 else "")
        raise RecipeError(f"the recipe has {have}; there is no step {number}",
                          "steps are numbered from 1 as in the Mecha tab")
    return steps[number - 1]


def replace_node(root: RecipeNode, old: RecipeNode, new: RecipeNode) -> RecipeNode:
    """``root`` with every occurrence of ``old`` replaced by ``new`` (the nodes above rebuilt);
    raises :class:`~lib_mecha.errors.MergeSpaceError` when a user of ``old`` cannot take ``new``."""
    memo: Dict[RecipeNode, RecipeNode] = {}

    def walk(node):
        if not isinstance(node, RecipeNode):
            return node
        if node is old or node == old:
            return new
        if node in memo:
            return memo[node]
        out = node
        if isinstance(node, MergeNode):
            args = tuple(walk(a) for a in node.args)
            kwargs = tuple((k, walk(v)) for k, v in node.kwargs)
            if args != node.args or kwargs != node.kwargs:
                out = MergeNode(node.method, args, kwargs)
        elif isinstance(node, LiteralNode) and node.is_dict:
            value = tuple((k, walk(v)) for k, v in node.value)
            if value != node.value:
                out = LiteralNode(value, node.model_config, node.merge_space)
        memo[node] = out
        return out
    result = walk(root)
    merge_space_of(result)
    return result


# --- one parameter ---------------------------------------------------------------------------------

def value_parameter(spec: MethodSpec, name: str):
    """The non-tensor parameter ``name`` of a method (ParameterError naming the choices)."""
    p = spec.param(name)
    if p.is_tensor:
        values = ", ".join(q.name for q in spec.params if not q.is_tensor and q.kind != "key") or "none"
        raise ParameterError(spec.name, name, "is a model input, not a value", f"its values are: {values}")
    return p


def rebound(node: MergeNode, changes: Dict[str, Any], method: Optional[str] = None) -> MergeNode:
    """``node`` with the named arguments replaced, checked by the registry like a new call."""
    spec = resolve(method or node.method)
    fixed = [p for p in spec.positional if not p.variadic]
    args = list(node.args)
    for i, p in enumerate(fixed):
        if p.name in changes:
            args[i] = changes[p.name]
    kwargs = {k: changes.get(k, v) for k, v in node.kwargs}
    return bind(spec, tuple(args), kwargs)


def with_parameter(root: RecipeNode, number: int, name: str, value: Any) -> RecipeNode:
    """The recipe with parameter ``name`` of step ``number`` set to ``value`` (a plain value or
    a node, e.g. block weights)."""
    node = step_of(root, number)
    value_parameter(resolve(node.method), name)
    return replace_node(root, node, rebound(node, {name: value}))


def parameter_node(root: RecipeNode, number: int, name: str) -> RecipeNode:
    """The node that gives parameter ``name`` of step ``number`` its value."""
    node = step_of(root, number)
    spec = resolve(node.method)
    value_parameter(spec, name)
    return spec.bound_argument(node, name)


# --- block weights ---------------------------------------------------------------------------------

def block_weights_of(node: RecipeNode) -> Optional[Tuple[str, Optional[RecipeNode], Dict[str, Any]]]:
    """``(layout, default, {block: value})`` when ``node`` is a value per block
    (``convert_<layout>(literal)``, optionally ``| default`` for blocks left out), else None."""
    from .arch.block_weights import CONVERTERS
    default = None
    if isinstance(node, MergeNode) and node.method == "fallback" and len(node.args) == 2:
        node, default = node.args
    if isinstance(node, MergeNode) and node.method in CONVERTERS:
        values = node.args[0]
        mapping = values.mapping if isinstance(values, LiteralNode) and values.is_dict else {}
        return CONVERTERS[node.method], default, mapping
    return None


def block_weight_parameters(root: RecipeNode) -> List[Tuple[int, str, str]]:
    """``(step number, parameter, layout)`` of every parameter that has a value per block."""
    out = []
    for number, node in enumerate(steps_of(root), 1):
        spec = resolve(node.method)
        for p, arg in spec.arguments(node):
            found = None if p.is_tensor else block_weights_of(arg)
            if found is not None:
                out.append((number, p.name, found[0]))
    return out


def with_block_weights(root: RecipeNode, number: int, name: str, values, layout: str) -> RecipeNode:
    """The recipe with parameter ``name`` of step ``number`` set per block of ``layout``.

    ``values``: a preset name of the layout, a comma-separated list in block order (empty entries
    keep the parameter's value for blocks left out), or a ``{block: value}`` dict.
    """
    from .arch.block_weights import blocks
    current = parameter_node(root, number, name)
    found = block_weights_of(current)
    return with_parameter(root, number, name, blocks(layout, values, default=_default_of(current, found)))


def with_block_value(root: RecipeNode, number: int, name: str, block: str, value: float, layout: str) -> RecipeNode:
    """The recipe with one block's value of parameter ``name`` of step ``number`` set (the other
    blocks keep theirs; a plain value becomes the value of every other block)."""
    from .arch.block_weights import blocks
    current = parameter_node(root, number, name)
    found = block_weights_of(current)
    if found is not None:
        layout = found[0]
    mapping = {**(found[2] if found is not None else {}), block: value}
    return with_parameter(root, number, name, blocks(layout, mapping, default=_default_of(current, found)))


def _default_of(current: RecipeNode, found) -> Optional[RecipeNode]:
    """The value of blocks left out: the fallback of block weights, or the plain value they replace."""
    if found is not None:
        return found[1]
    if isinstance(current, LiteralNode) and not current.is_dict:
        return current
    return None


# --- another method --------------------------------------------------------------------------------

def with_method(root: RecipeNode, number: int, method: str) -> RecipeNode:
    """The recipe with step ``number`` computed by ``method`` from the same inputs.

    Inputs go to the new method's inputs of the same name, the others in order; values of the same
    name and kind carry over where they are valid, the rest take the method's defaults.

    Raises:
        RecipeError: the step's inputs do not fit ``method`` (too few, too many, a value it needs).
        MergeSpaceError: an input or the result is in another merge space than ``method`` needs.
    """
    node = step_of(root, number)
    old, new = resolve(node.method), resolve(method)
    given = [(p.name, a) for p, a in old.arguments(node) if p.is_tensor]
    values = {p.name: (p, a) for p, a in old.arguments(node) if not p.is_tensor}
    inputs = _place_inputs(new, given, number, old.name)
    args: List[Any] = []
    kwargs: Dict[str, Any] = {}
    for p in new.positional:
        if p.variadic:
            args.extend(inputs.pop(p.name, ()))
        else:
            args.append(inputs[p.name] if p.is_tensor else _carried(new, p, values, number))
    for p in new.keyword_only:
        kwargs[p.name] = inputs[p.name] if p.is_tensor else _carried(new, p, values, number)
    changed = bind(new, tuple(args), kwargs)
    was, now = merge_space_of(node), merge_space_of(changed)
    if now != was:
        raise RecipeError(f"method {new.name!r} does not fit step {number}: it gives a {now} where {old.name} "
                          f"gives a {was}", "pick a method that gives what the step gave")
    return replace_node(root, node, changed)


def _place_inputs(new: MethodSpec, given: List[Tuple[str, RecipeNode]], number: int, old: str) -> Dict[str, Any]:
    """Which input goes to which of ``new``'s tensor parameters (the variadic one gets a list)."""
    wanted = [p.name for p in new.params if p.is_tensor and not p.variadic]
    variadic = new.variadic if new.variadic is not None and new.variadic.is_tensor else None
    by_name = {name: arg for name, arg in given if name in wanted}
    rest = [arg for name, arg in given if name not in by_name]
    placed: Dict[str, Any] = {}
    for name in wanted:
        if name in by_name:
            placed[name] = by_name[name]
        elif rest:
            placed[name] = rest.pop(0)
    if variadic is not None:
        placed[variadic.name], rest = rest, []
    fits = all(name in placed for name in wanted) and not rest and (wanted or given)
    if not fits:
        takes = ", ".join(wanted + ([f"*{variadic.name}"] if variadic is not None else [])) or "none"
        raise RecipeError(f"method {new.name!r} does not fit step {number} ({old} of {len(given)} input"
                          f"{'s' if len(given) != 1 else ''}): it takes the inputs {takes}",
                          "pick a method whose inputs match the step's")
    return placed


def _carried(new: MethodSpec, p, values: Dict[str, Tuple[Any, RecipeNode]], number: int):
    """The old step's value for ``p`` when it has one of the same kind that ``p`` accepts, else
    ``p``'s default."""
    old = values.get(p.name)
    if old is not None and old[0].kind == p.kind:
        arg = old[1]
        if isinstance(arg, LiteralNode) and not arg.is_dict:
            try:
                p.check(new.name, arg.value)
                return arg
            except ParameterError:
                pass
        elif p.per_key:
            return arg
    if p.required:
        raise RecipeError(f"method {new.name!r} needs a value for {p.name!r}, which step {number} does not have",
                          "pick a method whose values the step has, or edit the recipe in the tab")
    return p.default
