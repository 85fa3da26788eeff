"""The inputs of a work item, read from the plan's opened files.

Each input tensor is read once per item (whole, or the item's range of it) and handed to the
methods in one of two forms:

* loaded: in the compute dtype on the item's device, in memory of the item's workspace that
  the evaluation owns (a method consuming it last may write into it). The conversion copies
  anyway, so on the CPU it reads the file's pages directly (a mapped view) where it can; a
  CUDA device gets it through pinned staging buffers (:mod:`.staging`) and converts it there;
* stored: for methods that take inputs in their stored dtype (``accumulates``,
  ``stored_dtype``), a view of the file's pages with no copy at all. The view is private to
  the merge (see :mod:`lib_mecha.io.mapping`): writing into it changes nothing on disk.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch

from ..workspace import Workspace, ranges
from .expr import Read
from .items import WorkItem
from .sources import Source
from .staging import PinnedStaging


class Inputs:
    """The plan's opened inputs, read for work items in ``compute_dtype`` on the device of each
    item's workspace (the merge's ``device`` or the CPU); conversions on the CPU run range by
    range (``chunk`` elements) on the item's granted threads."""

    def __init__(self, sources: List[Source], device: torch.device, compute_dtype: torch.dtype, chunk: int):
        self.sources = sources
        self.compute_dtype = compute_dtype
        self.chunk = chunk
        self.staging = PinnedStaging(device) if device.type == "cuda" else None

    def read(self, expr: Read, item: WorkItem, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The item's part of an input in its stored dtype, on the CPU (into ``out`` when given)."""
        handle = self.sources[expr.source].file
        if item.start is None:
            return handle.read(expr.key, out)
        return handle.read_range(expr.key, item.start, item.end, out)

    def load(self, expr: Read, item: WorkItem, work: Workspace) -> torch.Tensor:
        """The item's part of an input in the compute dtype on the workspace's device, in memory
        the evaluation owns."""
        shape = item.read_shape(expr)
        if work.device.type == "cuda" and self.staging is not None:
            offset, handle = item.start or 0, self.sources[expr.source].file
            raw = self.staging.load(
                lambda start, end, out: handle.read_range(expr.key, offset + start, offset + end, out),
                math.prod(shape), expr.dtype)
            return raw.to(self.compute_dtype).view(shape)  # (a new tensor unless already the compute dtype)
        source = self._mapped(expr, item)
        if work.device.type != "cpu":
            source = self.read(expr, item) if source is None else source
            return source.to(device=work.device, dtype=self.compute_dtype, copy=True).view(shape)
        if source is None:
            source = self.read(expr, item, work.empty(math.prod(shape), expr.dtype))
            if source.dtype == self.compute_dtype:
                return source.view(shape)  # read into the workspace: already the evaluation's own
        flat = source.reshape(-1)
        return self.convert_into(work.empty(flat.numel(), self.compute_dtype), flat, work).view(shape)

    def stored(self, expr: Read, item: WorkItem, device: torch.device) -> Optional[torch.Tensor]:
        """The item's part of an input as a view of the file's pages in its stored dtype, when
        widening that dtype to the compute dtype is exact (None otherwise, or where files cannot
        be mapped). ``device``: the item's."""
        if device.type != "cpu":  # views of file pages exist on the CPU only
            return None
        if not self._widens_exactly(expr.dtype):
            return None
        view = self._mapped(expr, item)
        return None if view is None else view.view(item.read_shape(expr))

    def convert_into(self, out: torch.Tensor, flat: torch.Tensor, work: Workspace) -> torch.Tensor:
        """Copies the 1-D tensor ``flat`` into ``out`` (converting its dtype), range by range on
        the granted threads."""
        work.for_each_range(ranges(flat.numel(), self.chunk),
                            lambda start, end, _: out[start:end].copy_(flat[start:end]))
        return out

    def _widens_exactly(self, dtype: torch.dtype) -> bool:
        return dtype == self.compute_dtype or (
            dtype in (torch.float16, torch.bfloat16) and self.compute_dtype in (torch.float32, torch.float64))

    def _mapped(self, expr: Read, item: WorkItem) -> Optional[torch.Tensor]:
        handle = self.sources[expr.source].file
        if item.start is None:
            return handle.view_range(expr.key)
        return handle.view_range(expr.key, item.start, item.end)
