"""Stable Diffusion 1.x in the original LDM checkpoint layout: ``sd1-ldm`` (same id and keys as sd-mecha).

Components, in output order:

* ``clip_l``: the CLIP ViT-L/14 text encoder, ``cond_stage_model.transformer.text_model.*``; the
  pre-transformers-4.x names without ``text_model.`` are accepted as aliases; ``position_ids``
  (an int64 buffer) is optional;
* ``vae``: the KL-f8 autoencoder, ``first_stage_model.*``;
* ``diffuser``: the UNet, ``model.diffusion_model.*``;
* ``ema``: the EMA copy of the UNet kept by training checkpoints (all optional). Its names are the
  UNet's without ``model.`` and with the dots removed, under ``model_ema.``; the variant without
  ``diffusion_model`` is an alias. ``model_ema.decay`` / ``model_ema.num_updates`` go with it;
* ``scheduler``: the 12 noise-schedule buffers of the DDPM wrapper (optional).

Declared dtypes are float32 (as sd-mecha declares them), int64 for ``position_ids`` and int32 for
``model_ema.num_updates``.
"""
from __future__ import annotations

import torch

from ._table import TableBuilder
from .base import Architecture
from .net_clip import CLIP_L, hf_clip_text
from .net_unet import SD1_UNET, UNetConfig, unet
from .net_vae import KL_F8, kl_autoencoder

SCHEDULER_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)
TIMESTEPS = 1000


def add_clip_l_transformer(t: TableBuilder, prefix: str, component: str = "clip_l") -> None:
    """CLIP-L as ``<prefix>text_model.*``, aliased by the old ``<prefix>*`` names."""
    def old(name):
        return (prefix + name[len("text_model."):],) if name.startswith("text_model.") else ()
    t.extend(hf_clip_text(CLIP_L), component, prefix, alias=old,
             optional=lambda n: n.endswith("position_ids"),
             dtype_of=lambda n: torch.int64 if n.endswith("position_ids") else torch.float32)


def add_ldm_unet_and_ema(t: TableBuilder, u: UNetConfig, with_ema: bool = True) -> None:
    rows = list(unet(u))
    t.extend(rows, "diffuser", "model.diffusion_model.")
    if with_ema:
        t.add("model_ema.decay", (), "ema", optional=True)
        t.add("model_ema.num_updates", (), "ema", torch.int32, optional=True)
        for name, shape in rows:
            flat = name.replace(".", "")
            t.add("model_ema.diffusion_model" + flat, shape, "ema",
                  aliases=("model_ema." + flat,), optional=True)


def add_scheduler(t: TableBuilder) -> None:
    for name in SCHEDULER_BUFFERS:
        t.add(name, (TIMESTEPS,), "scheduler", optional=True)


def build() -> Architecture:
    t = TableBuilder("sd1-ldm", "Stable Diffusion 1.x (LDM checkpoint)")
    add_clip_l_transformer(t, "cond_stage_model.transformer.")
    t.extend(kl_autoencoder(KL_F8), "vae", "first_stage_model.")
    add_ldm_unet_and_ema(t, SD1_UNET)
    add_scheduler(t)
    return t.build()
