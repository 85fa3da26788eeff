"""Threads the engine grants to the key it is merging, and loops that spread over them.

The engine merges keys side by side on its own threads. A whole-tensor key too big to share
the memory budget with another of its size runs alone, and without help it would leave every
other core idle (about half the elements of an SD1.5 checkpoint sit in such keys). While such a
key runs, the engine grants it its idle threads; :func:`for_each_range` then spreads the key's slice loops over
them. torch releases the GIL inside its kernels, so slices of a few hundred thousand elements
run in parallel; torch's own intra-op threads stay at one (see ``engine.execute.intra_op_threads``).

Results never depend on the thread count: every slice is computed the same way whoever runs
it, and a loop that reduces across slices keeps one partial result per slice and combines
them in slice order.
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence, Tuple, TypeVar

import torch

State = TypeVar("State")
Range = Tuple[int, int]


@dataclass(frozen=True)
class Grant:
    pool: Executor   # runs the helpers; the granting thread works too
    helpers: int     # threads of ``pool`` this key may use


# Not inherited by the pool's threads (they start from an empty context), so a loop running on a
# helper never spreads further.
_grant: contextvars.ContextVar[Optional[Grant]] = contextvars.ContextVar("lib_mecha_grant", default=None)


@contextlib.contextmanager
def granted(pool: Optional[Executor], helpers: int) -> Iterator[None]:
    """Within this block, loops of the current thread may also use ``helpers`` threads of ``pool``."""
    token = _grant.set(Grant(pool, helpers) if pool is not None and helpers > 0 else None)
    try:
        yield
    finally:
        _grant.reset(token)


class _SpareBuffers(threading.local):
    """Each thread's CPU byte buffers that loops have finished with, for the next loop's
    :class:`Scratch`: fresh buffers of a megabyte and more come from the system and fault their
    pages in again every loop (measured: most of the 1.2 M page faults of a TIES merge of four
    SD1.5 models). Dropped when a merge ends (:func:`merge_ended`), and with their thread."""

    def __init__(self):
        self.free: list = []

    def take(self, size: int) -> torch.Tensor:
        """The smallest spare buffer of at least ``size`` bytes, or a new one."""
        spare = take_smallest(self.free, size)
        return torch.empty(size, dtype=torch.uint8) if spare is None else spare


def take_smallest(free: list, size: int, largest: Optional[int] = None) -> Optional[torch.Tensor]:
    """Removes from ``free`` and returns its smallest byte buffer of at least ``size`` bytes (and at
    most ``largest``), or None."""
    fitting = [i for i, b in enumerate(free) if size <= b.numel() and (largest is None or b.numel() <= largest)]
    if not fitting:
        return None
    return free.pop(min(fitting, key=lambda i: free[i].numel()))


_spare = _SpareBuffers()


class Scratch:
    """One thread's reusable buffers for the slices of a loop, by name: each is made once, at the
    largest size asked (at least ``minimum`` elements). Key-sized temporaries would each fault
    their pages in and stream through memory; these stay in cache between the steps of a slice.
    :func:`for_each_range` releases a loop's Scratch when the loop ends, and the thread's next
    loop reuses its memory."""

    def __init__(self, like: torch.Tensor, minimum: int = 1 << 16):
        self.dtype, self.device, self.minimum = like.dtype, like.device, minimum
        self._buffers = {}
        self._memory = []  # the spare byte buffers behind CPU buffers

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
        if device.type != "cpu":
            return torch.empty(numel, dtype=dtype, device=device)
        memory = _spare.take(numel * dtype.itemsize)
        self._memory.append(memory)
        return memory[:numel * dtype.itemsize].view(dtype)

    def owns(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` lives in one of these buffers."""
        storage = tensor.untyped_storage().data_ptr()
        return any(b.untyped_storage().data_ptr() == storage for b in self._buffers.values())

    def release(self) -> None:
        """Gives the CPU memory to the thread's next loop (call on the thread that used it,
        once nothing refers to the buffers any more)."""
        self._buffers.clear()
        _spare.free.extend(self._memory)
        self._memory = []


