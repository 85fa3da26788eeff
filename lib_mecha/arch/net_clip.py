"""Text encoders as their checkpoints name them: CLIP in Hugging Face and OpenCLIP naming, and T5.

Each generator yields ``(name, shape)`` in the module's registration order (parameters of a
module before its children, as ``state_dict()`` lists them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

from ._table import linear, norm

Rows = Iterator[Tuple[str, Tuple[int, ...]]]


@dataclass(frozen=True)
class ClipText:
    """A CLIP text transformer: ``layers`` blocks of ``width`` channels, MLP ``mlp`` wide."""

    layers: int
    width: int
    mlp: int
    vocab: int = 49408
    positions: int = 77
    projection: int = 0  # text_projection output size; 0 = none


CLIP_L = ClipText(layers=12, width=768, mlp=3072, projection=768)
CLIP_G = ClipText(layers=32, width=1280, mlp=5120, projection=1280)
OPENCLIP_H = ClipText(layers=24, width=1024, mlp=4096, projection=1024)


def hf_clip_text(c: ClipText, position_ids: bool = True, projection: bool = False) -> Rows:
    """``transformers.CLIPTextModel`` names, relative to the model (``text_model.…``)."""
    w = c.width
    if position_ids:
        yield "text_model.embeddings.position_ids", (1, c.positions)
    yield "text_model.embeddings.token_embedding.weight", (c.vocab, w)
    yield "text_model.embeddings.position_embedding.weight", (c.positions, w)
    for i in range(c.layers):
        p = f"text_model.encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            yield from linear(p + "self_attn." + proj, w, w)
        yield from norm(p + "layer_norm1", w)
        yield from linear(p + "mlp.fc1", c.mlp, w)
        yield from linear(p + "mlp.fc2", w, c.mlp)
        yield from norm(p + "layer_norm2", w)
    yield from norm("text_model.final_layer_norm", w)
    if projection:
        yield "text_projection.weight", (c.projection, w)


def openclip_text(c: ClipText, attn_mask: bool = False) -> Rows:
    """OpenCLIP ``open_clip.CLIP`` text-tower names (``model.…`` in SD2, ``….model.…`` in SDXL)."""
    w = c.width
    yield "positional_embedding", (c.positions, w)
    yield "text_projection", (w, c.projection)
    yield "logit_scale", ()
    if attn_mask:
        yield "attn_mask", (c.positions, c.positions)
    yield "token_embedding.weight", (c.vocab, w)
    for i in range(c.layers):
        p = f"transformer.resblocks.{i}."
        yield p + "attn.in_proj_weight", (3 * w, w)
        yield p + "attn.in_proj_bias", (3 * w,)
        yield from linear(p + "attn.out_proj", w, w)
        yield from norm(p + "ln_1", w)
        yield from linear(p + "mlp.c_fc", c.mlp, w)
        yield from linear(p + "mlp.c_proj", w, c.mlp)
        yield from norm(p + "ln_2", w)
    yield from norm("ln_final", w)


@dataclass(frozen=True)
class T5Encoder:
    layers: int = 24
    width: int = 4096
    ff: int = 10240
    heads: int = 64
    head_dim: int = 64
    vocab: int = 32128
    buckets: int = 32


T5XXL = T5Encoder()


def t5_encoder(c: T5Encoder, shared: bool = True) -> Rows:
    """``transformers.T5EncoderModel`` names (gated-GELU feed-forward, v1.1)."""
    inner = c.heads * c.head_dim
    if shared:
        yield "shared.weight", (c.vocab, c.width)
    for i in range(c.layers):
        p = f"encoder.block.{i}.layer."
        for n in ("q", "k", "v"):
            yield f"{p}0.SelfAttention.{n}.weight", (inner, c.width)
        yield f"{p}0.SelfAttention.o.weight", (c.width, inner)
        if i == 0:
            yield f"{p}0.SelfAttention.relative_attention_bias.weight", (c.buckets, c.heads)
        yield f"{p}0.layer_norm.weight", (c.width,)
        yield f"{p}1.DenseReluDense.wi_0.weight", (c.ff, c.width)
        yield f"{p}1.DenseReluDense.wi_1.weight", (c.ff, c.width)
        yield f"{p}1.DenseReluDense.wo.weight", (c.width, c.ff)
        yield f"{p}1.layer_norm.weight", (c.width,)
    yield "encoder.final_layer_norm.weight", (c.width,)
