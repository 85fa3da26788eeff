"""The tab's recipe model: steps, inputs, parameter values and LoRAs, and their recipe nodes.

The builder edits a :class:`Draft` (a tuple of :class:`Step`); :func:`to_node` turns it into a
lib_mecha recipe node, which is what gets merged and written as .mecha text. The reverse,
:func:`lib_mecha.ui.reading.from_node`, rebuilds a draft from a node. All values here are frozen;
edits build new values with :func:`dataclasses.replace`.

A step is one merge method applied to inputs (checkpoints, or an earlier step's result) and
parameter values. The recipe's result is the last step's. A parameter value is a plain value,
a value per block of a block layout (MBW), or ``pattern: value`` rules over the keys of an
architecture; LoRAs are added to a step's result, each with a strength that may also vary by
block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import MechaError, ParameterError
from ..methods import build, resolve
from ..methods.spec import PARAM, MethodSpec, Param
from ..recipe import LiteralNode, ModelNode, RecipeNode, literal

VALUE, BLOCKS, PATTERNS = "value", "blocks", "patterns"
MODES = (VALUE, BLOCKS, PATTERNS)


class DraftError(MechaError):
    """The builder's recipe is incomplete or inconsistent (a missing input, a bad step reference)."""


@dataclass(frozen=True)
class Input:
    """What feeds a tensor parameter: a model file, an earlier step's result, or nothing yet.

    ``path`` is written into the recipe as given (a name relative to the model folders, or an
    absolute path); ``config``/``space`` are the model node's, kept so that pasted recipes read
    back exactly.
    """

    kind: str = "none"          # "model" | "step" | "none"
    path: str = ""
    step: int = -1
    config: Optional[str] = None
    space: Optional[str] = "weight"

    @staticmethod
    def model(path: str, config: Optional[str] = None, space: Optional[str] = "weight") -> "Input":
        return Input("model", path=path, config=config, space=space)

    @staticmethod
    def of_step(index: int) -> "Input":
        return Input("step", step=index)

    @property
    def is_set(self) -> bool:
        return self.kind != "none"


@dataclass(frozen=True)
class ParamValue:
    """A non-tensor parameter's value.

    Attributes:
        value: the plain value; in ``blocks`` mode the value of blocks left empty, in ``patterns``
            mode the value of keys no rule matches.
        mode: ``value``, ``blocks`` or ``patterns``.
        config: the block layout id (``blocks``) or the architecture id (``patterns``).
        blocks: ``(block, value)`` pairs in layout order; blocks left out take ``value``.
        patterns: ``pattern: value`` lines (see :mod:`lib_mecha.arch.patterns`).
        space: merge space of the plain value's literal (None, or ``param`` in finalized recipes).
        dict_space: merge space of the per-block / per-key dict literal.
    """

    value: Any
    mode: str = VALUE
    config: Optional[str] = None
    blocks: Tuple[Tuple[str, float], ...] = ()
    patterns: str = ""
    space: Optional[str] = None
    dict_space: Optional[str] = PARAM

    @property
    def block_map(self) -> Dict[str, float]:
        return dict(self.blocks)


@dataclass(frozen=True)
class LoraEntry:
    """A LoRA/LyCORIS file added to a step's result with a strength (plain or per block)."""

    path: str
    strength: ParamValue = field(default_factory=lambda: ParamValue(1.0))


@dataclass(frozen=True)
class Step:
    """One merge method with its inputs and parameter values.

    ``inputs`` holds one entry per non-variadic tensor parameter, by name; ``extra`` the inputs of
    a variadic tensor parameter (``n_average(*models)``); ``params`` every other parameter.
    """

    method: str
    inputs: Tuple[Tuple[str, Input], ...] = ()
    extra: Tuple[Input, ...] = ()
    params: Tuple[Tuple[str, ParamValue], ...] = ()
    loras: Tuple[LoraEntry, ...] = ()

    def input(self, name: str) -> Input:
        return dict(self.inputs).get(name, Input())

    def param(self, name: str) -> ParamValue:
        for k, v in self.params:
            if k == name:
                return v
        raise KeyError(name)

    def with_input(self, name: str, value: Input) -> "Step":
        return replace(self, inputs=tuple((k, value if k == name else v) for k, v in self.inputs))

    def with_param(self, name: str, value: ParamValue) -> "Step":
        return replace(self, params=tuple((k, value if k == name else v) for k, v in self.params))


Draft = Tuple[Step, ...]


# --- building steps from the method catalogue ------------------------------------------------

def tensor_params(spec: MethodSpec) -> Tuple[Param, ...]:
    """Non-variadic tensor parameters, in declaration order (positional, then keyword-only)."""
    return tuple(p for p in spec.params if p.is_tensor and not p.variadic)


def value_params(spec: MethodSpec) -> Tuple[Param, ...]:
    """Parameters the builder shows as widgets (not tensors, not the current key)."""
    return tuple(p for p in spec.params if not p.is_tensor and p.kind != "key")


