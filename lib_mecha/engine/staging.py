"""Inputs read for a CUDA device through page-locked ("pinned") staging buffers.

A copy from ordinary memory to a GPU is synchronous and goes through the driver's own bounce
buffer. Here each input is read from its file straight into one of two pinned buffers of the
reading thread, a few megabytes at a time, and copied to the device asynchronously from there:
the file read of one piece overlaps the transfer of the previous one, and no copy of the whole
tensor is made in CPU memory. The pinned memory is bounded (two buffers per merge thread) and
given back when the merge ends.
"""
from __future__ import annotations

import threading
from typing import Callable, List

import torch

# Bytes of one staging buffer: large enough that a transfer's fixed cost is negligible.
STAGE_BYTES = 8 << 20

# read(start, end, out): elements [start, end) of the input, read into ``out`` (a uint8 buffer),
# returned as a 1-D tensor of the input's dtype (a view of ``out``)
ReadInto = Callable[[int, int, torch.Tensor], torch.Tensor]


class _Stage:
    def __init__(self):
        self.buffer = torch.empty(STAGE_BYTES, dtype=torch.uint8, pin_memory=True)
        self.copied = torch.cuda.Event()  # recorded after the transfer out of the buffer

    def wait(self) -> None:
        self.copied.synchronize()  # (returns at once when never recorded)


class PinnedStaging:
    """Reads inputs onto one CUDA ``device`` through each thread's two pinned buffers."""

    def __init__(self, device: torch.device):
        self.device = device
        self._local = threading.local()

    def load(self, read: ReadInto, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """A new 1-D tensor on the device holding the ``numel`` elements ``read`` gives."""
        out = torch.empty(numel, dtype=dtype, device=self.device)
        step = max(STAGE_BYTES // dtype.itemsize, 1)
        stream = torch.cuda.current_stream(self.device)
        for start in range(0, numel, step):
            end = min(start + step, numel)
            stage = self._next_stage()
            stage.wait()  # its previous transfer is done: it may be written again
            out[start:end].copy_(read(start, end, stage.buffer), non_blocking=True)
            stage.copied.record(stream)
        return out

    def _next_stage(self) -> _Stage:
        """This thread's buffers in turn (across inputs too: the small inputs of a slice each
        fit one buffer, and the next one's read overlaps their transfer)."""
        stages: List[_Stage] = getattr(self._local, "stages", None)
        if stages is None:
            stages = self._local.stages = [_Stage(), _Stage()]
        stages.reverse()
        return stages[0]
