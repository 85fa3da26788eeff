"""Architectures: key tables generated from each network's definition, detection, block layouts.

Importing this package registers the built-in architectures; each table is generated the first
time it is resolved.
"""
from __future__ import annotations

from .base import (Architecture, KeySpec, all_architectures, architecture_ids, candidates, detect,
                   register_architecture, resolve_architecture)


BUILTIN = (
    ("sd1-ldm", "sd1", "build"),
    ("sdxl-sgm", "sdxl", "build"),
    ("sdxl_refiner-sgm", "sdxl", "build_refiner"),
    ("sd2-ldm", "sd2", "build"),
    ("sd3-comfyui", "sd3", "build"),
    ("sd3.5_large-comfyui", "sd3", "build_35_large"),
    ("sd3.5_medium-comfyui", "sd3", "build_35_medium"),
    ("flux-flux", "flux", "build"),
)


def _lazy(module: str, function: str):
    def factory():
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{module}"), function)()
    return factory


def _register_builtins():
    from .base import _factories
    for ident, module, function in BUILTIN:
        if ident not in _factories:
            register_architecture(ident, _lazy(module, function))


_register_builtins()

from . import layouts as _layouts  # noqa: E402

_layouts.register_builtin_layouts()

from .block_weights import blocks  # noqa: E402  (registers the block converters)
from .layouts import BlockLayout, layout_ids, layouts_for, resolve_layout  # noqa: E402
from .components import component_weights  # noqa: E402
from .detection import explain_detection  # noqa: E402
from .patterns import PatternWarning, pattern_weights  # noqa: E402
from .presets import Preset, preset, presets  # noqa: E402

__all__ = [
    "Architecture", "BlockLayout", "KeySpec", "PatternWarning", "Preset", "all_architectures", "architecture_ids",
    "blocks", "candidates", "component_weights", "detect", "explain_detection", "layout_ids", "layouts_for",
    "pattern_weights", "preset", "presets", "register_architecture", "resolve_architecture", "resolve_layout",
]
