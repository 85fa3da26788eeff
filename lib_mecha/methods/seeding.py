"""Deterministic randomness for stochastic merge methods.

A method's random draws for one key depend only on ``(seed, key, stream)``: generators are
seeded from a hash of the three (:class:`Draws` gives element-wise draws in blocks, each block
from its own generator, so that slices of a key can be drawn on any thread), and every draw is
made on the CPU in float32 and only then moved to the tensor's device and dtype. So the same
seed gives the same tensors whatever the thread count, the slicing, the order keys are merged
in, or the merge device (on little-endian machines, which all of torch's are).

Uniform draws come from numpy's SFC64, whose raw output is fixed across numpy versions: each
64-bit word gives two floats, 23 random mantissa bits each under the exponent of 1.0, so a
draw ``1 + u`` in [1, 2) costs a bit operation instead of a conversion (a fraction of torch's
Mersenne Twister ``uniform_``). Normal draws use torch's generator.

``seed=None`` keeps sd-mecha's meaning: fresh, unreproducible randomness. The UI always
passes an explicit seed, so recipes it writes are reproducible.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
from typing import Optional

import numpy as np
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


# Element-wise draws come in blocks of this many elements, each block from its own generator:
# as many as a method's slice (_values.SLICE_ELEMENTS), so a slice seeds one generator. Seeding
# is Python work that holds the GIL while the other threads wait: smaller blocks leave cores
# idle in a merge.
DRAW_BLOCK = 1 << 18
_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """splitmix64's finaliser: neighbouring numbers give unrelated 64-bit words."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _mix(value: int) -> int:
    """:func:`_splitmix64` in 63 bits (a seed torch's generators take)."""
    return _splitmix64(value) & ((1 << 63) - 1)


# SFC64's state is three words and a counter; its own seeding starts the counter at 1 and
# discards 12 outputs to mix the words, as :func:`_block_bits` does.
_SFC64_WARMUP = 12
# Both 32-bit halves of a word: the random mantissa bits, and the exponent of 1.0.
_MANTISSA_BITS = np.uint64(0x007FFFFF_007FFFFF)
_ONE_BITS = np.uint64(0x3F800000_3F800000)


class _ThreadBits(threading.local):
    """Each thread's SFC64, reseeded for every block: making one seeds it through numpy's
    SeedSequence first (9 µs, holding the GIL), setting its state costs a tenth of that."""

    def __init__(self):
        self.bits = np.random.SFC64(0)


_thread_bits = _ThreadBits()


def _block_bits(material: int, block: int, words: int) -> np.ndarray:
    """The first ``words`` 64-bit words of ``block``'s SFC64 stream."""
    bits = _thread_bits.bits
    seed = _mix(material ^ block)
    state = np.array([_splitmix64(seed ^ word) for word in (1, 2, 3)] + [1], dtype=np.uint64)
    bits.state = {"bit_generator": "SFC64", "state": {"state": state}, "has_uint32": 0, "uinteger": 0}
    bits.random_raw(_SFC64_WARMUP)
    return bits.random_raw(words)


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

    def _blocks(self, out: torch.Tensor, start: int):
        """``(block, first, last)`` for each block that elements ``start...`` of ``out`` touch."""
        end = start + out.numel()
        block = start // DRAW_BLOCK
        while block * DRAW_BLOCK < end:
            yield block, max(start, block * DRAW_BLOCK), min(end, (block + 1) * DRAW_BLOCK)
            block += 1

    def shifted_uniform(self, out: torch.Tensor, start: int) -> torch.Tensor:
        """Fills the 1-D float32 CPU tensor ``out`` with ``1 + u`` for the uniform [0, 1) draws
        ``u`` of elements ``start...`` (multiples of 2^-23): compare with ``1 + p`` for a
        chance ``p`` without the subtraction."""
        for block, first, last in self._blocks(out, start):
            offset = first - block * DRAW_BLOCK  # a range starting inside a block skips its head
            words = _block_bits(self.material, block, (last - block * DRAW_BLOCK + 1) // 2)
            np.bitwise_and(words, _MANTISSA_BITS, out=words)
            np.bitwise_or(words, _ONE_BITS, out=words)
            values = torch.from_numpy(words.view(np.float32))
            out[first - start:last - start].copy_(values[offset:offset + last - first])
        return out

    def uniform(self, out: torch.Tensor, start: int) -> torch.Tensor:
        """Fills the 1-D float32 CPU tensor ``out`` with the uniform [0, 1) draws of elements
        ``start...`` (exactly :meth:`shifted_uniform` minus 1)."""
        return self.shifted_uniform(out, start).sub_(1)

    def normal(self, out: torch.Tensor, start: int) -> torch.Tensor:
        """Fills ``out`` with the standard normal draws of elements ``start...`` (torch's generator,
        seeded per block as the uniform draws are)."""
        for block, first, last in self._blocks(out, start):
            generator = torch.Generator(device="cpu")
            generator.manual_seed(_mix(self.material ^ block))
            if first == block * DRAW_BLOCK:  # the block's numbers from its start: draw straight into out
                out[first - start:last - start].normal_(generator=generator)
            else:  # a range starting inside a block: draw the block's head too, keep the tail
                head = torch.empty(last - block * DRAW_BLOCK, dtype=torch.float32).normal_(generator=generator)
                out[first - start:last - start].copy_(head[first - block * DRAW_BLOCK:])
        return out
