"""Random state dicts with an architecture's real key names, for demos, benchmarks and tests."""
from __future__ import annotations

import zlib
from typing import Dict, Optional

import torch

from .base import resolve_architecture


def random_state_dict(arch_id: str, seed: int, dtype: torch.dtype = torch.float16, scale: float = 1.0,
                      shape_divisor: Optional[int] = None, optional: bool = False,
                      components: Optional[tuple] = None) -> Dict[str, torch.Tensor]:
    """A state dict holding every mandatory key of ``arch_id`` filled with seeded noise.

    Args:
        arch_id: a registered architecture id (``"sd1-ldm"``).
        seed: each key's values depend only on ``seed`` and the key, so two calls with
            different key subsets agree on the keys they share.
        dtype: the dtype of floating-point keys; integer buffers keep their own dtype.
        scale: standard deviation of the noise.
        shape_divisor: None for real shapes; an integer ``d`` divides every dimension of 16 or
            more by ``d`` (at least 1), for tiny files that still carry the real key names.
        optional: also include the optional keys (EMA, scheduler buffers, position ids).
        components: only these components (default: all).

    Example:
        >>> sd = random_state_dict("sd1-ldm", seed=0, shape_divisor=64)
    """
    arch = resolve_architecture(arch_id)
    out = {}
    for key, spec in arch.keys.items():
        if spec.optional and not optional:
            continue
        if components is not None and spec.component not in components:
            continue
        shape = tuple(spec.shape)
        if shape_divisor:
            shape = tuple(max(1, s // shape_divisor) if s >= 16 else s for s in shape)
        if not spec.dtype.is_floating_point:
            n = 1
            for s in shape:
                n *= s
            out[key] = torch.arange(n, dtype=spec.dtype).reshape(shape)
            continue
        g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2 ** 63))
        t = torch.randn(shape, generator=g, dtype=torch.float32)
        if scale != 1.0:
            t.mul_(scale)
        out[key] = t.to(dtype)
    return out
