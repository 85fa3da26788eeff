"""LoRA / LyCORIS: deltas of every common algorithm and file format, baking, merging, extraction.

Importing this package registers the LoRA merge methods (``apply_lora``, ``lora_delta`` and
sd-mecha's LoRA converter identifiers).
"""
from __future__ import annotations

from . import methods as _methods  # noqa: F401  (registration)
from .api import bake, inspect, lora

__all__ = ["bake", "inspect", "lora"]
