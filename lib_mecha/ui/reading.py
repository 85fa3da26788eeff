"""Rebuild the builder's draft from a recipe node (a pasted or uploaded .mecha).

Every merge node of a registered method becomes a step (a node used twice becomes one step used
twice); models become model inputs; literals, block converters and per-key dicts become parameter
values. Whatever the builder cannot show raises :class:`NotExpressible` naming the method and
parameter. :func:`from_node` then rebuilds the node from the draft and compares: the builder
only accepts a recipe it reproduces exactly.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import MechaError
from ..methods import resolve
from ..methods.spec import Param
from ..recipe import LiteralNode, MergeNode, ModelNode, RecipeNode
from .model import (BLOCKS, LORA_STRENGTH, PATTERNS, Draft, Input, LoraBuilder, LoraEntry, ParamValue,
                    Step, format_number, tensor_params, to_node, value_params)

# (node) -> (inner node, LoraEntry) when ``node`` is a LoRA applied to ``inner``; None otherwise
LoraReader = Callable[[RecipeNode], Optional[Tuple[RecipeNode, str, RecipeNode]]]


class NotExpressible(MechaError):
    """A recipe the builder cannot show (it can still be merged from the text)."""


def _scalar(node: RecipeNode) -> Optional[LiteralNode]:
    if isinstance(node, LiteralNode) and not node.is_dict:
        return node
    return None


def read_param(method: str, p: Param, node: RecipeNode) -> ParamValue:
    """The parameter value a node stands for: a literal, blocks, or per-key patterns."""
    lit = _scalar(node)
    if lit is not None:
        return ParamValue(lit.value, space=lit.merge_space)
    default = None
    inner = node
    if isinstance(node, MergeNode) and node.method == "fallback":
        inner, fallback_to = node.args
        default = _scalar(fallback_to)
        if default is None:
            raise NotExpressible(f"{method}: parameter {p.name!r} falls back to something other than a number, "
                                 "which the builder cannot show")
    base = ParamValue(default.value if default is not None else _nominal(p), space=default.merge_space
                      if default is not None else None)
    if isinstance(inner, MergeNode):
        from ..arch.block_weights import CONVERTERS
        layout = CONVERTERS.get(inner.method)
        if layout is not None:
            blocks = inner.args[0]
            if isinstance(blocks, LiteralNode) and blocks.is_dict and blocks.model_config == layout and \
                    all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in blocks.value):
                return replace(base, mode=BLOCKS, config=layout, dict_space=blocks.merge_space,
                               blocks=tuple((k, v) for k, v in blocks.value))
    if isinstance(inner, LiteralNode) and inner.is_dict and inner.model_config and \
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in inner.value):
        from ..arch.layouts import is_layout
        if not is_layout(inner.model_config):
            lines = "\n".join(f"{k}: {format_number(v)}" for k, v in inner.value)
            return replace(base, mode=PATTERNS, config=inner.model_config, patterns=lines,
                           dict_space=inner.merge_space)
    raise NotExpressible(f"{method}: parameter {p.name!r} is computed by {_describe(node)}, "
                         "which the builder cannot show")


def _nominal(p: Param):
    from .model import default_value
    return default_value(p).value


def _describe(node: RecipeNode) -> str:
    if isinstance(node, MergeNode):
        return f"merge method {node.method!r}"
    if isinstance(node, ModelNode):
        return f"model {node.path!r}"
    return "a literal of another shape"


class _Reader:
    def __init__(self, lora_reader: Optional[LoraReader]):
        self.steps: List[Step] = []
        self.index: Dict[RecipeNode, int] = {}
        self.lora_reader = lora_reader

    def input(self, node: RecipeNode, method: str, name: str) -> Input:
        if isinstance(node, ModelNode):
            return Input.model(node.path, node.model_config, node.merge_space)
        if isinstance(node, MergeNode):
            return Input.of_step(self.step(node))
        raise NotExpressible(f"{method}: input {name!r} is a constant, where the builder expects a model "
                             "or a step")

    def step(self, node: MergeNode) -> int:
        if node in self.index:
            return self.index[node]
        loras: List[LoraEntry] = []
        inner = node
        while self.lora_reader is not None:
            found = self.lora_reader(inner)
            if found is None:
                break
            inner, path, strength = found
            loras.insert(0, LoraEntry(path, read_param("lora", LORA_STRENGTH, strength)))
        spec = resolve(inner.method)
        from .session import builder_methods
        if spec.name not in builder_methods():
            raise NotExpressible(f"method {spec.name!r} is used as a step, which the builder cannot show")
        inputs = []
        extra = []
        params = []
        variadic = spec.variadic
        for p, arg in spec.arguments(inner):
            if p.is_tensor:
                value = self.input(arg, spec.name, p.name)
                if p is variadic or (variadic is not None and p.name == variadic.name):
                    extra.append(value)
                else:
                    inputs.append((p.name, value))
            elif p.kind != "key":
                params.append((p.name, read_param(spec.name, p, arg)))
        order = [p.name for p in tensor_params(spec)]
        inputs.sort(key=lambda item: order.index(item[0]))
        names = [p.name for p in value_params(spec)]
        params.sort(key=lambda item: names.index(item[0]))
        self.steps.append(Step(spec.name, tuple(inputs), tuple(extra), tuple(params), tuple(loras)))
        self.index[node] = len(self.steps) - 1
        return self.index[node]


def from_node(root: RecipeNode, lora_reader: Optional[LoraReader] = None,
              lora_builder: Optional[LoraBuilder] = None) -> Draft:
    """The draft whose recipe is exactly ``root``.

    Raises:
        NotExpressible: naming the first part the builder cannot show, or saying that the
            builder's version of the recipe would differ.
    """
    if not isinstance(root, MergeNode):
        raise NotExpressible(f"the recipe is {_describe(root)} alone; the builder needs at least one merge step")
    reader = _Reader(lora_reader)
    reader.step(root)
    draft = tuple(reader.steps)
    try:
        again = to_node(draft, lora_builder)
    except MechaError as e:
        raise NotExpressible(f"the builder cannot rebuild this recipe: {e.format_message()}") from e
    if again != root:
        raise NotExpressible("the builder would write this recipe differently (for example a model or value "
                             "with an unusual merge space or config), so it cannot show it exactly")
    return draft
