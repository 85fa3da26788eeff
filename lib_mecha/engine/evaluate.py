"""Evaluation of one work item: its expression computed with the plan's opened inputs.

Every sub-expression is computed once and dropped after its last consumer, so each input
tensor is read once per key whatever the recipe's shape. Everything the evaluation allocates
comes from the item's :class:`~lib_mecha.workspace.Workspace`, and methods that ask for it get
the same workspace; when the item is done the workspace is closed and its memory goes back to
the pool, except the result's, which goes back once the sink has written it (:class:`Output`).

Memory the evaluation owns may be written by the call that consumes it last, instead of a
copy being made: an accumulating method's first argument, and the result of an elementwise step
split over the granted threads (:mod:`.split`). It owns what it allocated itself (the loaded
inputs, split results), and only while no other value still needed shares that memory, since a
method may return one of its arguments or a view of it (:meth:`KeyEvaluation.shared`).
"""
from __future__ import annotations

import weakref
from concurrent.futures import Executor
from typing import Dict, List, Optional

import torch

from ..errors import MechaError
from ..memory import BufferPool, storage_of
from ..methods import resolve
from ..workspace import ThreadCaches, Workspace
from .expr import Call, Const, Expr, Read
from .inputs import Inputs
from .items import WorkItem
from .placement import DeviceOutOfMemory, Placement
from .plan import KeyPlan, Plan
from .split import split_call


class Output:
    """A finished item's tensor, and the lent memory it lives in until the sink has written it."""

    def __init__(self, tensor: torch.Tensor, buffer: Optional[torch.Tensor], pool: BufferPool, kept: bool,
                 lent_to: str):
        self.tensor = tensor
        self._buffer, self._pool, self._kept, self._lent_to = buffer, pool, kept, lent_to

    def written(self) -> None:
        """The sink has the tensor: its memory goes back to the pool, unless the sink keeps it."""
        self.tensor = None
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            if self._kept:
                self._pool.forget(buffer)
            else:
                self._pool.give(buffer, self._lent_to)

    def dropped(self) -> None:
        """The write failed: the memory is not reused (the failure may still refer to it)."""
        self.tensor = None
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            self._pool.forget(buffer)


class Evaluator:
    """Evaluates work items of one merge: its inputs, devices, dtypes, memory pool and caches.
    ``placement`` decides each item's device (:mod:`.placement`)."""

    def __init__(self, plan: Plan, placement: Placement, compute_dtype: torch.dtype, chunk: int, *,
                 sink_copies: bool = False):
        self.inputs = Inputs(plan.sources, placement.device, compute_dtype, chunk)
        self.placement = placement
        self.compute_dtype = compute_dtype
        self.chunk = chunk
        self.pool = BufferPool()
        self.caches = ThreadCaches()
        self.sink_copies = sink_copies  # the sink copies what it is given: output buffers can be reused

    def run(self, item: WorkItem, helpers: Optional[Executor] = None, helper_count: int = 0,
            memory: Optional[int] = None) -> Output:
        """Evaluates ``item`` on the device the placement gives it (its loops may also use
        ``helper_count`` threads of ``helpers``). ``memory``: the bytes the running items may use
        now (the budget, or this item's estimate when it is larger), which bounds the pool."""
        if memory is not None:
            self.pool.limit(memory)
        return self.placement.run(item, lambda device: self._run_on(device, item, helpers, helper_count))

    def _run_on(self, device: torch.device, item: WorkItem, helpers: Optional[Executor],
                helper_count: int) -> Output:
        lent_to = f"key {item.plan.key!r}"
        work = Workspace(device, self.pool, helpers, helper_count, self.caches, lent_to)
        try:
            tensor = KeyEvaluation(self, item, work).result()
        except BaseException:
            work.abandon()
            raise
        kept = item.start is None and not self.sink_copies
        buffer = work.close(keep=tensor)
        if kept and buffer is not None and buffer.numel() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()  # the sink keeps it: no larger buffer behind it
            self.pool.give(buffer, lent_to)
            buffer = None
        return Output(tensor, buffer, self.pool, kept, lent_to)

    def call(self, expr: Call, kp: KeyPlan, args: List, kwargs: Dict, work: Workspace):
        """The method of ``expr`` on its arguments, with ``work`` when it asks for a workspace."""
        spec = resolve(expr.method)
        if spec.workspace is not None:
            kwargs = {**kwargs, spec.workspace: work}
        try:
            return spec.func(*args, **kwargs)
        except (MechaError, DeviceOutOfMemory):  # (the placement merges the key again on the CPU)
            raise
        except Exception as e:  # a method failing on one key: say which method and key
            raise MechaError(f"{expr.method} failed on key {kp.key!r}: {type(e).__name__}: {e}") from e


