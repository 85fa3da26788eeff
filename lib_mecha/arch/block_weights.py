"""Block weights as recipe values: the block -> key converters and the ``blocks()`` helper.

``convert_sd1_blocks_to_ldm`` / ``convert_sdxl_blocks_to_sgm`` (sd-mecha's names, so .mecha files
travel both ways) turn a value per block into a value per key of the architecture: for each
output key the route finds the key's block and yields that block's value as a constant.

A dict that leaves blocks out cannot give their keys a value, so the converter yields nothing
for them, as sd-mecha does. Unlike sd-mecha nothing is then dropped silently: :func:`blocks`
refuses a partial dict unless it is given an explicit ``default``, and then returns
``fallback(converter(dict), default)``, the same ``| default`` that comfy-mecha builds.
"""
from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence, Union

from ..engine.expr import Const
from ..errors import ArchitectureMismatch, ParameterError, suggest
from ..methods.registry import build, merge_method
from ..methods.spec import PARAM, Tensor
from ..recipe import LiteralNode, RecipeNode, literal
from .base import architecture_ids, resolve_architecture
from .layouts import BlockLayout, is_layout, resolve_layout

CONVERTERS = {}  # converter method name -> layout id


def check_block_names(method: str, layout: BlockLayout, names) -> None:
    """Raise ParameterError naming the first name that is not a block of ``layout``."""
    for name in names:
        if name not in layout.blocks:
            hints = suggest(name, layout.blocks)
            hint = ("did you mean " + " or ".join(repr(h) for h in hints) + "?") if hints else \
                f"blocks of {layout.identifier} are: {', '.join(layout.blocks)}"
            raise ParameterError(method, "blocks", f"{name!r} is not a block of {layout.identifier}", hint)


def owner_of(key: str) -> Optional[str]:
    """The id of an architecture (not a block layout) whose table knows ``key``, if any."""
    for ident in architecture_ids():
        if is_layout(ident):
            continue
        if resolve_architecture(ident).canonical(key) is not None:
            return ident
    return None


def check_key_fits(method: str, layout: BlockLayout, key: str) -> None:
    """A key of another known architecture means the layout was applied to the wrong model."""
    if resolve_architecture(layout.architecture).canonical(key) is not None:
        return
    other = owner_of(key)
    if other is not None:
        raise ArchitectureMismatch(
            f"{method}: block layout {layout.identifier} is for {layout.architecture}, "
            f"but the model being merged is {other} (key {key!r})",
            _layout_hint(other))


def _layout_hint(arch_id: str) -> str:
    from .layouts import layouts_for
    found = layouts_for(arch_id)
    return f"use {' or '.join(found)}" if found else f"{arch_id} has no block layout"


def make_converter(name: str, layout_id: str, help_text: str):
    """Register the merge method that maps ``layout_id``'s blocks onto its architecture's keys."""
    def route(node, key, ctx):
        layout = resolve_layout(layout_id)
        blocks_node = node.args[0]
        check_key_fits(name, layout, key)
        block = layout.block_of(key)
        if isinstance(blocks_node, LiteralNode):
            if not blocks_node.is_dict:
                return Const(blocks_node.value)
            values = blocks_node.mapping
            check_block_names(name, layout, values)
            if block not in values:
                return None  # no value for this block: a fallback (| default) supplies one
            value = values[block]
            return ctx.compile(value, key) if isinstance(value, RecipeNode) else Const(value)
        return ctx.compile(blocks_node, block)

    def converter(blocks=Tensor(PARAM, help=f"a value per block of {layout_id}")):
        raise AssertionError(f"{name} is resolved by its route; it never computes")

    converter.__name__ = name
    CONVERTERS[name] = layout_id
    return merge_method(converter, name=name, returns=PARAM, route=route, category="blocks",
                        label=f"Blocks of {layout_id}", help=help_text)


BUILTIN_CONVERTERS = (  # (method name, layout): sd-mecha's names for sd-mecha's layouts
    ("convert_sd1_blocks_to_ldm", "sd1-supermerger_blocks"),
    ("convert_sdxl_blocks_to_sgm", "sdxl-supermerger_blocks"),
    ("convert_sd2_blocks_to_ldm", "sd2-supermerger_blocks"),
    ("convert_sdxl_refiner_blocks_to_sgm", "sdxl_refiner-mecha_blocks"),
    ("convert_sd3_blocks_to_comfyui", "sd3-mecha_blocks"),
    ("convert_sd35_large_blocks_to_comfyui", "sd3.5_large-mecha_blocks"),
    ("convert_sd35_medium_blocks_to_comfyui", "sd3.5_medium-mecha_blocks"),
    ("convert_flux_blocks_to_flux", "flux-mecha_blocks"),
)


