"""The latent-diffusion UNet (``openaimodel.UNetModel``, also SGM's) as its checkpoints name it.

The generator walks the same construction loop as the network's ``__init__``: per resolution
level ``num_res_blocks`` residual blocks (each followed by a spatial transformer where the
level has attention), a downsampler between levels, a middle block, then the mirrored output
blocks whose residual blocks take the skip connections' channels in addition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

from ._table import conv, linear, norm

Rows = Iterator[Tuple[str, Tuple[int, ...]]]


@dataclass(frozen=True)
class UNetConfig:
    model_channels: int
    channel_mult: Tuple[int, ...]
    num_res_blocks: int
    transformer_depth: Tuple[int, ...]  # per level; 0 = no attention at that level
    context_dim: int
    middle_depth: int = 1
    linear_proj: bool = False  # use_linear_in_transformer: proj_in/proj_out are Linear, not 1x1 conv
    in_channels: int = 4
    out_channels: int = 4
    adm_in_channels: int = 0  # > 0: a label_emb MLP (SDXL's size/crop conditioning)


SD1_UNET = UNetConfig(320, (1, 2, 4, 4), 2, (1, 1, 1, 0), 768)
SD2_UNET = UNetConfig(320, (1, 2, 4, 4), 2, (1, 1, 1, 0), 1024, linear_proj=True)
SDXL_UNET = UNetConfig(320, (1, 2, 4), 2, (0, 2, 10), 2048, middle_depth=10, linear_proj=True,
                       adm_in_channels=2816)
SDXL_REFINER_UNET = UNetConfig(384, (1, 2, 4, 4), 2, (0, 4, 4, 0), 1280, middle_depth=4, linear_proj=True,
                               adm_in_channels=2560)


def _resblock(name: str, cin: int, cout: int, emb: int) -> Iterator:
    yield from norm(name + ".in_layers.0", cin)
    yield from conv(name + ".in_layers.2", cout, cin)
    yield from linear(name + ".emb_layers.1", cout, emb)
    yield from norm(name + ".out_layers.0", cout)
    yield from conv(name + ".out_layers.3", cout, cout)
    if cin != cout:
        yield from conv(name + ".skip_connection", cout, cin, 1)


def _attention(name: str, dim: int, context: int) -> Iterator:
    yield name + ".to_q.weight", (dim, dim)
    yield name + ".to_k.weight", (dim, context)
    yield name + ".to_v.weight", (dim, context)
    yield from linear(name + ".to_out.0", dim, dim)


def _transformer(name: str, c: int, depth: int, context: int, linear_proj: bool) -> Iterator:
    yield from norm(name + ".norm", c)
    yield from (linear(name + ".proj_in", c, c) if linear_proj else conv(name + ".proj_in", c, c, 1))
    for d in range(depth):
        b = f"{name}.transformer_blocks.{d}"
        yield from _attention(b + ".attn1", c, c)
        yield from linear(b + ".ff.net.0.proj", 8 * c, c)  # GEGLU: two halves of 4·c
        yield from linear(b + ".ff.net.2", c, 4 * c)
        yield from _attention(b + ".attn2", c, context)
        for n in ("norm1", "norm2", "norm3"):
            yield from norm(f"{b}.{n}", c)
    yield from (linear(name + ".proj_out", c, c) if linear_proj else conv(name + ".proj_out", c, c, 1))


def unet(u: UNetConfig) -> Rows:
    """Rows relative to the UNet (``time_embed.0.weight``, ``input_blocks.1.0.in_layers.0.weight``, ...)."""
    mc = u.model_channels
    emb = 4 * mc
    yield from linear("time_embed.0", emb, mc)
    yield from linear("time_embed.2", emb, emb)
    if u.adm_in_channels:
        yield from linear("label_emb.0.0", emb, u.adm_in_channels)
        yield from linear("label_emb.0.2", emb, emb)
    yield from conv("input_blocks.0.0", mc, u.in_channels)
    skips = [mc]
    ch = mc
    idx = 1
    levels = len(u.channel_mult)
    for level, mult in enumerate(u.channel_mult):
        for _ in range(u.num_res_blocks):
            yield from _resblock(f"input_blocks.{idx}.0", ch, mult * mc, emb)
            ch = mult * mc
            if u.transformer_depth[level]:
                yield from _transformer(f"input_blocks.{idx}.1", ch, u.transformer_depth[level],
                                        u.context_dim, u.linear_proj)
            skips.append(ch)
            idx += 1
        if level != levels - 1:
            yield from conv(f"input_blocks.{idx}.0.op", ch, ch)
            skips.append(ch)
            idx += 1
    yield from _resblock("middle_block.0", ch, ch, emb)
    yield from _transformer("middle_block.1", ch, u.middle_depth, u.context_dim, u.linear_proj)
    yield from _resblock("middle_block.2", ch, ch, emb)
    idx = 0
    for level in reversed(range(levels)):
        mult = u.channel_mult[level]
        for i in range(u.num_res_blocks + 1):
            yield from _resblock(f"output_blocks.{idx}.0", ch + skips.pop(), mult * mc, emb)
            ch = mult * mc
            sub = 1
            if u.transformer_depth[level]:
                yield from _transformer(f"output_blocks.{idx}.1", ch, u.transformer_depth[level],
                                        u.context_dim, u.linear_proj)
                sub = 2
            if level and i == u.num_res_blocks:
                yield from conv(f"output_blocks.{idx}.{sub}.conv", ch, ch)
            idx += 1
    yield from norm("out.0", ch)
    yield from conv("out.2", u.out_channels, mc)
