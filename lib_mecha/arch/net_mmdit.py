"""The MMDiT of Stable Diffusion 3 / 3.5 (SAI reference / ComfyUI naming).

``depth`` joint blocks of ``64·depth`` channels; each has a ``context_block`` (text stream) and
an ``x_block`` (image stream) with adaLN modulation, fused qkv attention and an MLP. The last
context block is "pre-only": it only feeds the final joint attention, so it has no output
projection and no MLP, and a 2-way instead of 6-way modulation. SD3.5 adds RMS q/k norms
(``ln_q``/``ln_k``); SD3.5 medium (MMDiT-X) adds a second image self-attention (``attn2``, with a
9-way modulation) to its first blocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

from ._table import conv, linear

Rows = Iterator[Tuple[str, Tuple[int, ...]]]


@dataclass(frozen=True)
class MMDiTConfig:
    depth: int
    pos_embed_max: int = 192
    qk_norm: bool = False
    x_self_attn_layers: Tuple[int, ...] = ()
    in_channels: int = 16
    patch: int = 2
    adm_in: int = 2048
    context_in: int = 4096
    head_dim: int = 64

    @property
    def hidden(self) -> int:
        return 64 * self.depth


SD3_MEDIUM = MMDiTConfig(depth=24)
SD35_LARGE = MMDiTConfig(depth=38, qk_norm=True)
SD35_MEDIUM = MMDiTConfig(depth=24, pos_embed_max=384, qk_norm=True, x_self_attn_layers=tuple(range(13)))


def _attention(name: str, h: int, c: MMDiTConfig, pre_only: bool) -> Iterator:
    yield from linear(name + ".qkv", 3 * h, h)
    if c.qk_norm:
        yield name + ".ln_q.weight", (c.head_dim,)
        yield name + ".ln_k.weight", (c.head_dim,)
    if not pre_only:
        yield from linear(name + ".proj", h, h)


def _stream(name: str, h: int, c: MMDiTConfig, pre_only: bool, self_attn2: bool) -> Iterator:
    mods = 2 if pre_only else (9 if self_attn2 else 6)
    yield from linear(name + ".adaLN_modulation.1", mods * h, h)
    yield from _attention(name + ".attn", h, c, pre_only)
    if self_attn2:
        yield from _attention(name + ".attn2", h, c, False)
    if not pre_only:
        yield from linear(name + ".mlp.fc1", 4 * h, h)
        yield from linear(name + ".mlp.fc2", h, 4 * h)


def mmdit(c: MMDiTConfig) -> Rows:
    """Rows relative to the diffusion model (``joint_blocks.0.x_block.attn.qkv.weight``, ...)."""
    h = c.hidden
    yield "pos_embed", (1, c.pos_embed_max ** 2, h)
    yield from conv("x_embedder.proj", h, c.in_channels, c.patch)
    yield from linear("t_embedder.mlp.0", h, 256)
    yield from linear("t_embedder.mlp.2", h, h)
    yield from linear("y_embedder.mlp.0", h, c.adm_in)
    yield from linear("y_embedder.mlp.2", h, h)
    yield from linear("context_embedder", h, c.context_in)
    for i in range(c.depth):
        last = i == c.depth - 1
        yield from _stream(f"joint_blocks.{i}.context_block", h, c, last, False)
        yield from _stream(f"joint_blocks.{i}.x_block", h, c, False, i in c.x_self_attn_layers)
    yield from linear("final_layer.adaLN_modulation.1", 2 * h, h)
    yield from linear("final_layer.linear", c.patch * c.patch * c.in_channels, h)
