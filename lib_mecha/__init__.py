"""lib_mecha: streaming, memory-light model merging with sd-mecha compatible recipes.

Build a recipe from :func:`model`, :func:`literal` and one builder per merge method
(``lib_mecha.weighted_sum``, ``lib_mecha.slerp``, ... — every registered method, custom ones
included, is reachable as ``lib_mecha.<name>``), then :func:`merge` it to a file or to an
in-memory state dict, or :func:`serialize` it to .mecha text.

Example:
    >>> import lib_mecha as mecha
    >>> recipe = mecha.weighted_sum(mecha.model("a"), mecha.model("b"), alpha=0.3)
    >>> mecha.merge(recipe, output="ab.safetensors", model_dirs=["models"])
"""
from __future__ import annotations

from . import methods as _methods
from . import lora as lora  # noqa: E402  (registers apply_lora, lora_delta and sd-mecha's LoRA converters)
from .arch import blocks as blocks
from .arch import component_weights as component_weights
from .arch import explain_detection as explain_detection
from .arch import pattern_weights as pattern_weights
from .arch import preset as preset
from .compose import add_difference as add_difference
from .engine.api import MergeResult as MergeResult
from .engine.api import merge as merge
from .engine.api import plan as plan
from .engine.options import MergeOptions as MergeOptions
from .errors import MechaError as MechaError
from .methods import merge_method as merge_method
from .recipe import literal as literal
from .recipe import model as model
from .recipe_text import deserialize as deserialize
from .recipe_text import deserialize_path as deserialize_path
from .recipe_text import deserialize_with_comments as deserialize_with_comments
from .recipe_text import serialize as serialize

__version__ = "0.1.0"

__all__ = [
    "add_difference", "blocks", "component_weights", "deserialize", "deserialize_path", "deserialize_with_comments",
    "explain_detection", "literal", "merge", "merge_method", "MergeOptions", "MergeResult", "MechaError", "model",
    "pattern_weights", "plan", "preset", "serialize",
]


def __getattr__(name: str):
    """``lib_mecha.<method>`` is the recipe builder of any registered merge method."""
    specs = _methods.all_methods()
    if name in specs:
        return _methods.builder_for(specs[name])
    raise AttributeError(f"module 'lib_mecha' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_methods.all_methods()))
