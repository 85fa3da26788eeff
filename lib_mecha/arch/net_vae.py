"""The KL autoencoder of latent diffusion (``AutoencoderKL``) in its original (LDM) naming."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

from ._table import conv, norm

Rows = Iterator[Tuple[str, Tuple[int, ...]]]


@dataclass(frozen=True)
class KLAutoencoder:
    ch: int = 128
    ch_mult: Tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    in_channels: int = 3
    z_channels: int = 4
    embed_dim: int = 4
    quant_convs: bool = True  # SD3/FLUX VAEs have none


KL_F8 = KLAutoencoder()
KL_F8_16CH = KLAutoencoder(z_channels=16, embed_dim=16, quant_convs=False)


def _resnet(name: str, cin: int, cout: int) -> Iterator:
    yield from norm(name + ".norm1", cin)
    yield from conv(name + ".conv1", cout, cin)
    yield from norm(name + ".norm2", cout)
    yield from conv(name + ".conv2", cout, cout)
    if cin != cout:
        yield from conv(name + ".nin_shortcut", cout, cin, 1)


def _attn(name: str, c: int) -> Iterator:
    yield from norm(name + ".norm", c)
    for n in ("q", "k", "v", "proj_out"):
        yield from conv(f"{name}.{n}", c, c, 1)


def _mid(prefix: str, c: int) -> Iterator:
    yield from _resnet(prefix + "mid.block_1", c, c)
    yield from _attn(prefix + "mid.attn_1", c)
    yield from _resnet(prefix + "mid.block_2", c, c)


def kl_autoencoder(v: KLAutoencoder) -> Rows:
    """Encoder, decoder and the quant convs, relative to the autoencoder."""
    levels = len(v.ch_mult)
    # encoder
    yield from conv("encoder.conv_in", v.ch, v.in_channels)
    cin = v.ch
    for i, mult in enumerate(v.ch_mult):
        cout = v.ch * mult
        for j in range(v.num_res_blocks):
            yield from _resnet(f"encoder.down.{i}.block.{j}", cin, cout)
            cin = cout
        if i != levels - 1:
            yield from conv(f"encoder.down.{i}.downsample.conv", cin, cin)
    yield from _mid("encoder.", cin)
    yield from norm("encoder.norm_out", cin)
    yield from conv("encoder.conv_out", 2 * v.z_channels, cin)
    # decoder: built top level first, but its ModuleList is indexed (and saved) bottom first
    top = v.ch * v.ch_mult[-1]
    yield from conv("decoder.conv_in", top, v.z_channels)
    yield from _mid("decoder.", top)
    ups = {}
    cin = top
    for i in reversed(range(levels)):
        cout = v.ch * v.ch_mult[i]
        rows = []
        for j in range(v.num_res_blocks + 1):
            rows.extend(_resnet(f"decoder.up.{i}.block.{j}", cin, cout))
            cin = cout
        if i != 0:
            rows.extend(conv(f"decoder.up.{i}.upsample.conv", cin, cin))
        ups[i] = rows
    for i in range(levels):
        yield from ups[i]
    yield from norm("decoder.norm_out", v.ch)
    yield from conv("decoder.conv_out", v.in_channels, v.ch)
    if v.quant_convs:
        yield from conv("quant_conv", 2 * v.embed_dim, 2 * v.z_channels, 1)
        yield from conv("post_quant_conv", v.z_channels, v.embed_dim, 1)
