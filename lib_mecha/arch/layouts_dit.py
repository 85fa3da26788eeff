"""Block layouts for the transformer architectures (SD3 / SD3.5, FLUX), designed here.

Neither SuperMerger's nor sd-mecha's identifiers exist for these, so they are named
``<architecture>-mecha_blocks``. Both follow the same plan, from the input to the output of
the network, with the parts people weight separately kept apart:

* ``BASE``: the text encoders (CLIP-L, CLIP-G, T5-XXL) and schedule buffers;
* ``IN``: the layers that bring the inputs into the transformer: patch embedding and position
  table, timestep / pooled-text / guidance embedders, and the context (text) projection;
* the transformer blocks, one block each, in depth order:
  SD3 ``JOINT00``.. (24 for SD3 medium and SD3.5 medium, 38 for SD3.5 large), both the text
  and image streams of a joint block together;
  FLUX ``DOUBLE00``-``DOUBLE18`` (double-stream) then ``SINGLE00``-``SINGLE37`` (single-stream);
* ``OUT``: the final adaLN modulation and linear projection back to latent patches;
* ``VAE``: the autoencoder.

The FLUX layout reads keys under their canonical names, so a transformer-only file with bare
names (``double_blocks.3.img_mlp.0.weight``) maps the same way.
"""
from __future__ import annotations

import re
from typing import Callable, Tuple

from .layouts import BlockLayout

_RE_JOINT = re.compile(r"^model\.diffusion_model\.joint_blocks\.(\d+)\.")
_RE_DOUBLE = re.compile(r"^model\.diffusion_model\.double_blocks\.(\d+)\.")
_RE_SINGLE = re.compile(r"^model\.diffusion_model\.single_blocks\.(\d+)\.")
DIFFUSION = "model.diffusion_model."


def _rule(blocks: Tuple[Tuple[re.Pattern, str], ...], vae_prefix: str) -> Callable[[str], str]:
    def rule(key: str) -> str:
        for pattern, name in blocks:
            m = pattern.match(key)
            if m:
                return f"{name}{int(m.group(1)):02d}"
        if key.startswith(DIFFUSION + "final_layer."):
            return "OUT"
        if key.startswith(DIFFUSION):
            return "IN"
        if key.startswith(vae_prefix):
            return "VAE"
        return "BASE"
    return rule


def sd3_blocks(depth: int) -> Tuple[str, ...]:
    return ("BASE", "IN") + tuple(f"JOINT{i:02d}" for i in range(depth)) + ("OUT", "VAE")


def _sd3_layout(identifier: str, architecture: str, depth: int, label: str) -> Callable[[], BlockLayout]:
    return lambda: BlockLayout(identifier, architecture, sd3_blocks(depth),
                               _rule(((_RE_JOINT, "JOINT"),), "first_stage_model."), label)


FLUX_BLOCKS = (("BASE", "IN") + tuple(f"DOUBLE{i:02d}" for i in range(19))
               + tuple(f"SINGLE{i:02d}" for i in range(38)) + ("OUT", "VAE"))


def _flux_layout() -> BlockLayout:
    return BlockLayout("flux-mecha_blocks", "flux-flux", FLUX_BLOCKS,
                       _rule(((_RE_DOUBLE, "DOUBLE"), (_RE_SINGLE, "SINGLE")), "vae."),
                       "FLUX blocks: BASE (text encoders), IN, DOUBLE00-18, SINGLE00-37, OUT, VAE")


DIT_LAYOUTS = {
    "sd3-mecha_blocks": _sd3_layout("sd3-mecha_blocks", "sd3-comfyui", 24,
                                    "SD3 medium blocks: BASE, IN, JOINT00-23, OUT, VAE"),
    "sd3.5_large-mecha_blocks": _sd3_layout("sd3.5_large-mecha_blocks", "sd3.5_large-comfyui", 38,
                                            "SD3.5 large blocks: BASE, IN, JOINT00-37, OUT, VAE"),
    "sd3.5_medium-mecha_blocks": _sd3_layout("sd3.5_medium-mecha_blocks", "sd3.5_medium-comfyui", 24,
                                             "SD3.5 medium blocks: BASE, IN, JOINT00-23, OUT, VAE"),
    "flux-mecha_blocks": _flux_layout,
}
