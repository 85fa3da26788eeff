"""Block layouts (MBW): named groups of an architecture's keys that share one value.

A :class:`BlockLayout` names its blocks in display order and assigns every key of its
architecture to exactly one block. The assignment is a rule on the key's name, so it also
places keys the table does not list (extra keys of an unusual file) instead of dropping them.

Layouts with sd-mecha's identifiers keep sd-mecha's key -> block map:

* ``sd1-supermerger_blocks`` (for ``sd1-ldm``, 26 blocks): ``BASE``, ``IN00``-``IN11``, ``M00``,
  ``OUT00``-``OUT11``. UNet input/middle/output blocks by index; ``time_embed`` is ``BASE``; the
  final ``out.*`` layers are ``OUT11``; every non-UNet key (text encoder, VAE, EMA copy,
  scheduler buffers) is ``BASE``.
* ``sdxl-supermerger_blocks`` (for ``sdxl-sgm``, 21 blocks): ``BASE``, ``IN00``-``IN08``, ``M00``,
  ``OUT00``-``OUT08``, ``VAE``. As SD1, with ``label_emb`` in ``BASE``, ``out.*`` in ``OUT08`` and
  ``first_stage_model.*`` in ``VAE``; the text encoders are ``BASE``.

``sd2-supermerger_blocks`` and ``sdxl_refiner-mecha_blocks`` apply the same rule to SD2 and to
the 4-level SDXL refiner UNet; the transformer layouts are described in ``layouts_dit``.

Each layout is also registered as a tiny architecture of scalar keys (one per block), the way
sd-mecha declares block configs, so ``literal({...}, config="sd1-supermerger_blocks")`` resolves.
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from ..errors import UnknownArchitecture
from .base import Architecture, KeySpec, register_architecture, resolve_architecture


@dataclass(frozen=True)
class BlockLayout:
    """Blocks of one architecture.

    Attributes:
        identifier: the layout id, written in .mecha files (``sd1-supermerger_blocks``).
        architecture: the id of the architecture whose keys it groups (``sd1-ldm``).
        blocks: block names in display order.
        rule: maps a canonical key name to its block name.
        descriptions: a short note per block for the UI (optional).
    """

    identifier: str
    architecture: str
    blocks: Tuple[str, ...]
    rule: Callable[[str], str]
    label: str = ""
    descriptions: Tuple[Tuple[str, str], ...] = ()

    def block_of(self, key: str) -> str:
        """The block of a key (canonical or alias name)."""
        arch = resolve_architecture(self.architecture)
        block = self.rule(arch.canonical(key) or key)
        if block not in self.blocks:  # a rule bug, not user input
            raise AssertionError(f"{self.identifier}: rule put {key!r} in unknown block {block!r}")
        return block

    def key_map(self) -> "OrderedDict[str, str]":
        """Every key of the architecture with its block, in table order."""
        arch = resolve_architecture(self.architecture)
        return OrderedDict((k, self.rule(k)) for k in arch.keys)

    def keys_of(self, block: str) -> Tuple[str, ...]:
        return tuple(k for k, b in self.key_map().items() if b == block)

    def as_architecture(self) -> Architecture:
        keys = OrderedDict((b, KeySpec(b, (), torch.float32, "blocks")) for b in self.blocks)
        return Architecture(self.identifier, keys, self.label or f"blocks of {self.architecture}")


_lock = threading.Lock()
_layouts: Dict[str, Callable[[], BlockLayout]] = {}
_built: Dict[str, BlockLayout] = {}


def register_layout(identifier: str, factory: Callable[[], BlockLayout]) -> None:
    """Register a layout builder (it runs on first use); the layout is also an architecture id."""
    with _lock:
        if identifier in _layouts:
            raise ValueError(f"block layout {identifier!r} is already registered")
        _layouts[identifier] = factory
    register_architecture(identifier, lambda: resolve_layout(identifier).as_architecture())


def resolve_layout(identifier: str) -> BlockLayout:
    with _lock:
        if identifier in _built:
            return _built[identifier]
        factory = _layouts.get(identifier)
    if factory is None:
        raise UnknownArchitecture(identifier, _layouts.keys())
    layout = factory()
    with _lock:
        return _built.setdefault(identifier, layout)


def layout_ids() -> Tuple[str, ...]:
    return tuple(_layouts)


def layouts_for(architecture: str) -> Tuple[str, ...]:
    """Ids of the layouts that group ``architecture``'s keys."""
    return tuple(i for i in _layouts if resolve_layout(i).architecture == architecture)


