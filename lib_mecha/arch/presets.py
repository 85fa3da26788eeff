"""Block-weight presets: named value sets for one block layout, each with a one-line description.

Presets are data. Each layout's presets live in a module made for its architecture
(``presets_sd1``, ``presets_sdxl``, ``presets_dit``) and are listed in :data:`PRESET_MODULES`; they
are loaded on first use and validated then: every block of the layout gets a value, and no other name appears.
"""
from __future__ import annotations

import importlib
import math
import threading
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Sequence, Tuple

from ..errors import ArchitectureMismatch, ParameterError, suggest
from .layouts import resolve_layout

PRESET_MODULES = {  # layout -> (module, attribute holding {name: (description, values)})
    "sd1-supermerger_blocks": ("presets_sd1", "PRESETS"),
    "sd2-supermerger_blocks": ("presets_sd1", "SD2_PRESETS"),
    "sdxl-supermerger_blocks": ("presets_sdxl", "PRESETS"),
    "sdxl_refiner-mecha_blocks": ("presets_sd1", "REFINER_PRESETS"),
    "sd3-mecha_blocks": ("presets_dit", "SD3_PRESETS"),
    "sd3.5_medium-mecha_blocks": ("presets_dit", "SD3_PRESETS"),
    "sd3.5_large-mecha_blocks": ("presets_dit", "SD35_LARGE_PRESETS"),
    "flux-mecha_blocks": ("presets_dit", "FLUX_PRESETS"),
}


@dataclass(frozen=True)
class Preset:
    name: str
    layout: str
    values: Tuple[Tuple[str, float], ...]  # (block, value) in the layout's block order
    description: str

    def as_dict(self) -> Dict[str, float]:
        return dict(self.values)


_lock = threading.Lock()
_loaded: Dict[str, Dict[str, Preset]] = {}


def presets(layout_id: str) -> Dict[str, Preset]:
    """All presets of a layout by name, in definition order (an unknown layout raises)."""
    layout = resolve_layout(layout_id)
    with _lock:
        if layout_id in _loaded:
            return dict(_loaded[layout_id])
    source = PRESET_MODULES.get(layout_id)
    table: Dict[str, Preset] = {}
    if source is not None:
        module, attribute = source
        raw = getattr(importlib.import_module(f"{__package__}.{module}"), attribute)
        for name, (description, values) in raw.items():
            table[name] = _validated(layout, name, description, values)
    with _lock:
        _loaded.setdefault(layout_id, table)
        return dict(_loaded[layout_id])


def _validated(layout, name: str, description: str, values) -> Preset:
    if isinstance(values, Mapping):
        unknown = [b for b in values if b not in layout.blocks]
        if unknown:
            raise ValueError(f"preset {name} of {layout.identifier}: unknown block {unknown[0]!r}")
        values = [values[b] for b in layout.blocks if b in values]
    values = [float(v) for v in values]
    if len(values) != len(layout.blocks):
        raise ValueError(f"preset {name} of {layout.identifier}: {len(values)} values for {len(layout.blocks)} blocks")
    if not description or "\n" in description:
        raise ValueError(f"preset {name} of {layout.identifier}: needs a one-line description")
    return Preset(name, layout.identifier, tuple(zip(layout.blocks, values)), description)


def preset(layout_id: str, name: str) -> Preset:
    """One preset by name.

    Raises:
        ArchitectureMismatch: the name is a preset of another layout only.
        ParameterError: no layout has a preset of that name (with the nearest names).
    """
    own = presets(layout_id)
    if name in own:
        return own[name]
    elsewhere = [ident for ident in PRESET_MODULES if ident != layout_id and name in presets(ident)]
    if elsewhere:
        shown = ", ".join(list(own)[:6]) + (", ..." if len(own) > 6 else "")
        raise ArchitectureMismatch(f"preset {name!r} is for {', '.join(elsewhere)}, not {layout_id}",
                                   f"presets of {layout_id}: {shown or 'none'}")
    hints = suggest(name, own)
    raise ParameterError("blocks", "preset", f"{layout_id} has no preset {name!r}",
                         ("did you mean " + " or ".join(repr(h) for h in hints) + "?") if hints
                         else f"presets are: {', '.join(own)}")


# --- helpers for preset modules -----------------------------------------------------------

def curve(blocks: Sequence[str], f: Callable[[float], float], **fixed: float) -> Dict[str, float]:
    """``f(x)`` for each block with x evenly spaced from 0 (first) to 1 (last); ``fixed`` adds
    blocks outside the curve (``BASE=0``)."""
    n = len(blocks)
    out = dict(fixed)
    for i, b in enumerate(blocks):
        out[b] = round(f(i / (n - 1)), 12)
    return out


def pick(blocks: Sequence[str], chosen, on: float = 1.0, off: float = 0.0, **fixed: float) -> Dict[str, float]:
    """``on`` for the chosen blocks, ``off`` for the others."""
    chosen = set(chosen)
    out = dict(fixed)
    for b in blocks:
        out[b] = on if b in chosen else off
    return out


def smoothstep(x: float) -> float:
    return x * x * (3 - 2 * x)


def fold(v: float) -> float:
    """A triangle wave: v for 0..1, 2 - v for 1..2, and so on."""
    v = math.fmod(abs(v), 2.0)
    return 2.0 - v if v > 1.0 else v


def cosine(x: float) -> float:
    return (1 + math.cos(math.pi * x)) / 2
