"""Execution: evaluate every planned key on a bounded pool and hand each result to a sink.

Memory is bounded by the tensors in flight, never by model size or count:

* each work item is one key, or one slice of a large elementwise key;
* before an item starts, its estimated working set is taken from a byte budget, and given
  back when its result has been handed to the sink (a single item larger than the whole
  budget runs alone);
* inside an item every sub-expression is computed once and dropped after its last consumer,
  so each input tensor is read once per key whatever the recipe's shape;
* a finished tensor goes to the sink at once and is not kept;
* a key whose working set exceeds the budget runs alone; it, and a key over half the budget
  (beside which no key of its size fits), is granted the idle threads
  (:mod:`lib_mecha.workers`): its loads, its elementwise steps and the slice loops of
  whole-tensor methods spread over them; key-sized memory passes from one key to the next
  (:class:`KeyBuffers`).

Cancellation is checked before every item, so a cancelled merge stops within one key.
"""
from __future__ import annotations

import contextlib
import gc
import math
import threading
import weakref
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional

import torch

from .. import workers
from ..errors import MechaError, MergeCancelled
from ..methods import resolve
from .expr import Call, Const, Expr, Read, calls, reads
from .plan import KeyPlan, Plan

MIB = 1 << 20
# Elementwise keys are merged in slices of at most this many elements: small enough to stay
# in cache between the cast, the arithmetic and the output cast, large enough that the
# per-call overhead of torch stays negligible.
MAX_CHUNK_ELEMENTS = 1 << 20

ProgressFn = Callable[[int, int, int], None]


@dataclass(frozen=True)
class WorkItem:
    plan: KeyPlan
    start: Optional[int]  # None: the whole key
    end: Optional[int]
    cost: int             # estimated bytes in flight while it runs

    @property
    def is_last_slice(self) -> bool:
        return self.end is None or self.end == self.plan.numel


class Budget:
    """A byte semaphore: items wait until their estimated working set fits."""

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


def bytes_per_element(kp: KeyPlan, compute_dtype: torch.dtype) -> int:
    """Rough working set per output element: raw and cast copy of each input, each
    intermediate result and the temporaries its method declares, and the output."""
    compute = compute_dtype.itemsize
    total = kp.dtype.itemsize
    for r in reads(kp.expr):
        total += r.dtype.itemsize + (compute if not kp.copy_only else 0)
    total += sum(math.ceil(compute * (1 + resolve(c.method).temporaries)) for c in calls(kp.expr))
    return max(total, 1)


