"""How the builder adds a LoRA to a step's result, recognises one in a recipe, and checks it.

A LoRA added to a step becomes ``apply_lora(<step>, model(<lora file>), <strength>)`` (the
WebUI's own way of applying it: ``W + strength·ΔW``); several LoRAs chain in order. The strength
may be a plain value or a value per block.
"""
from __future__ import annotations

import os
import threading
from typing import Dict, Optional, Tuple

from ..errors import MechaError
from ..recipe import MergeNode, ModelNode, RecipeNode
from .model import LoraBuilder, LoraEntry
from .reading import LoraReader

METHOD = "apply_lora"
LORA_METHODS = ("apply_lora", "lora_delta")   # edited in the LoRA panel, never as a builder step

_lock = threading.Lock()
_reports: Dict[Tuple[str, int, int, Optional[str]], str] = {}


def available() -> bool:
    try:
        from .. import lora  # noqa: F401  (importing it registers apply_lora)
    except ImportError:
        return False
    from ..methods import all_methods
    return METHOD in all_methods()


def builder() -> Optional[LoraBuilder]:
    if not available():
        return None
    from ..methods import build

    def apply(node: RecipeNode, entry: LoraEntry, strength: RecipeNode) -> RecipeNode:
        return build(METHOD, node, ModelNode(entry.path, None, "weight"), strength)
    return apply


def reader() -> Optional[LoraReader]:
    if not available():
        return None

    def match(node: RecipeNode):
        if isinstance(node, MergeNode) and node.method == METHOD:
            base, lora_node, strength = node.args
            if isinstance(lora_node, ModelNode) and lora_node.model_config is None \
                    and lora_node.merge_space == "weight":
                return base, lora_node.path, strength
        return None
    return match


def check(path: str, architecture: Optional[str], base: Optional[str] = None) -> str:
    """A warning about a LoRA for the tab ('' when every module matches): modules that match
    nothing in the model, or a LoRA made for another architecture.

    ``base`` is the checkpoint the LoRA lands on: its real shapes are compared (else the
    architecture's). Cached per file pair.
    """
    try:
        stamp = [(os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in (path, base) if p]
    except OSError:
        return f"LoRA not found: {path}"
    key = (tuple(stamp), architecture)
    with _lock:
        if key in _reports:
            return _reports[key]
    try:
        report = _report(path, architecture, base)
    except MechaError as e:
        report = e.format_message()
    except Exception as e:  # an unreadable file: the merge reports it in full
        report = f"cannot read LoRA {path}: {e}"
    with _lock:
        _reports[key] = report
    return report


def _report(path: str, architecture: Optional[str], base: Optional[str]) -> str:
    from ..arch import resolve_architecture
    from ..io import open_model, read_header
    from ..lora import inspect
    from ..lora.matching import match_for, read_lora_file
    if architecture is None:
        return inspect(path).report()
    shape_of = None
    if base:
        shapes = {k: tuple(t.shape) for k, t in read_header(base).tensors.items()}
        arch = resolve_architecture(architecture)

        def shape_of(key):
            if key in shapes:
                return shapes[key]
            for alias in arch.keys[key].aliases if key in arch.keys else ():
                if alias in shapes:
                    return shapes[alias]
            return None
    with open_model(path) as handle:
        lora_file = read_lora_file(path, handle)
    return match_for(lora_file, resolve_architecture(architecture), shape_of).report()
