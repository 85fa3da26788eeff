"""Memory a merge reuses: one budget for the tensors in flight, and one pool of CPU buffers.

**Budget.** Before a work item starts, its estimated working set is taken from a byte
budget, and it is given back when the item's result has been written (:class:`Budget`).

**Pool.** A fresh CPU tensor of a megabyte or more comes from the system, which zeroes and
maps every page of it on first touch; at the size of a key that costs about as much as a
pass of arithmetic over it. So the memory of a finished key is kept and lent to the next one
(keys run biggest first, so it fits), and a loop's scratch buffers go to the next loop
(:class:`BufferPool`, :class:`Scratch`). There is one pool per merge; it is dropped when the
merge ends.

**The rule for everything lent: nothing lent survives its key.** A key's memory goes back to
the pool when the key has been written, a loop's scratch when the loop ends; anything that
still refers to a buffer then (a merge method that kept it, or a view of it, in a cache)
would see the next key's values. So when a buffer comes back, the pool checks that nothing
refers to it any more (torch counts the tensors that use a storage). A buffer still in use
is not reused: the merge stays correct. In strict mode (the environment variable
``MECHA_STRICT_MEMORY=1``, which the test suite sets) the pool raises
:class:`~lib_mecha.errors.LentMemoryKept` instead, so that a method breaking the rule fails
its tests rather than going unnoticed.
"""
from __future__ import annotations

import bisect
import logging
import os
import threading
from typing import Dict, List, Optional

import torch

from .errors import LentMemoryKept

log = logging.getLogger("lib_mecha")

STRICT_ENV = "MECHA_STRICT_MEMORY"


class Budget:
    """A byte semaphore: an item waits until its estimated working set fits (an item larger than
    the whole budget waits until nothing else runs, then runs alone)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, amount: int) -> None:
        with self._cond:
            while self.used > 0 and self.used + amount > self.capacity:
                self._cond.wait()
            self.used += amount

    def release(self, amount: int) -> None:
        with self._cond:
            self.used -= amount
            self._cond.notify_all()


def storage_of(tensor: torch.Tensor) -> int:
    """The address of the memory ``tensor`` lives in (shared by all its views)."""
    return tensor.untyped_storage().data_ptr()


_use_count_of = getattr(torch._C, "_storage_Use_Count", None)


def _users(buffer: torch.Tensor) -> Optional[int]:
    """How many tensors use ``buffer``'s memory, or None where torch cannot tell."""
    if _use_count_of is None:
        return None
    return _use_count_of(buffer.untyped_storage()._cdata)


_ALONE = _users(torch.empty(1, dtype=torch.uint8))  # the count of a buffer nothing else refers to


def strict_from_environment() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


