"""FLUX.1 dev and schnell: ``flux-flux`` (same id and keys as sd-mecha's ``flux-flux.yaml``).

Components in sd-mecha's order: ``diffuser`` (``model.diffusion_model.*``, bfloat16; each key
also accepted under its bare transformer name, as in Black Forest Labs' transformer-only files),
``clip_l`` and ``t5xxl`` (``text_encoders.*``) and ``vae`` (the 16-channel autoencoder under
``vae.*``). The guidance embedding exists only in dev, so ``guidance_in.*`` is optional and one
table serves both (sd-mecha's table, made for dev, requires it).
"""
from __future__ import annotations

import torch

from ._table import TableBuilder
from .base import Architecture
from .net_clip import CLIP_L, T5XXL, hf_clip_text, t5_encoder
from .net_flux import FLUX_DEV, flux
from .net_vae import KL_F8_16CH, kl_autoencoder

PREFIX = "model.diffusion_model."


def build() -> Architecture:
    t = TableBuilder("flux-flux", "FLUX.1 dev / schnell")
    t.extend(flux(FLUX_DEV), "diffuser", PREFIX, dtype=torch.bfloat16, alias=lambda name: (name,),
             optional=lambda name: name.startswith("guidance_in."))
    t.extend(hf_clip_text(CLIP_L, position_ids=False), "clip_l", "text_encoders.clip_l.transformer.")
    t.extend(t5_encoder(T5XXL), "t5xxl", "text_encoders.t5xxl.transformer.")
    t.extend(kl_autoencoder(KL_F8_16CH), "vae", "vae.")
    return t.build()
