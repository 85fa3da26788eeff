"""Stable Diffusion 2.x in the original LDM checkpoint layout: ``sd2-ldm`` (no sd-mecha counterpart).

One table covers the 512 base (epsilon) and the 768-v (v-prediction) models: they have the same
keys and shapes, and the prediction type lives in the inference config, not in the weights.
Components as ``sd1-ldm``, with the OpenCLIP ViT-H/14 text encoder (``cond_stage_model.model.*``,
24 layers, 1024 wide; ``logit_scale`` and ``text_projection``, unused by SD, are optional) in
place of CLIP-L, and a UNet with linear transformer projections and 1024-wide cross-attention.
"""
from __future__ import annotations

from ._table import TableBuilder
from .base import Architecture
from .net_clip import OPENCLIP_H, openclip_text
from .net_unet import SD2_UNET
from .net_vae import KL_F8, kl_autoencoder
from .sd1 import add_ldm_unet_and_ema, add_scheduler


def build() -> Architecture:
    t = TableBuilder("sd2-ldm", "Stable Diffusion 2.x, 512 base and 768-v (LDM checkpoint)")
    t.extend(openclip_text(OPENCLIP_H), "clip_h", "cond_stage_model.model.",
             optional=lambda n: n in ("logit_scale", "text_projection"))
    t.extend(kl_autoencoder(KL_F8), "vae", "first_stage_model.")
    add_ldm_unet_and_ema(t, SD2_UNET)
    add_scheduler(t)
    return t.build()