class BufferPool:
    """CPU byte buffers lent out and given back, thread-safe.

    A request gets the smallest waiting buffer of at least its size, or a new one. A buffer of
    up to :attr:`INTERCHANGEABLE` bytes (a slice's) serves any smaller request; a larger one only
    requests of at least half its size, so that a key-sized buffer is not tied up by a small
    request while the next key of its size needs it. Requests under :attr:`SMALLEST` bytes get
    plain allocations, which are not pooled: the allocator reuses such small blocks itself
    without faulting pages in.

    What is lent and what waits here stay within :meth:`limit` together (the engine sets it to
    the memory the running keys may use): waiting buffers beyond it are let go, the largest
    first, so the pool never adds to the merge's peak.
    """

    SMALLEST = 64 << 10
    INTERCHANGEABLE = 8 << 20

    def __init__(self, strict: Optional[bool] = None):
        self.strict = strict_from_environment() if strict is None else strict
        self._free: List[torch.Tensor] = []     # waiting buffers, smallest first
        self._free_sizes: List[int] = []        # their sizes, for bisect
        self._waiting = 0                       # their bytes
        self._lent: Dict[int, int] = {}         # id of each lent buffer -> its bytes
        self._lent_bytes = 0
        self._limit: Optional[int] = None
        self._lock = threading.Lock()

    def limit(self, total: int) -> None:
        """From now on, at most ``total`` bytes lent and waiting together (lending goes on past it,
        with nothing waiting)."""
        with self._lock:
            self._limit = total
            self._trim(0)

    def take(self, size: int) -> torch.Tensor:
        """A uint8 buffer of at least ``size`` bytes, for :meth:`give` when done with it."""
        if size < self.SMALLEST:
            return torch.empty(size, dtype=torch.uint8)
        with self._lock:
            i = bisect.bisect_left(self._free_sizes, size)
            if i < len(self._free_sizes) and self._free_sizes[i] <= max(2 * size, self.INTERCHANGEABLE):
                nbytes = self._free_sizes.pop(i)
                buffer = self._free.pop(i)
                self._waiting -= nbytes
            else:
                self._trim(size)
                nbytes, buffer = size, torch.empty(size, dtype=torch.uint8)
            self._lent[id(buffer)] = nbytes
            self._lent_bytes += nbytes
        return buffer

    def give(self, buffer: torch.Tensor, lent_to: str) -> None:
        """Takes back a buffer of :meth:`take` (a plain allocation is only dropped). ``lent_to``
        says whose it was, for the error when something still refers to it."""
        users = _users(buffer)
        reusable = users is None or users <= _ALONE
        with self._lock:
            nbytes = self._lent.pop(id(buffer), None)
            if nbytes is None:
                return
            self._lent_bytes -= nbytes
            if reusable:
                i = bisect.bisect_right(self._free_sizes, nbytes)
                self._free_sizes.insert(i, nbytes)
                self._free.insert(i, buffer)
                self._waiting += nbytes
                self._trim(0)
        if not reusable:
            if self.strict:
                raise LentMemoryKept(lent_to)
            log.debug("memory lent to %s is still in use after it: not reused", lent_to)

    def forget(self, buffer: torch.Tensor) -> None:
        """The buffer now belongs to whoever holds it (a sink that keeps its tensors)."""
        with self._lock:
            nbytes = self._lent.pop(id(buffer), None)
            if nbytes is not None:
                self._lent_bytes -= nbytes

    def _trim(self, more: int) -> None:
        """Lets go of waiting buffers, largest first, until ``more`` bytes fit within the limit."""
        if self._limit is None:
            return
        while self._free and self._lent_bytes + self._waiting + more > self._limit:
            self._waiting -= self._free_sizes.pop()
            self._free.pop()


class Scratch:
    """One thread's reusable buffers for the slices of a loop, by name: each is made once, at the
    largest size asked (at least ``minimum`` elements). Key-sized temporaries would each fault
    their pages in and stream through memory; these stay in cache between the steps of a slice.

    CPU buffers come from ``pool`` when there is one and go back to it on :meth:`release`
    (a loop's scratch is released when the loop ends: see ``Workspace.for_each_range``).
    """

    def __init__(self, like: torch.Tensor, pool: Optional[BufferPool] = None, minimum: int = 1 << 16,
                 lent_to: str = "a loop"):
        self.dtype, self.device, self.minimum = like.dtype, like.device, minimum
        self._pool, self._lent_to = pool, lent_to
        self._buffers: Dict[tuple, torch.Tensor] = {}
        self._memory: List[torch.Tensor] = []  # the pool's buffers behind CPU buffers

    def get(self, name, size: int, dtype: Optional[torch.dtype] = None, device=None) -> torch.Tensor:
        """A buffer of ``size`` elements (``like``'s dtype and device unless given)."""
        dtype = dtype or self.dtype
        device = torch.device(device) if device is not None else self.device
        slot = (name, dtype, device)
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.numel() < size:
            buffer = self._buffers[slot] = self._new(max(size, self.minimum), dtype, device)
        return buffer[:size]

    def _new(self, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if device.type != "cpu" or self._pool is None:
            return torch.empty(numel, dtype=dtype, device=device)
        memory = self._pool.take(numel * dtype.itemsize)
        self._memory.append(memory)
        return memory[:numel * dtype.itemsize].view(dtype)

    def owns(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` lives in one of these buffers."""
        storage = storage_of(tensor)
        return any(storage_of(b) == storage for b in self._buffers.values())

    def abandon(self) -> None:
        """After a failure: the CPU memory is not reused (the failed call may still refer to it)."""
        self._buffers.clear()
        memory, self._memory = self._memory, []
        for buffer in memory:
            self._pool.forget(buffer)

    def release(self) -> None:
        """Gives the CPU memory back to the pool (on the thread that used it, once nothing refers
        to the buffers any more: the pool checks)."""
        self._buffers.clear()
        memory, self._memory = self._memory, []
        for buffer in memory:
            self._pool.give(buffer, self._lent_to)