def default_value(p: Param) -> ParamValue:
    if not p.required:
        return ParamValue(p.default)
    if p.kind == "bool":
        return ParamValue(False)
    if p.kind == "str":
        return ParamValue(p.choices[0] if p.choices else "")
    guess = p.soft_minimum if p.soft_minimum is not None else p.minimum if p.minimum is not None else 0
    return ParamValue(int(guess) if p.kind == "int" else float(guess))


def new_step(method: str, previous: Optional[Step] = None) -> Step:
    """A step of ``method`` with default values. Inputs of ``previous`` carry over by name; its
    values only where the new method's parameter means the same (see :func:`same_meaning`), so
    add_difference's alpha (a strength, 1 by default) never becomes slerp's (a mix, 0.5)."""
    spec = resolve(method)
    old_inputs = dict(previous.inputs) if previous else {}
    old_extra = previous.extra if previous else ()
    old_params = dict(previous.params) if previous else {}
    old_spec = resolve(previous.method) if previous else None
    inputs = []
    for p in tensor_params(spec):
        inputs.append((p.name, old_inputs.get(p.name, Input())))
    if spec.variadic is not None and spec.variadic.is_tensor:
        # switching from a fixed-input method keeps the inputs the new fixed ones do not take
        taken = {name for name, _ in inputs}
        extra = old_extra or tuple(i for k, i in (previous.inputs if previous else ()) if i.is_set and k not in taken)
    else:
        extra = ()
    params = []
    for p in value_params(spec):
        carried = old_params.get(p.name)
        if carried is not None and old_spec is not None and same_meaning(old_spec, p):
            params.append((p.name, carried))
        else:
            params.append((p.name, default_value(p)))
    return Step(method, tuple(inputs), tuple(extra), tuple(params), previous.loras if previous else ())


def same_meaning(old_spec: MethodSpec, p: Param) -> bool:
    """Whether ``old_spec`` has a parameter that means what ``p`` means: the same name, kind,
    default, range and choices. Only the wording of the help may differ (weighted_sum's and
    slerp's alpha: 0 keeps A, 1 gives B), never the scale (add_difference's alpha)."""
    try:
        old = old_spec.param(p.name)
    except ParameterError:
        return False
    return _meaning(old) == _meaning(p)


def _meaning(p: Param) -> Param:
    return replace(p, label="", help="", keyword_only=False)


# --- draft -> recipe node ---------------------------------------------------------------------

LoraBuilder = Callable[[RecipeNode, LoraEntry, RecipeNode], RecipeNode]


def scalar_node(pv: ParamValue) -> LiteralNode:
    return LiteralNode(pv.value, None, pv.space)


def param_node(method: str, p: Param, pv: ParamValue, on_warning: Callable[[str], None] = lambda m: None) -> RecipeNode:
    """The recipe node of one parameter value."""
    if pv.mode == VALUE:
        return scalar_node(pv)
    if not p.per_key:
        raise ParameterError(method, p.name, "takes one value for the whole model, not per block or per key")
    if pv.mode == BLOCKS:
        return blocks_node(method, p.name, pv)
    if pv.mode == PATTERNS:
        return patterns_node(method, p.name, pv, on_warning)
    raise ParameterError(method, p.name, f"unknown value mode {pv.mode!r}")


def blocks_node(method: str, name: str, pv: ParamValue) -> RecipeNode:
    """``convert_<layout>(literal({block: value}))``, ``| value`` when blocks are left empty."""
    from ..arch.block_weights import converter_for
    from ..arch.layouts import resolve_layout
    if not pv.config:
        raise ParameterError(method, name, "block-wise values need a block layout",
                             "pick the inputs first, or choose a layout in the block weights panel")
    layout = resolve_layout(pv.config)
    given = pv.block_map
    unknown = [b for b in given if b not in layout.blocks]
    if unknown:
        raise ParameterError(method, name, f"{unknown[0]!r} is not a block of {layout.identifier}")
    ordered = {b: given[b] for b in layout.blocks if b in given}
    if not ordered:
        return scalar_node(pv)
    node = build(converter_for(layout.identifier), literal(ordered, config=layout.identifier,
                                                           merge_space=pv.dict_space))
    if len(ordered) < len(layout.blocks):
        node = build("fallback", node, scalar_node(pv))
    return node


def patterns_node(method: str, name: str, pv: ParamValue, on_warning: Callable[[str], None]) -> RecipeNode:
    """``literal({key: value})`` for the keys the rules match, ``| value`` for the others."""
    from ..arch import resolve_architecture
    from ..arch.patterns import match_patterns, parse_patterns
    if not pv.config:
        raise ParameterError(method, name, "per-key patterns need the inputs' architecture",
                             "pick the inputs first")
    rules = parse_patterns(pv.patterns)
    if not rules:
        return scalar_node(pv)
    arch = resolve_architecture(pv.config)
    values, dead = match_patterns(rules, {k: s.aliases for k, s in arch.keys.items()})
    for rule in dead:
        on_warning(f"{method}: {name}: pattern on line {rule.line} matches no key of {arch.identifier}: "
                   f"{rule.text!r}")
    if not values:
        return scalar_node(pv)
    node = literal(values, config=arch.identifier, merge_space=pv.dict_space)
    if len(values) < len(arch.keys):
        node = build("fallback", node, scalar_node(pv))
    return node


