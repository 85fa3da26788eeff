"""Execution: every planned key evaluated on a bounded pool of threads and handed to a sink.

Memory is bounded by the tensors in flight, never by model size or count:

* each work item is one key, or one slice of a large elementwise key (:mod:`.items`);
* before an item starts, its estimated working set is taken from a byte budget
  (:class:`~lib_mecha.memory.Budget`) and given back when its result has been handed to the
  sink; an item larger than the whole budget runs alone;
* inside an item every sub-expression is computed once and dropped after its last consumer,
  so each input tensor is read once per key whatever the recipe's shape (:mod:`.evaluate`);
* a finished tensor goes to the sink at once and is not kept (:mod:`.writer`).

Threads (:mod:`.threads`): ``threads`` workers evaluate items side by side; with ``threads=0``
the calling thread does. Beside an item over half the budget no other item of its size fits
(keys run biggest first, so the next ones are of its size), and the other workers would idle:
such an item is granted the helper threads for its own loops (its loads, its elementwise
steps, the slice loops of whole-tensor methods).

Cancellation is checked before every item, so a cancelled merge stops within one key.
"""
from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, wait
from typing import Callable, Dict, Iterator, List, Optional

import torch

from ..errors import MergeCancelled
from ..memory import Budget
from . import items
from .evaluate import Evaluator
from .items import WorkItem
from .placement import Placement, release_device_memory
from .plan import Plan
from .threads import MergeThreads
from .writer import WriteBehind, write, write_now

# Elementwise keys are merged in slices of at most this many elements: small enough to stay
# in cache between the cast, the arithmetic and the output cast, large enough that the
# per-call overhead of torch stays negligible.
MAX_CHUNK_ELEMENTS = 1 << 20

ProgressFn = Callable[[int, int, int], None]


def work_items(plan: Plan, compute_dtype: torch.dtype, budget_bytes: int, threads: int) -> Iterator[WorkItem]:
    """The plan's keys as work items (:func:`.items.cut`), in slices of MAX_CHUNK_ELEMENTS."""
    return items.cut(plan, compute_dtype, budget_bytes, threads, MAX_CHUNK_ELEMENTS)


class CancelFlag:
    """Normalises the ways a caller can ask to stop: an Event, a callable, or nothing."""

    def __init__(self, cancel=None):
        self._cancel = cancel

    def __bool__(self) -> bool:
        c = self._cancel
        if c is None:
            return False
        if isinstance(c, threading.Event):
            return c.is_set()
        return bool(c())


def execute(plan: Plan, sink, *, placement: Placement, compute_dtype: torch.dtype, threads: int,
            budget_bytes: int, progress: Optional[ProgressFn] = None, cancel=None,
            torch_threads: Optional[int] = 1) -> int:
    """Merge every planned key into ``sink``. Returns the number of output bytes.

    ``placement``: the merge's device and the CPU fallback (:mod:`.placement`); its notes say
    which keys fell back. ``torch_threads``: torch's intra-op threads on each thread of the
    merge (0: torch's own).
    On any error or on cancellation the sink is aborted (nothing is left under the output
    name) and the error is raised: :class:`~lib_mecha.errors.MergeCancelled` for a cancel.
    """
    flag = CancelFlag(cancel)
    evaluator = Evaluator(plan, placement, compute_dtype, MAX_CHUNK_ELEMENTS,
                          sink_copies=getattr(sink, "copies", False))
    state = Progress(len(plan.keys), progress)
    try:
        with MergeThreads(threads, torch_threads) as pools:
            if threads > 0:
                _run_pool(plan, sink, evaluator, flag, state, compute_dtype, budget_bytes, pools, threads)
            else:
                _run_here(plan, sink, evaluator, flag, state, compute_dtype, budget_bytes)
    except BaseException:
        sink.abort()
        raise
    finally:
        del evaluator  # (its caches may hold device memory)
        release_device_memory(placement.device)  # what the merge used goes back to the host
    return state.bytes_done


def _run_here(plan, sink, evaluator: Evaluator, flag, state, compute_dtype, budget_bytes) -> None:
    """Every item on the calling thread, one after the other."""
    for item in work_items(plan, compute_dtype, budget_bytes, 1):
        if flag:
            raise MergeCancelled()
        write(sink, item, evaluator.run(item, memory=max(budget_bytes, item.cost)))
        state.item_done(item)


def _run_pool(plan, sink, evaluator: Evaluator, flag, state, compute_dtype, budget_bytes, pools: MergeThreads,
              threads: int) -> None:
    """Items on the merge's workers, as many at once as the budget allows."""
    budget = Budget(budget_bytes)
    failure: List[BaseException] = []
    writer = WriteBehind(sink, depth=threads, initializer=pools.initializer) if getattr(sink, "copies", False) \
        else None
    deliver = writer.deliver if writer is not None else write_now(sink)

    def job(item: WorkItem):
        try:
            if flag or failure:
                return None
            alone = 2 * item.cost > budget.capacity
            output = evaluator.run(item, pools.helpers if alone else None, threads - 1,
                                   memory=max(budget.capacity, item.cost))
            deliver(item, output)
            return item
        finally:
            budget.release(item.cost)

    pending: set = set()
    try:
        for item in work_items(plan, compute_dtype, budget_bytes, threads):
            if flag:
                break
            budget.acquire(item.cost)
            pending.add(pools.workers.submit(job, item))
            pending = _collect(pending, state, failure, block=len(pending) >= 4 * threads)
            if failure:
                break
        while pending and not failure:
            pending = _collect(pending, state, failure, block=True)
    finally:
        # every item handed over (or failed) before the writer closes and the sink commits or aborts
        for f in pending:
            f.cancel()
        wait(pending)
        write_error = writer.close() if writer is not None else None
    if failure:
        raise failure[0]
    if write_error is not None:
        raise write_error
    if flag:
        raise MergeCancelled()


def _collect(pending: set, state: "Progress", failure: List[BaseException], block: bool) -> set:
    done, rest = wait(pending, timeout=None if block else 0, return_when=FIRST_COMPLETED)
    for f in done:
        exc = f.exception()
        if exc is not None:
            failure.append(exc)
        elif f.result() is not None:
            state.item_done(f.result())
    return rest


class Progress:
    """Keys and output bytes done so far, reported to the caller's callback key by key."""

    def __init__(self, total: int, callback: Optional[ProgressFn]):
        self.total = total
        self.callback = callback
        self.keys_done = 0
        self.bytes_done = 0
        self._slices: Dict[str, int] = {}

    def item_done(self, item: WorkItem) -> None:
        kp = item.plan
        if item.start is None:
            finished = True
        else:
            got = self._slices.get(kp.key, 0) + (item.end - item.start)
            finished = got >= kp.numel
            self._slices[kp.key] = got
        self.bytes_done += item.nbytes
        if finished:
            self._slices.pop(kp.key, None)
            self.keys_done += 1
            if self.callback is not None:
                self.callback(self.keys_done, self.total, self.bytes_done)