def _register_converters():
    from ..methods.registry import all_methods
    for name, layout_id in BUILTIN_CONVERTERS:
        if name in all_methods():  # a reloaded module: the registry outlives it
            CONVERTERS[name] = layout_id
            continue
        layout = resolve_layout(layout_id)
        shown = ", ".join(layout.blocks) if len(layout.blocks) <= 8 else \
            f"{', '.join(layout.blocks[:3])}, ..., {layout.blocks[-1]}"
        make_converter(name, layout_id, f"A value per block of {layout_id} ({shown}) spread over the "
                                        f"{layout.architecture} keys.")


_register_converters()


def converter_for(layout_id: str) -> str:
    for name, ident in CONVERTERS.items():
        if ident == layout_id:
            return name
    resolve_layout(layout_id)  # raises UnknownArchitecture for an unknown id
    raise ParameterError("blocks", "layout", f"block layout {layout_id!r} has no converter")


BlockValues = Union[Mapping[str, object], Sequence[object], str]


def block_values(layout_id: str, values: BlockValues) -> dict:
    """Normalise block values to a dict: a dict, a sequence in block order, a comma-separated
    string in block order (empty entries are left out) or the name of a preset of the layout."""
    layout = resolve_layout(layout_id)
    method = converter_for(layout_id)
    if isinstance(values, str):
        text = values.strip()
        if "," not in text and not _is_number(text) and text:
            from .presets import preset
            return preset(layout_id, text).as_dict()
        values = [v.strip() for v in text.split(",")]
        if len(values) != len(layout.blocks):
            raise ParameterError(method, "blocks", f"{len(values)} values for the {len(layout.blocks)} blocks "
                                 f"of {layout_id}", "blocks are: " + ", ".join(layout.blocks))
        out = {}
        for block, v in zip(layout.blocks, values):
            if v == "":
                continue
            if not _is_number(v):
                raise ParameterError(method, "blocks", f"value {v!r} for block {block} is not a number")
            out[block] = float(v)
        return out
    if isinstance(values, Mapping):
        check_block_names(method, layout, values)
        return dict(values)
    values = list(values)
    if len(values) != len(layout.blocks):
        raise ParameterError(method, "blocks", f"{len(values)} values for the {len(layout.blocks)} blocks "
                             f"of {layout_id}", "blocks are: " + ", ".join(layout.blocks))
    return {b: v for b, v in zip(layout.blocks, values) if v is not None}


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text))


def blocks(layout_id: str, values: BlockValues, default=None, *, architecture: Optional[str] = None) -> RecipeNode:
    """A per-key parameter node from a value per block.

    Args:
        layout_id: ``"sd1-supermerger_blocks"``, ``"sdxl-supermerger_blocks"``, ...
        values: a dict ``{block: value}``, a list in block order, a comma-separated string in
            block order (empty entries mean "default") or a preset name (``"GRAD_V"``).
        default: the value of blocks left out; required when any block is left out, so that
            no key goes without a value.
        architecture: the architecture of the models being merged, when known; a layout
            for another architecture raises :class:`~lib_mecha.errors.ArchitectureMismatch`.

    Returns:
        ``convert_…(literal(values))``, wrapped in ``fallback(…, default)`` when blocks are left out.

    Example:
        >>> alpha = blocks("sd1-supermerger_blocks", {"IN00": 0.2, "M00": 1.0}, default=0.5)
        >>> weighted_sum(model("a"), model("b"), alpha=alpha)
    """
    layout = resolve_layout(layout_id)
    method = converter_for(layout_id)
    if architecture is not None and architecture != layout.architecture:
        raise ArchitectureMismatch(f"block layout {layout_id} is for {layout.architecture}, "
                                   f"not {architecture}", _layout_hint(architecture))
    mapping = block_values(layout_id, values)
    missing = [b for b in layout.blocks if b not in mapping]
    ordered = {b: mapping[b] for b in layout.blocks if b in mapping}
    node = build(method, literal(ordered, config=layout_id, merge_space=PARAM))
    if missing:
        if default is None:
            raise ParameterError(method, "blocks", f"no value for block(s) {', '.join(missing)}",
                                 "give every block a value or pass default=")
        node = build("fallback", node, default)
    return node


def layout_for_block_dict(names, architecture: Optional[str] = None) -> Optional[str]:
    """The layout a plain dict's keys are block names of, or None (then it is a per-key dict).

    sd-mecha matches a dict of block names to the block config by itself; this is the same
    inference for the planner: the layout of ``architecture`` when given and it fits, else the
    first layout whose blocks include every name.
    """
    from .layouts import layout_ids, layouts_for
    names = set(names)
    if not names:
        return None
    preferred = layouts_for(architecture) if architecture else ()
    for ident in tuple(preferred) + tuple(i for i in layout_ids() if i not in preferred):
        if names <= set(resolve_layout(ident).blocks):
            return ident
    return None