class KeyEvaluation:
    """One work item's expression, evaluated once (see the module docstring)."""

    def __init__(self, evaluator: Evaluator, item: WorkItem, work: Workspace):
        self.evaluator, self.item, self.work = evaluator, item, work
        self.plan = item.plan
        self.remaining = dict(item.plan.uses)  # consumers still to come, per sub-expression
        self.values: Dict[Expr, object] = {}   # computed values that consumers still need
        self.arguments: List[object] = []      # arguments of the calls in progress (live too)
        # tensors in memory this evaluation allocated, by storage (weak: a storage address may
        # be reused once its tensor is gone)
        self.owned: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def result(self) -> torch.Tensor:
        """The item's tensor, in the output dtype."""
        try:
            if self.plan.copy_only:
                return self.evaluator.inputs.read(self.plan.expr, self.item)
            return self._as_output(self.value(self.plan.expr))
        finally:
            self.values.clear()
            self.arguments.clear()

    def value(self, expr: Expr):
        """The value of ``expr`` for one of its consumers: computed at the first, forgotten after
        the last."""
        if expr in self.values:
            value = self.values[expr]
        else:
            value = self.values[expr] = self._compute(expr)
        self.remaining[expr] -= 1
        if self.remaining[expr] <= 0:
            del self.values[expr]
        return value

    def shared(self, tensor: torch.Tensor, live: List[object]) -> bool:
        """Whether another value in ``live`` shares ``tensor``'s memory."""
        storage = storage_of(tensor)
        return any(isinstance(v, torch.Tensor) and storage_of(v) == storage for v in live)

    def _compute(self, expr: Expr):
        if isinstance(expr, Read):
            value = self.evaluator.inputs.load(expr, self.item, self.work)
            self.owned[storage_of(value)] = value
            return value
        if isinstance(expr, Const):
            return expr.value
        return self._call(expr)

    def _call(self, expr: Call):
        spec = resolve(expr.method)
        mark = len(self.arguments)  # self.arguments[:mark]: those of the calls enclosing this one
        try:
            if spec.accumulates:
                args = [self._hold(self._writable(expr.args[0]))] + [self._hold(self._stored(a)) for a in expr.args[1:]]
            elif spec.stored_dtype:
                args = [self._hold(self._stored(a)) for a in expr.args]
            else:
                args = [self._hold(self.value(a)) for a in expr.args]
            kwargs = {k: self._hold(self.value(v)) for k, v in expr.kwargs}
            result = None
            if spec.elementwise and self.item.start is None and self.work.threads > 1:
                result = self._split(expr, args, kwargs, mark)
            if result is None:
                result = self.evaluator.call(expr, self.plan, args, kwargs, self.work)
            if spec.stored_dtype and expr is not self.plan.expr:
                result = self._widened(result)
            return result
        finally:
            del self.arguments[mark:]

    def _hold(self, value):
        self.arguments.append(value)
        return value

    def _split(self, expr: Call, args: List, kwargs: Dict, mark: int) -> Optional[torch.Tensor]:
        """The step split over the granted threads (:mod:`.split`); None when it cannot be."""
        live = [*self.values.values(), *self.arguments[:mark]]
        donors = {storage for storage, tensor in list(self.owned.items()) if not self.shared(tensor, live)}
        result = split_call(lambda a, k, work: self.evaluator.call(expr, self.plan, a, k, work), args, kwargs,
                            resolve(expr.method).accumulates, donors, self.work, self.evaluator.chunk)
        if result is not None:
            self.owned[storage_of(result)] = result
        return result

    def _writable(self, expr: Expr):
        """The first argument of an accumulating method: a buffer the call may write into. A value
        is handed over as it is when this is its last use, the evaluation owns its memory and no
        other value still needed shares it; anything else is copied first."""
        last_use = self.remaining[expr] == 1
        value = self.value(expr)
        if not isinstance(value, torch.Tensor):
            return value
        live = [*self.values.values(), *self.arguments]
        if last_use and storage_of(value) in self.owned and not self.shared(value, live):
            return value
        return self.work.empty(value.numel(), value.dtype).view(value.shape).copy_(value)

    def _stored(self, expr: Expr):
        """An argument a method takes in its stored dtype: a Read used only here comes as a view
        of the file's pages when widening it to the compute dtype is exact."""
        if isinstance(expr, Read) and self.remaining[expr] == 1 and expr not in self.values:
            view = self.evaluator.inputs.stored(expr, self.item, self.work.device)
            if view is not None:
                self.remaining[expr] -= 1
                return view
        return self.value(expr)

    def _widened(self, value):
        """A stored-dtype method's result as the next method expects it: in the compute dtype
        (the key's result needs no widening: it is converted to the output dtype anyway)."""
        if not isinstance(value, torch.Tensor) or value.dtype == self.evaluator.compute_dtype:
            return value
        return self.work.empty(value.numel(), self.evaluator.compute_dtype).view(value.shape).copy_(value)

    def _as_output(self, result) -> torch.Tensor:
        kp, item, device = self.plan, self.item, self.work.device
        expected = item.shape
        if not isinstance(result, torch.Tensor):
            result = torch.full(expected, float(result), dtype=self.evaluator.compute_dtype, device=device)
        elif tuple(result.shape) != tuple(expected):
            if result.numel() != 1:
                raise MechaError(f"key {kp.key!r}: the merge produced shape {list(result.shape)}, "
                                 f"expected {list(expected)}")
            result = result.reshape(()).expand(expected)
        if device.type != "cpu":
            return result.to(dtype=kp.dtype)
        if item.start is not None:  # slices are copied by every sink at once: a lent buffer
            return self.work.empty(result.numel(), kp.dtype).copy_(result.reshape(-1))
        if result.dtype != kp.dtype and result.is_contiguous():
            out = self.work.empty(result.numel(), kp.dtype) if self.evaluator.sink_copies \
                else torch.empty(result.numel(), dtype=kp.dtype)
            return self.evaluator.inputs.convert_into(out, result.reshape(-1), self.work).view(result.shape)
        return result.to(dtype=kp.dtype)