def input_node(step_index: int, name: str, value: Input, built: Sequence[RecipeNode]) -> RecipeNode:
    if value.kind == "model":
        if not value.path:
            raise DraftError(f"step {step_index + 1}: input {name!r} has no model")
        return ModelNode(value.path, value.config, value.space)
    if value.kind == "step":
        if not 0 <= value.step < step_index:
            raise DraftError(f"step {step_index + 1}: input {name!r} refers to step {value.step + 1}, "
                             "which does not come before it")
        return built[value.step]
    raise DraftError(f"step {step_index + 1}: choose a model or an earlier step for input {name!r}")


def step_node(index: int, step: Step, built: Sequence[RecipeNode], lora_builder: Optional[LoraBuilder] = None,
              on_warning: Callable[[str], None] = lambda m: None) -> RecipeNode:
    """The node of one step (LoRAs applied), given the nodes of the steps before it."""
    spec = resolve(step.method)
    given_inputs = dict(step.inputs)
    given_params = dict(step.params)
    args: List[RecipeNode] = []
    kwargs: Dict[str, RecipeNode] = {}

    def value_of(p: Param) -> RecipeNode:
        if p.is_tensor:
            return input_node(index, p.name, given_inputs.get(p.name, Input()), built)
        pv = given_params.get(p.name)
        if pv is None:
            pv = default_value(p)
        return param_node(spec.name, p, pv, on_warning)

    for p in spec.positional:
        if p.variadic:
            if p.is_tensor:
                if not step.extra:
                    raise DraftError(f"step {index + 1}: {spec.name} needs at least one model in {p.name!r}")
                args.extend(input_node(index, f"{p.name} #{i + 1}", v, built) for i, v in enumerate(step.extra))
            continue
        args.append(value_of(p))
    for p in spec.keyword_only:
        kwargs[p.name] = value_of(p)
    node = build(spec.name, *args, **kwargs)
    for entry in step.loras:
        if lora_builder is None:
            raise DraftError(f"step {index + 1}: LoRAs cannot be baked yet (no LoRA support in this lib_mecha)")
        strength = param_node("lora", LORA_STRENGTH, entry.strength, on_warning)
        node = lora_builder(node, entry, strength)
    return node


# The strength of a LoRA, described like a method parameter so the same widgets edit it.
LORA_STRENGTH = Param("float", default=1.0, soft_minimum=-1.0, soft_maximum=2.0, per_key=True,
                      name="strength", label="strength", help="How much of the LoRA is added: 1 as in the prompt.")


def to_node(draft: Draft, lora_builder: Optional[LoraBuilder] = None,
            on_warning: Callable[[str], None] = lambda m: None) -> RecipeNode:
    """The recipe node of the last step.

    Raises:
        DraftError: no steps, a missing input, a bad step reference.
        MechaError: what the method registry reports (a value out of range, merge spaces that
            do not fit, an unknown block).
    """
    if not draft:
        raise DraftError("the recipe has no step yet; choose a method")
    built: List[RecipeNode] = []
    for i, step in enumerate(draft):
        built.append(step_node(i, step, built, lora_builder, on_warning))
    return built[-1]


def unused_steps(draft: Draft) -> List[int]:
    """Indices of steps the last step does not depend on (they would not be merged)."""
    if not draft:
        return []
    used = {len(draft) - 1}
    for i in range(len(draft) - 1, -1, -1):
        if i not in used:
            continue
        step = draft[i]
        for value in [v for _, v in step.inputs] + list(step.extra):
            if value.kind == "step":
                used.add(value.step)
    return [i for i in range(len(draft)) if i not in used]


# --- draft edits that keep step references consistent -----------------------------------------

def remove_step(draft: Draft, index: int) -> Draft:
    """Draft without step ``index``; references to it become unset, later ones shift down."""
    def fix(value: Input) -> Input:
        if value.kind != "step":
            return value
        if value.step == index:
            return Input()
        if value.step > index:
            return Input.of_step(value.step - 1)
        return value
    out = []
    for i, step in enumerate(draft):
        if i == index:
            continue
        out.append(replace(step, inputs=tuple((k, fix(v)) for k, v in step.inputs),
                           extra=tuple(v for v in (fix(x) for x in step.extra) if v.is_set)))
    return tuple(out)


def format_number(value: float) -> str:
    """Short text for a number in labels and comma lists (``0.5``, ``1``, ``-0.25``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}"
