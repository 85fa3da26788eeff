"""What the engine lends a merge method for one key: memory and threads.

A method asks for its key's :class:`Workspace` with a parameter whose default is
``KeyWorkspace()`` (see :mod:`lib_mecha.methods.spec`, which states the whole contract)::

    @merge_method(returns=SAME)
    def halve(a=Tensor(SAME), work=KeyWorkspace()):
        flat, out = a.reshape(-1), work.empty(a.numel(), a.dtype)
        work.for_each_range(ranges(out.numel(), 1 << 18),
                            lambda start, end, _: torch.mul(flat[start:end], 0.5, out=out[start:end]))
        return out.view(a.shape)

* :meth:`Workspace.empty`: memory for a key-sized result or temporary. During a merge on the
  CPU it is lent by the engine (see :mod:`lib_mecha.memory`) and taken back when the key has
  been written: nothing lent survives its key.
* :meth:`Workspace.scratch`: a loop's reusable per-thread buffers, taken back when the loop ends.
* :meth:`Workspace.for_each_range`: a loop over ranges of the key, on the threads the engine
  granted to the key (a key too big to run beside another gets the idle ones); results must
  not depend on how many there are.
* :meth:`Workspace.per_thread`: an object of the method's own (a cache of memory it allocated
  itself) kept for the calling thread until the merge ends.

Outside a merge (a method called directly) the default workspace lends nothing and grants
nothing: ``torch.empty``, one thread, caches made afresh for each call.
"""
from __future__ import annotations

import threading
from concurrent.futures import Executor
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import torch

from .memory import BufferPool, Scratch, storage_of

State = TypeVar("State")
Range = Tuple[int, int]


