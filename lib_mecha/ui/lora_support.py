"""How the builder adds a LoRA to a step's result, and recognises one in a recipe.

The recipe shape comes from :mod:`lib_mecha.lora`; while this lib_mecha has no LoRA recipe
API, :func:`builder` and :func:`reader` return None and the tab says LoRAs cannot be baked.
"""
from __future__ import annotations

from typing import Optional

from .model import LoraBuilder
from .reading import LoraReader


def _api():
    try:
        from .. import lora
    except ImportError:
        return None
    if hasattr(lora, "apply_lora") and hasattr(lora, "match_applied_lora"):
        return lora
    return None


def available() -> bool:
    return _api() is not None


def builder() -> Optional[LoraBuilder]:
    api = _api()
    if api is None:
        return None

    def build(node, entry, strength):
        return api.apply_lora(node, entry.path, strength)
    return build


def reader() -> Optional[LoraReader]:
    api = _api()
    if api is None:
        return None
    return api.match_applied_lora