def is_layout(identifier: Optional[str]) -> bool:
    return identifier in _layouts


# --- UNet layouts (SD1/SD2, SDXL) -------------------------------------------------------------

_RE_IN = re.compile(r"\.input_blocks\.(\d+)\.")
_RE_MID = re.compile(r"\.middle_block\.\d+\.")
_RE_OUT = re.compile(r"\.output_blocks\.(\d+)\.")
UNET_PREFIX = "model.diffusion_model."


def unet_rule(last_out: str, base_markers: Tuple[str, ...], vae_block: Optional[str]) -> Callable[[str], str]:
    """The supermerger assignment: UNet blocks by index, everything else BASE (or VAE)."""
    def rule(key: str) -> str:
        if key.startswith(UNET_PREFIX):
            if any(m in key for m in base_markers):
                return "BASE"
            if ".out." in key:
                return last_out
            m = _RE_IN.search(key)
            if m:
                return f"IN{int(m.group(1)):02d}"
            if _RE_MID.search(key):
                return "M00"
            m = _RE_OUT.search(key)
            if m:
                return f"OUT{int(m.group(1)):02d}"
            return last_out
        if vae_block and key.startswith("first_stage_model."):
            return vae_block
        return "BASE"
    return rule


def unet_blocks(n: int, extra: Tuple[str, ...] = ()) -> Tuple[str, ...]:
    return (("BASE",) + tuple(f"IN{i:02d}" for i in range(n)) + ("M00",)
            + tuple(f"OUT{i:02d}" for i in range(n)) + extra)


def _sd1_layout() -> BlockLayout:
    return BlockLayout("sd1-supermerger_blocks", "sd1-ldm", unet_blocks(12),
                       unet_rule("OUT11", (".time_embed",), None),
                       "SD1 blocks (SuperMerger): BASE, IN00-IN11, M00, OUT00-OUT11")


def _sd2_layout() -> BlockLayout:
    return BlockLayout("sd2-supermerger_blocks", "sd2-ldm", unet_blocks(12),
                       unet_rule("OUT11", (".time_embed",), None),
                       "SD2 blocks (as SD1): BASE, IN00-IN11, M00, OUT00-OUT11")


def _sdxl_refiner_layout() -> BlockLayout:
    return BlockLayout("sdxl_refiner-mecha_blocks", "sdxl_refiner-sgm", unet_blocks(12, ("VAE",)),
                       unet_rule("OUT11", (".time_embed", ".label_emb"), "VAE"),
                       "SDXL refiner blocks: BASE, IN00-IN11, M00, OUT00-OUT11, VAE")


def _sdxl_layout() -> BlockLayout:
    return BlockLayout("sdxl-supermerger_blocks", "sdxl-sgm", unet_blocks(9, ("VAE",)),
                       unet_rule("OUT08", (".time_embed", ".label_emb"), "VAE"),
                       "SDXL blocks (SuperMerger): BASE, IN00-IN08, M00, OUT00-OUT08, VAE")


BUILTIN_LAYOUTS = {
    "sd1-supermerger_blocks": _sd1_layout,
    "sdxl-supermerger_blocks": _sdxl_layout,
    "sd2-supermerger_blocks": _sd2_layout,
    "sdxl_refiner-mecha_blocks": _sdxl_refiner_layout,
}


def register_builtin_layouts() -> None:
    from .layouts_dit import DIT_LAYOUTS
    for ident, factory in {**BUILTIN_LAYOUTS, **DIT_LAYOUTS}.items():
        if ident not in _layouts:
            register_layout(ident, factory)