def ranges(n: int, step: int, row: int = 1) -> List[Range]:
    """``(start, end)`` ranges covering ``n`` elements, each a whole number of ``row``-long rows
    and, unless a single row is longer, at most ``step`` elements."""
    row = max(row, 1)
    step = max(row, step // row * row)
    return [(start, min(start + step, n)) for start in range(0, n, step)]


class ThreadCaches:
    """The objects :meth:`Workspace.per_thread` keeps for one merge, by thread and factory."""

    def __init__(self):
        self._objects: Dict[tuple, object] = {}
        self._lock = threading.Lock()

    def get(self, factory: Callable[[], State]) -> State:
        key = (threading.get_ident(), factory)
        with self._lock:
            found = self._objects.get(key)
            if found is None:
                found = self._objects[key] = factory()
        return found


class Workspace:
    """A key's memory and threads (see the module docstring). The engine makes one per work item
    and closes it when the item has been written; a method only uses it."""

    def __init__(self, device="cpu", pool: Optional[BufferPool] = None, helpers: Optional[Executor] = None,
                 helper_count: int = 0, caches: Optional[ThreadCaches] = None, lent_to: str = "a method call"):
        self.device = torch.device(device)
        self.lent_to = lent_to
        self._pool = pool
        self._helpers = helpers if helpers is not None and helper_count > 0 else None
        self._helper_count = helper_count if self._helpers is not None else 0
        self._caches = caches
        self._owner = threading.get_ident()
        self._looping = False
        self._lent: List[torch.Tensor] = []
        self._scratches: List[Scratch] = []
        self._lock = threading.Lock()

    # --- for merge methods ------------------------------------------------------------------

    @property
    def threads(self) -> int:
        """How many threads a loop started here runs on."""
        return self._helper_count + 1

    def empty(self, numel: int, dtype: torch.dtype, device=None) -> torch.Tensor:
        """An uninitialised 1-D tensor of ``numel`` elements on ``device`` (default: the merge's)."""
        device = self.device if device is None else torch.device(device)
        if self._pool is None or device.type != "cpu":
            return torch.empty(numel, dtype=dtype, device=device)
        size = numel * dtype.itemsize
        buffer = self._pool.take(size)
        with self._lock:
            self._lent.append(buffer)
        return buffer[:size].view(dtype)

    def empty_like(self, t: torch.Tensor) -> torch.Tensor:
        """:meth:`empty` with ``t``'s shape, dtype and device (contiguous)."""
        return self.empty(t.numel(), t.dtype, t.device).view(t.shape)

    def scratch(self, like: torch.Tensor, minimum: int = 1 << 16) -> Scratch:
        """Reusable buffers for one thread's slices of a loop (``like``'s dtype and device unless
        asked otherwise), taken back when the loop ends."""
        scratch = Scratch(like, self._pool, minimum, lent_to=f"a loop of {self.lent_to}")
        if self._pool is not None:
            with self._lock:
                self._scratches.append(scratch)
        return scratch

    def for_each_range(self, spans: Sequence[Range], body: Callable[[int, int, State], None],
                       make_state: Optional[Callable[[], State]] = None) -> None:
        """``body(start, end, state)`` for every range, on the threads granted to this key.

        Each thread makes its own ``state`` (its reusable buffers: typically
        ``lambda: work.scratch(like)``) once, and a state with a ``release()`` method (or a tuple
        of parts with one) gets it called when the thread is done with the loop. Ranges go to
        whichever thread is free, so ``body`` must only write its own range of shared outputs
        (or its own entry of a per-range dict). The first error stops the loop and is raised here. Loops started
        inside a loop run on their own thread only.
        """
        make = make_state or _no_state
        if self._helpers is None or len(spans) < 2 or self._looping or threading.get_ident() != self._owner:
            _run_serially(spans, body, make)
            return
        self._looping = True
        try:
            _run_shared(spans, body, make, self._helpers, min(self._helper_count, len(spans) - 1))
        finally:
            self._looping = False

    def per_thread(self, factory: Callable[[], State]) -> State:
        """This thread's object made by ``factory()``, kept until the merge ends (a made-afresh one
        outside a merge). For caches of memory the method allocated itself: never lent memory."""
        return factory() if self._caches is None else self._caches.get(factory)

    # --- for the engine -----------------------------------------------------------------------

    def alone(self, lent_to: str) -> "Workspace":
        """A workspace lending from the same pool, without the granted threads (for one range of
        a key computed on a granted thread); its owner closes it."""
        return Workspace(self.device, self._pool, None, 0, self._caches, lent_to)

    def close(self, keep: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """Takes back everything lent (the pool checks that nothing refers to it any more),
        except the buffer ``keep`` lives in, which is returned (None when it is not lent memory)."""
        with self._lock:
            lent, self._lent = self._lent, []
            scratches, self._scratches = self._scratches, []
        for scratch in scratches:
            scratch.release()
        kept_storage = storage_of(keep) if keep is not None else None
        kept = None
        for buffer in lent:
            if kept is None and storage_of(buffer) == kept_storage:
                kept = buffer
            else:
                self._pool.give(buffer, self.lent_to)
        return kept

    def abandon(self) -> None:
        """After a failure: nothing lent is reused (the failed call's frames may still refer to it)."""
        with self._lock:
            lent, self._lent = self._lent, []
            scratches, self._scratches = self._scratches, []
        for buffer in lent:
            self._pool.forget(buffer)
        for scratch in scratches:  # (a loop that failed did not release its scratch)
            scratch.abandon()


def _no_state():
    return None


def _release(state) -> None:
    """Calls ``release()`` of a loop's state, or of each part of a tuple state, where it has one."""
    for part in state if isinstance(state, tuple) else (state,):
        release = getattr(part, "release", None)
        if callable(release):
            release()


def _run_serially(spans, body, make_state) -> None:
    state = make_state()
    for start, end in spans:
        body(start, end, state)
    _release(state)


def _run_shared(spans, body, make_state, pool: Executor, helpers: int) -> None:
    """The ranges shared out between the calling thread and ``helpers`` threads of ``pool``."""
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

    futures = [pool.submit(work) for _ in range(helpers)]
    try:
        work()
    finally:
        errors = [f.exception() for f in futures]  # waits for every helper
    for error in errors:
        if error is not None:
            raise error
