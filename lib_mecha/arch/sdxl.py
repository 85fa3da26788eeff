"""Stable Diffusion XL in the SGM checkpoint layout.

``sdxl-sgm`` (base; same id and keys as sd-mecha), components in output order:

* ``clip_l``: CLIP ViT-L/14, ``conditioner.embedders.0.transformer.text_model.*``. Its last layer
  (``layers.11``) and final norm are optional: SDXL uses the penultimate layer, and some files
  are pruned of what it never reads; ``position_ids`` (int64) is optional;
* ``clip_g``: OpenCLIP ViT-bigG/14, ``conditioner.embedders.1.model.*``, likewise with its last
  residual block (``resblocks.31``), ``ln_final``, ``logit_scale`` and ``text_projection`` optional;
* ``vae``: the KL-f8 autoencoder, ``first_stage_model.*``;
* ``diffuser``: the UNet, ``model.diffusion_model.*`` (3 levels, transformer depth 2 and 10,
  ``label_emb`` for size/crop conditioning), plus the optional markers of v-prediction variants
  (``v_pred``, ``ztsnr`` as empty int64 tensors, ``edm_vpred.sigma_min/max``);
* ``scheduler``: the 12 optional noise-schedule buffers.

``sdxl_refiner-sgm`` (refiner): ``clip_g`` as ``conditioner.embedders.0.model.*``, ``vae`` and a
4-level UNet of 384 channels with transformer depth 4, conditioned on aesthetic score (2560-wide
``label_emb``); no sd-mecha counterpart.
"""
from __future__ import annotations

import torch

from ._table import TableBuilder
from .base import Architecture
from .net_clip import CLIP_G, CLIP_L, hf_clip_text, openclip_text
from .net_unet import SDXL_REFINER_UNET, SDXL_UNET, unet
from .net_vae import KL_F8, kl_autoencoder
from .sd1 import add_scheduler


def _clip_l_optional(name: str) -> bool:
    return (name.endswith("position_ids") or name.startswith(f"text_model.encoder.layers.{CLIP_L.layers - 1}.")
            or name.startswith("text_model.final_layer_norm."))


def _clip_g_optional(name: str) -> bool:
    return (name.startswith(f"transformer.resblocks.{CLIP_G.layers - 1}.") or name.startswith("ln_final.")
            or name in ("logit_scale", "text_projection"))


def add_clip_g(t: TableBuilder, prefix: str) -> None:
    t.extend(openclip_text(CLIP_G), "clip_g", prefix, optional=_clip_g_optional)


def build() -> Architecture:
    t = TableBuilder("sdxl-sgm", "Stable Diffusion XL base (SGM checkpoint)")
    t.extend(hf_clip_text(CLIP_L), "clip_l", "conditioner.embedders.0.transformer.", optional=_clip_l_optional,
             dtype_of=lambda n: torch.int64 if n.endswith("position_ids") else torch.float32)
    add_clip_g(t, "conditioner.embedders.1.model.")
    t.extend(kl_autoencoder(KL_F8), "vae", "first_stage_model.")
    t.add("edm_vpred.sigma_max", (), "diffuser", optional=True)
    t.add("edm_vpred.sigma_min", (), "diffuser", optional=True)
    t.extend(unet(SDXL_UNET), "diffuser", "model.diffusion_model.")
    t.add("v_pred", (0,), "diffuser", torch.int64, optional=True)
    t.add("ztsnr", (0,), "diffuser", torch.int64, optional=True)
    add_scheduler(t)
    return t.build()


def build_refiner() -> Architecture:
    t = TableBuilder("sdxl_refiner-sgm", "Stable Diffusion XL refiner (SGM checkpoint)")
    add_clip_g(t, "conditioner.embedders.0.model.")
    t.extend(kl_autoencoder(KL_F8), "vae", "first_stage_model.")
    t.extend(unet(SDXL_REFINER_UNET), "diffuser", "model.diffusion_model.")
    add_scheduler(t)
    return t.build()
