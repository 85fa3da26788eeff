"""The FLUX.1 transformer (Black Forest Labs naming): 19 double-stream and 38 single-stream blocks.

Double blocks keep separate image and text weights (modulation, qkv attention with RMS q/k
norms, MLP) that attend jointly; single blocks process the concatenated stream with one fused
``linear1`` (qkv and MLP input) and ``linear2`` (attention output and MLP output). ``dev`` has
a guidance embedding (``guidance_in``); ``schnell`` has none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

from ._table import linear

Rows = Iterator[Tuple[str, Tuple[int, ...]]]


@dataclass(frozen=True)
class FluxConfig:
    hidden: int = 3072
    heads: int = 24
    mlp_ratio: int = 4
    depth: int = 19
    depth_single: int = 38
    in_channels: int = 64
    vec_in: int = 768
    context_in: int = 4096
    guidance: bool = True


FLUX_DEV = FluxConfig()
FLUX_SCHNELL = FluxConfig(guidance=False)


def _mlp_embedder(name: str, h: int, d_in: int) -> Iterator:
    yield from linear(name + ".in_layer", h, d_in)
    yield from linear(name + ".out_layer", h, h)


def _qk_norm(name: str, head_dim: int) -> Iterator:
    yield name + ".query_norm.scale", (head_dim,)
    yield name + ".key_norm.scale", (head_dim,)


def flux(c: FluxConfig) -> Rows:
    """Rows relative to the transformer (``double_blocks.0.img_attn.qkv.weight``, ...)."""
    h, hd, mlp = c.hidden, c.hidden // c.heads, c.hidden * c.mlp_ratio
    yield from linear("img_in", h, c.in_channels)
    yield from _mlp_embedder("time_in", h, 256)
    yield from _mlp_embedder("vector_in", h, c.vec_in)
    if c.guidance:
        yield from _mlp_embedder("guidance_in", h, 256)
    yield from linear("txt_in", h, c.context_in)
    for i in range(c.depth):
        for stream in ("img", "txt"):
            p = f"double_blocks.{i}.{stream}"
            yield from linear(p + "_mod.lin", 6 * h, h)
            yield from linear(p + "_attn.qkv", 3 * h, h)
            yield from _qk_norm(p + "_attn.norm", hd)
            yield from linear(p + "_attn.proj", h, h)
            yield from linear(p + "_mlp.0", mlp, h)
            yield from linear(p + "_mlp.2", h, mlp)
    for i in range(c.depth_single):
        p = f"single_blocks.{i}"
        yield from linear(p + ".linear1", 3 * h + mlp, h)
        yield from linear(p + ".linear2", h, h + mlp)
        yield from _qk_norm(p + ".norm", hd)
        yield from linear(p + ".modulation.lin", 3 * h, h)
    yield from linear("final_layer.adaLN_modulation.1", 2 * h, h)
    yield from linear("final_layer.linear", c.in_channels, h)
