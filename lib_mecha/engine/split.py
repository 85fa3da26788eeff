"""An elementwise step of a whole key, computed range by range on the threads granted to the key.

A key too big to run beside another is granted the idle threads (see :mod:`.execute`); its
whole-tensor methods spread their own loops over them, and its elementwise steps are cut into
ranges here. Each range is a call of the method on the same range of every argument, with a
workspace of its own that is closed once the range's result has been copied out.

The result goes into an argument's buffer when that argument is memory the evaluation owns and
nothing else still needs (a donor): each range is read before it is written, so no key-sized
buffer is allocated for the result.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..memory import storage_of
from ..workspace import Workspace, ranges

# call(args, kwargs, work): the method on one range of its arguments
RangeCall = Callable[[List, Dict, Workspace], object]


def _cut(value, start: int, end: int):
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        return value.reshape(-1)[start:end]
    return value


def _splittable(values: Sequence, device: torch.device, chunk: int) -> Optional[List[torch.Tensor]]:
    """The tensor arguments to cut, or None when they cannot be cut into ranges."""
    tensors = [v for v in values if isinstance(v, torch.Tensor) and v.numel() != 1]
    if not tensors or any(isinstance(v, torch.Tensor) and v.numel() == 1 and v.dim() > 0 for v in values):
        return None  # (a one-element tensor with dimensions would broadcast the ranges' shape)
    shape, n = tensors[0].shape, tensors[0].numel()
    if n <= chunk or any(t.shape != shape or not t.is_contiguous() or t.device != device for t in tensors):
        return None
    return tensors


class RangeCalls:
    """The method of one step called on ranges of its arguments, each range with a workspace of
    its own (from the key's pool, without the granted threads)."""

    def __init__(self, call: RangeCall, args: List, kwargs: Dict, work: Workspace):
        self.call, self.args, self.kwargs, self.work = call, args, kwargs, work

    def into(self, out: torch.Tensor, start: int, end: int) -> None:
        """The range's result written into ``out[start:end]`` (unless it already is there)."""
        work = self.work.alone(self.work.lent_to)
        try:
            part = self._call(start, end, work).reshape(-1)
            if part.data_ptr() != out[start:end].data_ptr():
                out[start:end].copy_(part)
            del part
        except BaseException:
            work.abandon()
            raise
        work.close()

    def first(self, start: int, end: int, tensors: List[torch.Tensor]):
        """The first range's result and its workspace (the caller closes it), or None when the
        method does not give a plain elementwise result there."""
        work = self.work.alone(self.work.lent_to)
        try:
            result = self._call(start, end, work)
        except BaseException:
            work.abandon()
            raise
        if not isinstance(result, torch.Tensor) or result.numel() != end - start \
                or any(storage_of(result) == storage_of(t) for t in tensors):
            # not a plain elementwise result, or one of its inputs handed back (a fallback,
            # alpha 0...): free when the method runs whole
            del result
            work.close()
            return None
        return result, work

    def _call(self, start: int, end: int, work: Workspace):
        return self.call([_cut(a, start, end) for a in self.args],
                         {k: _cut(v, start, end) for k, v in self.kwargs.items()}, work)


def split_call(call: RangeCall, args: List, kwargs: Dict, accumulates: bool, donors: set, work: Workspace,
               chunk: int) -> Optional[torch.Tensor]:
    """The step's result computed range by range on the granted threads, or None when its
    arguments cannot be cut into ranges (the caller then runs it whole). ``donors``: storages of
    arguments the evaluation owns and nothing else needs; an accumulating method's first
    argument is its own buffer already."""
    tensors = _splittable([*args, *kwargs.values()], work.device, chunk)
    if tensors is None:
        return None
    shape, n = tensors[0].shape, tensors[0].numel()
    spans = ranges(n, chunk)
    calls = RangeCalls(call, args, kwargs, work)
    if accumulates:
        if not isinstance(args[0], torch.Tensor) or args[0].shape != shape or not args[0].is_contiguous():
            return None
        out = args[0].reshape(-1)
        work.for_each_range(spans, lambda start, end, _: calls.into(out, start, end))
        return out.view(shape)
    first = calls.first(*spans[0], tensors)
    if first is None:
        return None
    result, first_work = first
    donor = next((t for t in tensors if storage_of(t) in donors and t.dtype == result.dtype), None)
    out = donor.reshape(-1) if donor is not None else work.empty(n, result.dtype)
    out[:spans[0][1]].copy_(result.reshape(-1))
    del result, first
    first_work.close()
    work.for_each_range(spans[1:], lambda start, end, _: calls.into(out, start, end))
    return out.view(shape)
