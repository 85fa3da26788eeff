"""Stable Diffusion 3 / 3.5 in the single-file ComfyUI layout.

* ``sd3-comfyui``: SD3 medium (same id and keys as sd-mecha);
* ``sd3.5_large-comfyui``: SD3.5 large (38 joint blocks of 2432 channels, q/k norms);
* ``sd3.5_medium-comfyui``: SD3.5 medium (MMDiT-X: q/k norms and a second image self-attention
  in joint blocks 0-12, position table for 384² patches).

Components, in sd-mecha's order: ``vae`` (16-channel KL autoencoder without quant convs,
``first_stage_model.*``), ``diffuser`` (``model.diffusion_model.*`` and the sampling sigmas),
``clip_g``, ``clip_l`` (Hugging Face CLIP with ``text_projection`` and a ``logit_scale``) and
``t5xxl`` (T5 v1.1 XXL encoder), under ``text_encoders.*``. SD3.5 files are often distributed
without the text encoders (and sigmas), so those keys are optional in the 3.5 tables.
"""
from __future__ import annotations

from ._table import TableBuilder
from .base import Architecture
from .net_clip import CLIP_G, CLIP_L, T5XXL, hf_clip_text, t5_encoder
from .net_mmdit import SD3_MEDIUM, SD35_LARGE, SD35_MEDIUM, MMDiTConfig, mmdit
from .net_vae import KL_F8_16CH, kl_autoencoder


def add_text_encoders(t: TableBuilder, optional: bool, clip_g: bool = True, logit_scale: bool = True) -> None:
    opt = lambda name: optional  # noqa: E731
    encoders = [("clip_g", CLIP_G), ("clip_l", CLIP_L)] if clip_g else [("clip_l", CLIP_L)]
    for name, cfg in encoders:
        prefix = f"text_encoders.{name}."
        if logit_scale:
            t.add(prefix + "logit_scale", (), name, optional=optional)
        t.extend(hf_clip_text(cfg, position_ids=False, projection=logit_scale), name, prefix + "transformer.",
                 optional=opt)
    if logit_scale:
        t.add("text_encoders.t5xxl.logit_scale", (), "t5xxl", optional=optional)
    # T5 registers ``shared`` before the encoder
    t.extend(t5_encoder(T5XXL), "t5xxl", "text_encoders.t5xxl.transformer.", optional=opt)


def _build(identifier: str, label: str, c: MMDiTConfig, optional_extras: bool) -> Architecture:
    t = TableBuilder(identifier, label)
    t.extend(kl_autoencoder(KL_F8_16CH), "vae", "first_stage_model.")
    t.extend(mmdit(c), "diffuser", "model.diffusion_model.")
    t.add("model.model_sampling.sigmas", (1000,), "diffuser", optional=optional_extras)
    add_text_encoders(t, optional=optional_extras)
    return t.build()


def build() -> Architecture:
    return _build("sd3-comfyui", "Stable Diffusion 3 medium (ComfyUI single file)", SD3_MEDIUM, False)


def build_35_large() -> Architecture:
    return _build("sd3.5_large-comfyui", "Stable Diffusion 3.5 large (ComfyUI single file)", SD35_LARGE, True)


def build_35_medium() -> Architecture:
    return _build("sd3.5_medium-comfyui", "Stable Diffusion 3.5 medium (ComfyUI single file)", SD35_MEDIUM, True)
