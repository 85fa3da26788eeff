"""Presets for the transformer layouts (``layouts_dit``): SD3 / SD3.5 joint blocks and FLUX.

Values are the weight of model B. ``BASE`` (text encoders) and ``VAE`` are 0 unless the preset
is about them. Curves run over the transformer's path from ``IN`` through the blocks to ``OUT``
as x = 0 .. 1. In these transformers the early blocks settle composition and layout and the
late blocks texture and fine detail, so "early" and "late" presets are the main tools.
"""
from typing import Dict, Sequence, Tuple

from .layouts_dit import FLUX_BLOCKS, sd3_blocks
from .presets import cosine, curve, pick, smoothstep

Z = {"BASE": 0, "VAE": 0}


def _thirds(blocks: Sequence[str]) -> Tuple[Tuple[str, ...], Tuple[str, ...], Tuple[str, ...]]:
    n = len(blocks)
    a, b = round(n / 3), round(2 * n / 3)
    return tuple(blocks[:a]), tuple(blocks[a:b]), tuple(blocks[b:])


def _common(all_blocks: Sequence[str], path: Sequence[str], blocks: Sequence[str]) -> Dict[str, tuple]:
    early, middle, late = _thirds(blocks)
    span = lambda seq: f"{seq[0]}-{seq[-1]}"  # noqa: E731
    return {
        "ALL_A": ("model A everywhere", pick(all_blocks, ())),
        "ALL_B": ("model B everywhere, text encoders and VAE included", pick(all_blocks, all_blocks)),
        "TRANSFORMER_B": ("model B's transformer with model A's text encoders and VAE", pick(all_blocks, path, **Z)),
        "TEXT_B": ("model B's text encoders (BASE) on model A's transformer and VAE", pick(all_blocks, ("BASE",))),
        "FLAT_25": ("25 % B in the whole transformer", pick(all_blocks, path, 0.25, **Z)),
        "FLAT_50": ("50 % B in the whole transformer", pick(all_blocks, path, 0.5, **Z)),
        "FLAT_75": ("75 % B in the whole transformer", pick(all_blocks, path, 0.75, **Z)),
        "EARLY": (f"B in the first third of the blocks ({span(early)}): B's composition, A's rendering",
                  pick(all_blocks, ("IN",) + early, **Z)),
        "MIDDLE": (f"B in the middle third of the blocks ({span(middle)})", pick(all_blocks, middle, **Z)),
        "LATE": (f"B in the last third of the blocks ({span(late)}) and OUT: A's composition, B's detail",
                 pick(all_blocks, late + ("OUT",), **Z)),
        "GRAD_UP": ("A to B linearly from IN to OUT", curve(path, lambda x: x, **Z)),
        "GRAD_DOWN": ("B to A linearly from IN to OUT", curve(path, lambda x: 1 - x, **Z)),
        "GRAD_V": ("B at both ends of the transformer, A in its middle", curve(path, lambda x: abs(1 - 2 * x), **Z)),
        "GRAD_A": ("A at both ends of the transformer, B in its middle",
                   curve(path, lambda x: 1 - abs(1 - 2 * x), **Z)),
        "SMOOTHSTEP": ("A to B from IN to OUT on a smoothstep curve", curve(path, smoothstep, **Z)),
        "REVERSE_SMOOTHSTEP": ("B to A from IN to OUT on a smoothstep curve",
                               curve(path, lambda x: 1 - smoothstep(x), **Z)),
        "COSINE": ("B to A from IN to OUT on a half cosine", curve(path, cosine, **Z)),
        "IN_OUT_B": ("B in the input embedders and the output layer only", pick(all_blocks, ("IN", "OUT"), **Z)),
        "VAE_B": ("model B's VAE only", pick(all_blocks, ("VAE",))),
    }


def sd3_presets(depth: int) -> Dict[str, tuple]:
    blocks = sd3_blocks(depth)
    joints = blocks[2:-2]
    return _common(blocks, blocks[1:-1], joints)


def flux_presets() -> Dict[str, tuple]:
    doubles = tuple(b for b in FLUX_BLOCKS if b.startswith("DOUBLE"))
    singles = tuple(b for b in FLUX_BLOCKS if b.startswith("SINGLE"))
    out = _common(FLUX_BLOCKS, FLUX_BLOCKS[1:-1], doubles + singles)
    out.update({
        "DOUBLE_B": ("B in the 19 double-stream blocks, where text and image attend with separate weights",
                     pick(FLUX_BLOCKS, doubles, **Z)),
        "SINGLE_B": ("B in the 38 single-stream blocks", pick(FLUX_BLOCKS, singles, **Z)),
        "DOUBLE_50_SINGLE_B": ("50 % B in the double-stream blocks, B in the single-stream blocks",
                               {**pick(FLUX_BLOCKS, singles, **Z), **{b: 0.5 for b in doubles}}),
        "SINGLE_LATE": ("B in the second half of the single-stream blocks (SINGLE19-SINGLE37) and OUT",
                        pick(FLUX_BLOCKS, singles[19:] + ("OUT",), **Z)),
    })
    return out


SD3_PRESETS = sd3_presets(24)
SD35_LARGE_PRESETS = sd3_presets(38)
FLUX_PRESETS = flux_presets()
