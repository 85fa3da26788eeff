"""LoRA / LyCORIS: deltas of every common algorithm and file format, baking, merging, extraction.

Importing this package registers the LoRA merge methods (``apply_lora``, ``lora_delta`` and
sd-mecha's LoRA converter identifiers).
"""
from __future__ import annotations

from . import methods as _methods  # noqa: F401  (registration)
from .api import bake, inspect, lora
from .combine import merge_loras
from .extract import extract_lora
from .methods import apply_lora, lora_delta

__all__ = ["apply_lora", "bake", "extract_lora", "inspect", "lora", "lora_delta", "merge_loras"]
