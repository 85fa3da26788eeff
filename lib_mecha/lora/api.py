"""The LoRA helpers of the public API: :func:`lora`, :func:`bake` and :func:`inspect`."""
from __future__ import annotations

import pathlib
from typing import Optional, Union

from ..errors import ParameterError
from ..recipe import MergeNode, ModelNode, RecipeNode, model
from .matching import Match, best_match, match_for, read_lora_file
from .methods import apply_lora, lora_delta

PathLike = Union[str, pathlib.PurePath]


def lora(path: PathLike, strength: float = 1.0, blocks=None, layout: Optional[str] = None) -> MergeNode:
    """A LoRA / LyCORIS file as a recipe node: the change it makes, at ``strength``.

    Args:
        path: the LoRA file (any format in :mod:`.formats`).
        strength: the multiplier, as ``<lora:name:strength>`` in a prompt.
        blocks: per-block weights (LBW), multiplied by ``strength``: a dict ``{block: value}``,
            a list in the layout's block order, a comma-separated string or a preset name of
            the layout. Blocks left out keep weight 1.
        layout: the block layout (``"sd1-supermerger_blocks"``...); by default the layout of the
            architecture the LoRA is for (its header is read to tell).

    Returns:
        ``lora_delta(model(path), strength)``: usable as a delta (``add_difference``) when every
        module's change is independent of the weights, and by :func:`bake` in every case.

    Example:
        >>> baked = bake(model("base"), lora("style", 0.8), lora("detail", 0.5, blocks="OUTALL"))
    """
    node = model(path)
    return lora_delta(node, _strength(node, strength, blocks, layout))


def _strength(node: ModelNode, strength: float, blocks, layout: Optional[str]):
    if blocks is None:
        return strength
    from ..arch.block_weights import block_values
    from ..arch.block_weights import blocks as block_node
    layout = layout or _layout_for(node)
    values = block_values(layout, _lbw_short_form(layout, blocks))
    scaled = {b: strength * float(v) for b, v in values.items()}
    return block_node(layout, scaled, default=strength)


# the LoRA Block Weight extension's short forms: only the blocks a plain LoRA trains
LBW_SHORT = {
    "sd1-supermerger_blocks": ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", "OUT03", "OUT04",
                               "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11"),
    "sdxl-supermerger_blocks": ("BASE", "IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02", "OUT03",
                                "OUT04", "OUT05"),
}


def _lbw_short_form(layout: str, blocks):
    """17 values (SD1) or 12 (SDXL) in the LoRA Block Weight extension's order become a dict;
    the blocks that form leaves out keep weight 1, as that extension does."""
    short = LBW_SHORT.get(layout)
    values = blocks
    if isinstance(values, str) and "," in values:
        values = [v.strip() for v in values.split(",")]
    if short is None or isinstance(values, (str, dict)) or len(values) != len(short):
        return blocks
    try:
        return {b: float(v) for b, v in zip(short, values)}
    except (TypeError, ValueError):
        raise ParameterError("lora", "blocks", f"block weights must be numbers, got {blocks!r}") from None


def _layout_for(node: ModelNode) -> str:
    from ..arch.layouts import layouts_for
    found = inspect(node.path)
    ident = found.architecture.identifier
    layouts = layouts_for(ident)
    if not layouts:
        raise ParameterError("lora", "blocks", f"{ident} (the model {node.path} is for) has no block layout")
    return layouts[0]


def bake(base, *loras) -> RecipeNode:
    """A checkpoint with LoRAs applied one after the other, as the WebUI applies them.

    Args:
        base: the checkpoint (a node or a path).
        *loras: nodes from :func:`lora`, or paths (strength 1).

    Returns:
        ``apply_lora(… apply_lora(base, lora₁, s₁) …, loraₙ, sₙ)``. For LoRAs whose changes do not
        depend on the weights this is ``base + Σ sᵢ·ΔWᵢ``.
    """
    node = base if isinstance(base, RecipeNode) else model(base)
    if not loras:
        raise ParameterError("bake", "loras", "needs at least one LoRA")
    for item in loras:
        if isinstance(item, (str, pathlib.PurePath)):
            item = lora(item)
        if not (isinstance(item, MergeNode) and item.method == "lora_delta"):
            raise ParameterError("bake", "loras", f"expected lora(path, ...), got {item!r}")
        lora_node, strength = item.args
        node = apply_lora(node, lora_node, strength)
    return node


def inspect(path: PathLike, architecture: Optional[str] = None) -> Match:
    """How a LoRA file matches an architecture (the one it is for, by default).

    Returns a :class:`~.matching.Match`: per checkpoint key the modules that change it,
    ``unmatched``/``misfits`` for the modules that match nothing, and ``report()``.

    Raises:
        ArchitectureMismatch: ``architecture`` is given and the LoRA is for another one, or it
            matches nothing.
    """
    from ..arch.base import resolve_architecture
    from ..io import open_model
    with open_model(str(path)) as handle:
        lora_file = read_lora_file(path, handle)
    if architecture is not None:
        return match_for(lora_file, resolve_architecture(architecture))
    found = best_match(lora_file)
    if found is None:
        from ..errors import ArchitectureMismatch
        raise ArchitectureMismatch(f"LoRA {path} matches no known architecture")
    return found
