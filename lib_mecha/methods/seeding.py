"""Deterministic randomness for stochastic merge methods.

A method's random draws for one key depend only on ``(seed, key, stream)``: the generator
is seeded from a hash of the three, and every draw is made on the CPU in float32 and only
then moved to the tensor's device and dtype. So the same seed gives the same tensors
whatever the thread count, the order keys are merged in, or the merge device.

``seed=None`` keeps sd-mecha's meaning: fresh, unreproducible randomness. The UI always
passes an explicit seed, so recipes it writes are reproducible.
"""
from __future__ import annotations

import hashlib
import secrets
from typing import Optional

import torch


def key_generator(seed: Optional[int], key: Optional[str], stream: str = "", *,
                  fresh_when_none: bool = True) -> torch.Generator:
    """A CPU generator for one key. ``stream`` separates independent uses within one method.

    ``seed=None`` draws fresh entropy, unless ``fresh_when_none`` is False: then it is one fixed
    default seed (still different per key), for methods whose sd-mecha version is deterministic
    when unseeded.
    """
    if seed is None and fresh_when_none:
        material = secrets.randbits(63)
    else:
        label = "default" if seed is None else str(int(seed))
        digest = hashlib.sha256(f"{label}\x00{key or ''}\x00{stream}".encode("utf-8")).digest()
        material = int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(material)
    return generator


def uniform_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform [0, 1) draws shaped like ``t``, on ``t``'s device (drawn on the CPU in float32)."""
    return torch.rand(t.shape, generator=generator, dtype=torch.float32).to(t.device)


def normal_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal draws shaped like ``t``, on ``t``'s device and in its dtype."""
    return torch.randn(t.shape, generator=generator, dtype=torch.float32).to(device=t.device, dtype=t.dtype)


def bernoulli_like(t: torch.Tensor, keep, generator: torch.Generator) -> torch.Tensor:
    """A boolean mask shaped like ``t``: each entry is True with probability ``keep`` (scalar or tensor)."""
    u = uniform_like(t, generator)
    if isinstance(keep, torch.Tensor):
        keep = keep.to(device=t.device, dtype=torch.float32)
    return u < keep