# The engine's key-sized memory while it evaluates a key: ``take(numel, dtype)``. Not inherited by
# the pool's threads, like the grant.
_lender: contextvars.ContextVar[Optional[Callable[[int, torch.dtype], torch.Tensor]]] = contextvars.ContextVar(
    "lib_mecha_lender", default=None)


@contextlib.contextmanager
def lending(take: Callable[[int, torch.dtype], torch.Tensor]) -> Iterator[None]:
    """Within this block, :func:`empty` on this thread takes CPU memory from ``take``."""
    token = _lender.set(take)
    try:
        yield
    finally:
        _lender.reset(token)


def empty(numel: int, dtype: torch.dtype, device) -> torch.Tensor:
    """An uninitialised 1-D tensor for a key-sized result or temporary of a method.

    While the engine merges a key on the CPU this is memory lent by it, reused from earlier
    keys and taken back when the key is written: a fresh key-sized tensor faults every page
    in, which costs about as much as a pass of arithmetic over it. Elsewhere, ``torch.empty``."""
    take = _lender.get()
    if take is None or torch.device(device).type != "cpu":
        return torch.empty(numel, dtype=dtype, device=device)
    return take(numel, dtype)


def empty_like(t: torch.Tensor) -> torch.Tensor:
    """:func:`empty` with ``t``'s shape, dtype and device (contiguous)."""
    return empty(t.numel(), t.dtype, t.device).view(t.shape)


_merge_end_hooks: list = []


def at_merge_end(hook: Callable[[], None]) -> Callable[[], None]:
    """Run ``hook()`` on the thread that called a merge, when the merge ends: a method's caches
    kept per thread for its next key let go of their memory. (The engine's own threads end with
    the merge; the calling thread may live on, in a WebUI, and with ``threads=0`` it merged the
    keys itself.) Hooks look their caches up when called, so a thread-local one is the caller's."""
    _merge_end_hooks.append(hook)
    return hook


def merge_ended() -> None:
    """Called by the engine when a merge ends, however it ends."""
    _spare.free.clear()
    for hook in _merge_end_hooks:
        hook()


def thread_count() -> int:
    """How many threads a loop started here runs on (1 without a grant)."""
    grant = _grant.get()
    return 1 if grant is None else grant.helpers + 1


def ranges(n: int, step: int, row: int = 1) -> list:
    """``(start, end)`` ranges covering ``n`` elements, each a whole number of ``row``-long rows
    and, unless a single row is longer, at most ``step`` elements."""
    row = max(row, 1)
    step = max(row, step // row * row)
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def for_each_range(spans: Sequence[Range], body: Callable[[int, int, State], None],
                   make_state: Callable[[], State] = lambda: None) -> None:
    """``body(start, end, state)`` for every range, on the granted threads.

    Each thread makes its own ``state`` (its reusable buffers) once. Ranges go to whichever
    thread is free, so ``body`` must only write its own range of shared outputs (or its own
    entry of a per-range list). The first error stops the loop and is raised here.
    """
    grant = _grant.get()
    if grant is None or len(spans) < 2:
        state = make_state()
        for start, end in spans:
            body(start, end, state)
        _release(state)
        return
    queue = iter(spans)
    lock = threading.Lock()
    failed = threading.Event()

    def work() -> None:
        state = make_state()
        while not failed.is_set():
            with lock:
                span = next(queue, None)
            if span is None:
                break
            try:
                body(span[0], span[1], state)
            except BaseException:
                failed.set()
                raise
        _release(state)

    helpers = [grant.pool.submit(work) for _ in range(min(grant.helpers, len(spans) - 1))]
    try:
        work()
    finally:
        errors = [f.exception() for f in helpers]  # waits for every helper
    for error in errors:
        if error is not None:
            raise error


def _release(state) -> None:
    if isinstance(state, Scratch):
        state.release()