def work_items(plan: Plan, compute_dtype: torch.dtype, budget_bytes: int, threads: int) -> Iterator[WorkItem]:
    per_item = max(budget_bytes // max(threads, 1), MIB)
    # biggest first: keys of one size follow each other (KeyBuffers), and the keys that run
    # alone do not wait for a tail of small ones to drain
    for kp in sorted(plan.keys, key=lambda k: -k.numel):
        per_elem = bytes_per_element(kp, compute_dtype)
        whole = per_elem * max(kp.numel, 1)
        if not kp.chunkable or kp.numel <= MAX_CHUNK_ELEMENTS and whole <= per_item:
            yield WorkItem(kp, None, None, whole)
            continue
        step = max(min(MAX_CHUNK_ELEMENTS, per_item // per_elem), 4096)
        for start in range(0, kp.numel, step):
            end = min(start + step, kp.numel)
            yield WorkItem(kp, start, end, per_elem * (end - start))


class ScratchPool:
    """Each thread's :class:`~lib_mecha.workers.Scratch`, kept for the slices of big keys.

    Every slice of a big key would otherwise allocate fresh buffers for the raw read, its
    cast to the compute dtype and the cast back to the output dtype; the allocator hands
    such buffers back to the system and every new one faults its pages in again (measured:
    2.3 M page faults and 6.5 s of kernel time for one SD1.5 weighted sum). Reusing them
    keeps a thread's working set warm. Buffers are only for tensors of at most
    ``MAX_CHUNK_ELEMENTS`` elements on the CPU.
    """

    def __init__(self):
        self._local = threading.local()

    def _scratch(self) -> workers.Scratch:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = workers.Scratch(torch.empty(0), minimum=MAX_CHUNK_ELEMENTS)
        return scratch

    def get(self, tag, numel: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
        if numel > MAX_CHUNK_ELEMENTS:
            return None
        return self._scratch().get(tag, numel, dtype)

    def owns(self, tensor: torch.Tensor) -> bool:
        return self._scratch().owns(tensor)


class KeyBuffers:
    """Key-sized CPU memory lent to whole keys: given back when the key has been evaluated, and
    the output's own when it has been written.

    Every fresh key-sized tensor faults its pages in (zeroed by the kernel): with whole-tensor
    methods that was most of a merge's system time (measured: 2 M page faults and 12.9 s of
    65 s of CPU for TIES of four SD1.5 models, 5.3 M faults and 30 s of 172 s with DELLA).
    Buffers are kept as bytes and lent as a view of any dtype, for any size from half the
    buffer's up (the smallest free one that fits). Keys run biggest first, so after the first
    keys nearly every request is met from here. Buffers below ``MIN_POOLED`` bytes are plain
    allocations: the allocator reuses those itself.

    What is lent and what waits here stay within :meth:`limit` together (the engine sets it
    to the memory the running keys may use): waiting buffers beyond it are let go, the largest
    first, so the pool never adds to the merge's peak.
    """

    MIN_POOLED = 1 << 20

    def __init__(self):
        self._free: List[torch.Tensor] = []   # byte buffers, smallest first (see _trim)
        self._lent: Dict[int, torch.Tensor] = {}  # storage -> its byte buffer
        self._lent_bytes = 0
        self._limit: Optional[int] = None
        self._lock = threading.Lock()

    def limit(self, total: int) -> None:
        """From now on, at most ``total`` bytes lent and waiting together (lending goes on past
        it, with nothing waiting)."""
        with self._lock:
            self._limit = total
            self._trim(0)

    def take(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        size = numel * dtype.itemsize
        if size < self.MIN_POOLED:
            return torch.empty(numel, dtype=dtype)
        with self._lock:
            raw = workers.take_smallest(self._free, size, largest=2 * size)
            if raw is None:
                self._trim(size)
                raw = torch.empty(size, dtype=torch.uint8)
            self._lent[_storage(raw)] = raw
            self._lent_bytes += raw.numel()
        return raw[:size].view(dtype)

    def fitted(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor``, copied when it is a view of a larger lent buffer (it is to be kept)."""
        with self._lock:
            raw = self._lent.get(_storage(tensor))
        if raw is None or raw.numel() == tensor.numel() * tensor.element_size():
            return tensor
        return tensor.clone()

    def give(self, buffers, kept: Optional[int] = None) -> None:
        """Takes back lent buffers (others are ignored); the one whose storage is ``kept`` now
        belongs to whoever kept it, and is only forgotten."""
        with self._lock:
            for buffer in buffers:
                raw = self._lent.pop(_storage(buffer), None)
                if raw is None:
                    continue
                self._lent_bytes -= raw.numel()
                if _storage(raw) != kept:
                    self._free.append(raw)
            self._free.sort(key=torch.Tensor.numel)
            self._trim(0)

    def _trim(self, more: int) -> None:
        """Lets go of waiting buffers, largest first, until ``more`` bytes fit within the limit."""
        if self._limit is None:
            return
        waiting = sum(b.numel() for b in self._free)
        while self._free and self._lent_bytes + waiting + more > self._limit:
            waiting -= self._free.pop().numel()


class Evaluator:
    """Evaluates one work item's expression with the plan's opened inputs."""

    def __init__(self, plan: Plan, device: torch.device, compute_dtype: torch.dtype, *, sink_copies: bool = False):
        self.sources = plan.sources
        self.device = device
        self.compute_dtype = compute_dtype
        self.scratch = ScratchPool() if device.type == "cpu" else None
        self.buffers = KeyBuffers() if device.type == "cpu" else None
        self.sink_copies = sink_copies  # the sink copies what it is given: output buffers can be reused

    def run(self, item: WorkItem, deliver: "Deliver", memory: Optional[int] = None) -> None:
        """Evaluate ``item`` and hand its tensor to ``deliver(item, tensor, finished)``, which calls
        ``finished()`` once the tensor is written; key-sized buffers lent to this item then go
        back to :class:`KeyBuffers`, unless the sink keeps the tensor. ``memory``: the bytes the
        running items may use now (the budget, or this item's estimate when it is larger)."""
        if memory is not None and self.buffers is not None:
            self.buffers.limit(memory)
        lent: List[torch.Tensor] = []
        handed_over = False
        try:
            result = self._evaluate(item, lent)
            if not self.sink_copies and self.buffers is not None:
                result = self.buffers.fitted(result)  # the sink keeps it: no larger buffer behind it
            # everything but the result's memory goes back now: the next key may use it while
            # this one is written
            output = _storage(result)
            self._give_back([b for b in lent if _storage(b) != output], None)
            lent = [b for b in lent if _storage(b) == output]
            kept = None if self.sink_copies else output
            handed_over = True
            deliver(item, result, lambda: self._give_back(lent, kept))
        finally:
            if not handed_over:
                self._give_back(lent, None)

    def _give_back(self, lent: List[torch.Tensor], kept: Optional[int]) -> None:
        if lent and self.buffers is not None:
            self.buffers.give(lent, kept)

    def _take(self, lent: Optional[List[torch.Tensor]], numel: int, dtype: torch.dtype) -> torch.Tensor:
        if lent is None or self.buffers is None:
            return torch.empty(numel, dtype=dtype, device=self.device)
        buffer = self.buffers.take(numel, dtype)
        lent.append(buffer)
        return buffer

    def _evaluate(self, item: WorkItem, lent: List[torch.Tensor]) -> torch.Tensor:
        kp = item.plan
        if kp.copy_only:
            return self._read(kp.expr, item)
        remaining = dict(kp.uses)
        values: Dict[Expr, object] = {}
        slots: Dict[Expr, int] = {}
        # whole-key tensors this evaluation allocated itself, by storage: an elementwise step may
        # write its result into one of them once nothing else needs it (see _split_call)
        owned: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        held: List[object] = []

        def hold(value):
            held.append(value)
            return value

        def get(expr: Expr):
            if expr in values:
                value = values[expr]
            else:
                value = compute(expr)
                values[expr] = value
            remaining[expr] -= 1
            if remaining[expr] <= 0:
                del values[expr]
            return value

        def compute(expr: Expr):
            if isinstance(expr, Read):
                value = self._load(expr, item, slots.setdefault(expr, len(slots)), lent)
                if item.start is None:
                    owned[_storage(value)] = value
                return value
            if isinstance(expr, Const):
                return expr.value
            mark = len(held)  # held[:mark]: arguments already fetched by the calls enclosing this one
            spec = resolve(expr.method)
            if spec.accumulates:
                args = [hold(own(expr.args[0]))] + [hold(stored(a)) for a in expr.args[1:]]
            elif spec.stored_dtype:
                args = [hold(stored(a)) for a in expr.args]
            else:
                args = [hold(get(a)) for a in expr.args]
            kwargs = {k: hold(get(v)) for k, v in expr.kwargs}
            try:
                result = None
                if spec.elementwise and item.start is None and workers.thread_count() > 1:
                    live = {_storage(v) for v in (*values.values(), *held[:mark]) if isinstance(v, torch.Tensor)}
                    result = self._split_call(expr, kp, args, kwargs, set(owned.keys()) - live)
                    if result is not None:
                        owned[_storage(result)] = result
                if result is None:
                    result = self._call(expr, kp, args, kwargs)
                if spec.stored_dtype and expr is not kp.expr:
                    result = widened(result)
                return result
            finally:
                del held[mark:]

        def widened(value):
            """A stored-dtype method's result as the next method expects it: in the compute dtype
            (the key's result needs no widening: it is converted to the output dtype anyway)."""
            if not isinstance(value, torch.Tensor) or value.dtype == self.compute_dtype:
                return value
            out = self._take(lent, value.numel(), self.compute_dtype).view(value.shape)
            return out.copy_(value)

        def live_storages():
            return {_storage(v) for v in (*values.values(), *held) if isinstance(v, torch.Tensor)}

        def own(expr: Expr):
            """The first argument of an accumulating method: a buffer the call may write into.

            A value is handed over as it is when this is its last use, it is a buffer of this
            evaluation's own (an input's load, or a whole-key result it allocated) and no other
            value still needed shares it; anything else is copied first."""
            last_use = remaining[expr] == 1
            value = get(expr)
            if not isinstance(value, torch.Tensor):
                return value
            storage = _storage(value)
            if last_use and (isinstance(expr, Read) or storage in owned) and storage not in live_storages():
                return value
            return self._take(lent, value.numel(), value.dtype).view(value.shape).copy_(value)

        def stored(expr: Expr):
            """Another argument of an accumulating method, or any argument of a stored-dtype one: a
            Read used only here comes as a view of the file's pages in its stored dtype when
            widening it to the compute dtype is exact."""
            if isinstance(expr, Read) and remaining[expr] == 1 and expr not in values \
                    and self._widens_exactly(expr.dtype):
                view = self._view(expr, item)
                if view is not None:
                    remaining[expr] -= 1
                    return view.view(_read_shape(expr, item))
            return get(expr)

        try:
            if self.buffers is None:
                return self._as_output(get(kp.expr), item, lent)
            with workers.lending(lambda numel, dtype: self._take(lent, numel, dtype)):
                return self._as_output(get(kp.expr), item, lent)
        finally:
            # get and compute refer to each other: break the cycle now, or everything they can
            # reach (the key's buffers among it) waits for the garbage collector
            get = compute = own = stored = live_storages = None  # noqa: F841

    def _widens_exactly(self, dtype: torch.dtype) -> bool:
        if self.scratch is None:  # views of file pages exist on the CPU only
            return False
        return dtype == self.compute_dtype or (
            dtype in (torch.float16, torch.bfloat16) and self.compute_dtype in (torch.float32, torch.float64))

    def _load(self, expr: Read, item: WorkItem, slot: int, lent: List[torch.Tensor]) -> torch.Tensor:
        """An input in the compute dtype on the merge device, in memory the method may write to."""
        shape = _read_shape(expr, item)
        n = math.prod(shape)
        # the conversion below copies anyway, so it reads the file's pages directly when it can
        source = self._view(expr, item)
        if self.scratch is None:
            source = self._read(expr, item) if source is None else source
            return source.to(device=self.device, dtype=self.compute_dtype, copy=True).view(shape)
        mapped = source is not None
        if not mapped:
            source = self._read(expr, item, self.scratch.get(("raw", slot), n, expr.dtype))
        cast = self.scratch.get(("cast", slot), n, self.compute_dtype)
        if cast is not None:
            return cast.copy_(source.reshape(-1)).view(shape)
        # a whole key too big for the scratch buffers: a fresh read of the right dtype is used as is
        if not mapped and source.dtype == self.compute_dtype and not self.scratch.owns(source):
            return source.view(shape)
        flat = source.reshape(-1)
        return _convert_into(self._take(lent, flat.numel(), self.compute_dtype), flat).view(shape)

    def _view(self, expr: Read, item: WorkItem) -> Optional[torch.Tensor]:
        handle = self.sources[expr.source].file
        if item.start is None:
            return handle.view_range(expr.key)
        return handle.view_range(expr.key, item.start, item.end)

    def _read(self, expr: Read, item: WorkItem, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        handle = self.sources[expr.source].file
        if item.start is None:
            return handle.read(expr.key, out)
        return handle.read_range(expr.key, item.start, item.end, out)

    def _call(self, expr: Call, kp: KeyPlan, args: List, kwargs: Dict):
        spec = resolve(expr.method)
        try:
            return spec.func(*args, **kwargs)
        except MechaError:
            raise
        except Exception as e:  # a method failing on one key: say which method and key
            raise MechaError(f"{expr.method} failed on key {kp.key!r}: {type(e).__name__}: {e}") from e

    def _split_call(self, expr: Call, kp: KeyPlan, args: List, kwargs: Dict, donors: set):
        """An elementwise step of a whole key, computed range by range on the granted threads
        (None when its arguments cannot be cut into ranges: the caller then runs it whole).

        The result goes into an argument's buffer when that argument is a tensor this
        evaluation allocated and nothing else still needs (``donors``): each range is read
        before it is written, so no key-sized buffer is allocated (each fresh one faults its
        pages in: about as long as the arithmetic itself)."""
        values = [*args, *kwargs.values()]
        tensors = [v for v in values if isinstance(v, torch.Tensor) and v.numel() != 1]
        if not tensors or any(isinstance(v, torch.Tensor) and v.numel() == 1 and v.dim() > 0 for v in values):
            return None  # (a one-element tensor with dimensions would broadcast the ranges' shape)
        shape, n = tensors[0].shape, tensors[0].numel()
        if n <= MAX_CHUNK_ELEMENTS or any(
                t.shape != shape or not t.is_contiguous() or t.device != self.device for t in tensors):
            return None

        def cut(value, start, end):
            if isinstance(value, torch.Tensor) and value.numel() != 1:
                return value.reshape(-1)[start:end]
            return value

        def call_range(start, end):
            return self._call(expr, kp, [cut(a, start, end) for a in args],
                              {k: cut(v, start, end) for k, v in kwargs.items()})

        spans = workers.ranges(n, MAX_CHUNK_ELEMENTS)
        if resolve(expr.method).accumulates:
            if not isinstance(args[0], torch.Tensor) or args[0].shape != shape or not args[0].is_contiguous():
                return None
            out = args[0].reshape(-1)  # the call's own buffer (see own() in _evaluate)

            def accumulate(start, end, _):
                part = call_range(start, end).reshape(-1)
                if part.data_ptr() != out[start:end].data_ptr():
                    out[start:end].copy_(part)

            workers.for_each_range(spans, accumulate)
            return out.view(shape)
        first_start, first_end = spans[0]
        first = call_range(first_start, first_end)
        if not isinstance(first, torch.Tensor) or first.numel() != first_end - first_start:
            return None  # not a plain elementwise result: let the method see the whole tensors
        if any(_storage(first) == _storage(t) for t in tensors):
            return None  # the method hands back one of its inputs (fallback, alpha 0...): free when whole
        donor = next((t for t in tensors if _storage(t) in donors and t.dtype == first.dtype), None)
        out = donor.reshape(-1) if donor is not None else workers.empty(n, first.dtype, self.device)
        out[first_start:first_end].copy_(first.reshape(-1))

        def body(start, end, _):
            out[start:end].copy_(call_range(start, end).reshape(-1))

        workers.for_each_range(spans[1:], body)
        return out.view(shape)

    def _as_output(self, result, item: WorkItem, lent: List[torch.Tensor]) -> torch.Tensor:
        kp = item.plan
        expected = (item.end - item.start,) if item.start is not None else kp.shape
        if not isinstance(result, torch.Tensor):
            result = torch.full(expected, float(result), dtype=self.compute_dtype, device=self.device)
        elif tuple(result.shape) != tuple(expected):
            if result.numel() == 1:
                result = result.reshape(()).expand(expected)
            else:
                raise MechaError(f"key {kp.key!r}: the merge produced shape {list(result.shape)}, "
                                 f"expected {list(expected)}")
        if self.scratch is not None and item.start is not None:
            # slices are copied by every sink at once, so the output cast can reuse a buffer
            out = self.scratch.get("out", result.numel(), kp.dtype)
            if out is not None:
                return out.copy_(result.reshape(-1))
        if self.scratch is not None and self.scratch.owns(result):
            return result.to(dtype=kp.dtype, copy=True)  # whole keys may be kept by the sink
        if result.dtype != kp.dtype and result.device.type == "cpu" and result.is_contiguous():
            out = self._take(lent if self.sink_copies else None, result.numel(), kp.dtype)
            return _convert_into(out, result.reshape(-1)).view(result.shape)
        return result.to(dtype=kp.dtype)


def _read_shape(expr: Read, item: WorkItem) -> tuple:
    # a slice reads the same range of every input; a whole key reads each input whole
    # (inputs of another shape, such as a LoRA's factors, are read whole too)
    return (item.end - item.start,) if item.start is not None else tuple(expr.shape)


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _convert_into(out: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """Copies the 1-D tensor ``flat`` into ``out`` (converting its dtype), range by range on the
    granted threads."""
    workers.for_each_range(workers.ranges(flat.numel(), MAX_CHUNK_ELEMENTS),
                           lambda start, end, _: out[start:end].copy_(flat[start:end]))
    return out


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


def execute(plan: Plan, sink, *, device: torch.device, compute_dtype: torch.dtype, threads: int,
            budget_bytes: int, progress: Optional[ProgressFn] = None, cancel=None,
            torch_threads: Optional[int] = 1) -> int:
    """Merge every planned key into ``sink``. Returns the number of output bytes.

    On any error or on cancellation the sink is aborted (nothing is left under the output
    name) and the error is raised: :class:`~lib_mecha.errors.MergeCancelled` for a cancel.
    """
    flag = CancelFlag(cancel)
    evaluator = Evaluator(plan, device, compute_dtype, sink_copies=getattr(sink, "copies", False))
    total = len(plan.keys)
    state = _Progress(total, progress)
    try:
        with intra_op_threads(torch_threads), collector_paused():
            _run(plan, sink, evaluator, flag, state, compute_dtype, threads, budget_bytes)
    except BaseException:
        sink.abort()
        raise
    finally:
        workers.merge_ended()
    return state.bytes_done


_collector_lock = threading.Lock()
_collector = {"pauses": 0, "was_enabled": True}  # merges may overlap in a host


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector paused while merges run, as it was when the last ends.

    A merge makes millions of short-lived Python objects (a tensor per slice and step), and
    every few hundred of them start a collection that walks the young objects (measured: 3 % of
    the CPU of an n_average of 8). The engine breaks its own reference cycles (see
    ``Evaluator._evaluate``), so nothing of a merge waits for the collector.
    """
    with _collector_lock:
        if _collector["pauses"] == 0:
            _collector["was_enabled"] = gc.isenabled()
            gc.disable()
        _collector["pauses"] += 1
    try:
        yield
    finally:
        with _collector_lock:
            _collector["pauses"] -= 1
            if _collector["pauses"] == 0 and _collector["was_enabled"]:
                gc.enable()


@contextlib.contextmanager
def intra_op_threads(count: Optional[int]):
    """torch's intra-op thread count for the duration of a merge, restored afterwards.

    Our own pool already runs keys in parallel; torch's OpenMP threads on top of it only
    fight for the same cores, and on a busy machine every parallel region then waits for a
    descheduled peer (measured: 14 ns instead of 1.1 ns per element for a cast under load).
    """
    if not count:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run(plan, sink, evaluator, flag, state, compute_dtype, threads, budget_bytes) -> None:
    if threads > 0:
        _run_pool(plan, sink, evaluator, flag, state, compute_dtype, threads, budget_bytes)
        return
    for item in work_items(plan, compute_dtype, budget_bytes, 1):
        if flag:
            raise MergeCancelled()
        evaluator.run(item, _deliver_now(sink), memory=max(budget_bytes, item.cost))
        state.item_done(item)


Deliver = Callable[[WorkItem, torch.Tensor, Callable[[], None]], None]


def _deliver(sink, item: WorkItem, tensor: torch.Tensor) -> None:
    if item.start is None:
        sink.write(item.plan.key, tensor)
    else:
        sink.write_range(item.plan.key, item.start, tensor)


def _deliver_now(sink) -> Deliver:
    def deliver(item: WorkItem, tensor: torch.Tensor, finished: Callable[[], None]) -> None:
        _deliver(sink, item, tensor)
        finished()
    return deliver


class WriteBehind:
    """Writes whole keys to a sink that copies them (a file) on a thread of its own, so the
    workers go on merging while a key is written: a whole key running alone otherwise left
    every thread but its own idle while it was written (measured: 7.6 s of a DARE merge of four
    SD1.5 models went into writing). At most ``depth`` keys wait to be written, besides the
    budget. Slices are written at once: they live in their thread's reused buffers."""

    def __init__(self, sink, depth: int):
        self._sink = sink
        self._slots = threading.Semaphore(depth)
        self._errors: List[BaseException] = []
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mecha-write")

    def deliver(self, item: WorkItem, tensor: torch.Tensor, finished: Callable[[], None]) -> None:
        if self._errors:
            raise self._errors[0]
        if item.start is not None:
            _deliver(self._sink, item, tensor)
            finished()
            return
        self._slots.acquire()

        def write() -> None:
            try:
                _deliver(self._sink, item, tensor)
            except BaseException as e:  # raised by the next hand-over and by close()
                self._errors.append(e)
            finally:
                finished()
                self._slots.release()

        self._thread.submit(write)

    def close(self) -> Optional[BaseException]:
        """Waits for every write; returns the first write error, if any."""
        self._thread.shutdown(wait=True)
        return self._errors[0] if self._errors else None


def _run_pool(plan, sink, evaluator, flag, state, compute_dtype, threads, budget_bytes) -> None:
    budget = Budget(budget_bytes)
    failure: List[BaseException] = []
    # An item larger than the whole budget runs alone (Budget.acquire), and beside one larger than
    # half of it no item of its size fits (keys run biggest first, so the next ones are of its
    # size): the other threads would idle, so it is granted them for its own loops
    # (lib_mecha.workers). Measured, DARE of four SD1.5 models: 5.8 s of keys running one at a
    # time on one core before this took in the items over half the budget.
    helpers = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="mecha-help") if threads > 1 else None

    writer = WriteBehind(sink, depth=threads) if getattr(sink, "copies", False) else None
    deliver = writer.deliver if writer is not None else _deliver_now(sink)

    def job(item: WorkItem):
        try:
            if flag or failure:
                return None
            alone = 2 * item.cost > budget.capacity
            with workers.granted(helpers if alone else None, threads - 1):
                evaluator.run(item, deliver, memory=max(budget.capacity, item.cost))
            return item
        finally:
            budget.release(item.cost)

    pending: set = set()
    try:
        with contextlib.ExitStack() as stack, \
                ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mecha-merge") as pool:
            if helpers is not None:
                stack.enter_context(helpers)
            try:
                for item in work_items(plan, compute_dtype, budget_bytes, threads):
                    if flag:
                        break
                    budget.acquire(item.cost)
                    pending.add(pool.submit(job, item))
                    pending = _collect(pending, state, failure, block=len(pending) >= 4 * threads)
                    if failure:
                        break
                while pending:
                    pending = _collect(pending, state, failure, block=True)
            except BaseException as e:
                failure.append(e)
                for f in pending:
                    f.cancel()
                raise
    finally:
        # every key handed over is written (or has failed) before the sink commits or aborts
        write_error = writer.close() if writer is not None else None
    if failure:
        raise failure[0]
    if write_error is not None:
        raise write_error
    if flag:
        raise MergeCancelled()


def _collect(pending: set, state, failure: List[BaseException], block: bool) -> set:
    done, rest = wait(pending, timeout=None if block else 0, return_when=FIRST_COMPLETED)
    for f in done:
        exc = f.exception()
        if exc is not None:
            failure.append(exc)
        elif f.result() is not None:
            state.item_done(f.result())
    return rest


class _Progress:
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
        self.bytes_done += (item.end - item.start) * kp.dtype.itemsize if item.start is not None else kp.nbytes
        if finished:
            self._slices.pop(kp.key, None)
            self.keys_done += 1
            if self.callback is not None:
                self.callback(self.keys_done, self.total, self.bytes_done)

