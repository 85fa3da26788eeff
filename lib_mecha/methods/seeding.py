"""Deterministic randomness for stochastic merge methods.

A method's random draws for one key depend only on ``(seed, key, stream)``: generators are
seeded from a hash of the three (:class:`Draws` gives element-wise draws in blocks, each block
from its own generator, so that slices of a key can be drawn on any thread), and every draw is
made on the CPU in float32 and only then moved to the tensor's device and dtype. So the same
seed gives the same tensors whatever the thread count, the slicing, the order keys are merged
in, or the merge device.

``seed=None`` keeps sd-mecha's meaning: fresh, unreproducible randomness. The UI always
passes an explicit seed, so recipes it writes are reproducible.
"""
from __future__ import annotations

import hashlib
import secrets
from typing import Optional

import torch


def _material(seed: Optional[int], key: Optional[str], stream: str, fresh_when_none: bool) -> int:
    if seed is None and fresh_when_none:
        return secrets.randbits(63)
    label = "default" if seed is None else str(int(seed))
    digest = hashlib.sha256(f"{label}\x00{key or ''}\x00{stream}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def key_generator(seed: Optional[int], key: Optional[str], stream: str = "", *,
                  fresh_when_none: bool = True) -> torch.Generator:
    """A CPU generator for one key. ``stream`` separates independent uses within one method.

    ``seed=None`` draws fresh entropy, unless ``fresh_when_none`` is False: then it is one fixed
    default seed (still different per key), for methods whose sd-mecha version is deterministic
    when unseeded.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(_material(seed, key, stream, fresh_when_none))
    return generator


# Element-wise draws come in blocks of this many elements, each block from its own generator.
DRAW_BLOCK = 1 << 16
_MASK64 = (1 << 64) - 1


def _mix(value: int) -> int:
    """splitmix64's finaliser: neighbouring block numbers give unrelated seeds."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (value ^ (value >> 31)) & ((1 << 63) - 1)


class Draws:
    """The random numbers of one key and stream, indexed by element.

    Element ``i`` belongs to block ``i // DRAW_BLOCK``, drawn from a generator seeded by the
    stream and the block number. Any range can be drawn on its own, on any thread, and gives
    the numbers the whole tensor would: the result never depends on slicing or thread count.
    Draws are made on the CPU in float32 (see the module docstring).
    """

    def __init__(self, seed: Optional[int], key: Optional[str], stream: str = "", *, fresh_when_none: bool = True,
                 material: Optional[int] = None):
        self.material = _material(seed, key, stream, fresh_when_none) if material is None else material

    def child(self, index: int) -> "Draws":
        """An independent stream derived from this one (one per model, say)."""
        return Draws(None, None, material=_mix(self.material ^ _mix(index + 1)))

    def _fill(self, out: torch.Tensor, start: int, draw) -> torch.Tensor:
        end = start + out.numel()
        block = start // DRAW_BLOCK
        while block * DRAW_BLOCK < end:
            first = max(start, block * DRAW_BLOCK)
            last = min(end, (block + 1) * DRAW_BLOCK)
            generator = torch.Generator(device="cpu")
            generator.manual_seed(_mix(self.material ^ block))
            if first == block * DRAW_BLOCK:  # the block's numbers from its start: draw straight into out
                draw(out[first - start:last - start], generator)
            else:  # a range starting inside a block: draw the block's head too, keep the tail
                head = torch.empty(last - block * DRAW_BLOCK, dtype=torch.float32)
                draw(head, generator)
                out[first - start:last - start].copy_(head[first - block * DRAW_BLOCK:])
            block += 1
        return out

    def uniform(self, out: torch.Tensor, start: int) -> torch.Tensor:
        """Fills the 1-D float32 CPU tensor ``out`` with the uniform [0, 1) draws of elements ``start...``."""
        return self._fill(out, start, lambda part, g: part.uniform_(generator=g))

    def normal(self, out: torch.Tensor, start: int) -> torch.Tensor:
        """Fills ``out`` with the standard normal draws of elements ``start...`` (as :meth:`uniform`)."""
        return self._fill(out, start, lambda part, g: part.normal_(generator=g))
