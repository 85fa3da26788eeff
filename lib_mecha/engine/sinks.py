"""Where finished tensors go: a safetensors file, or an in-memory state dict.

Both sinks take whole keys (``write``) or slices of the flattened key (``write_range``, for
keys merged chunk by chunk), are safe to call from several worker threads, and end with
``commit()`` or ``abort()``. Nothing is visible under the output name before ``commit()``.
"""
from __future__ import annotations

import threading
from typing import Dict, Mapping, Optional, Sequence

import torch

from ..io import SafetensorsWriter
from .plan import KeyPlan


class FileSink:
    """Writes each tensor at its offset in a file whose header was computed from the plan."""

    copies = True  # the tensors it is given are written out at once and not kept

    def __init__(self, path, keys: Sequence[KeyPlan], metadata: Mapping[str, str], overwrite: bool = False):
        entries = [(k.key, k.dtype, k.shape) for k in keys]
        self.path = path
        self._writer = SafetensorsWriter(path, entries, dict(metadata), overwrite=overwrite)

    def write(self, key: str, tensor: torch.Tensor) -> None:
        self._writer.write(key, _cpu(tensor))

    def write_range(self, key: str, start: int, tensor: torch.Tensor) -> None:
        self._writer.write_range(key, start, _cpu(tensor))

    def commit(self):
        self._writer.commit()
        return self.path

    def abort(self) -> None:
        self._writer.abort()


class DictSink:
    """Collects the output as a state dict on ``device`` (the hosts' loaders take this)."""

    copies = False  # keeps the tensors it is given (unless they have to move to another device)

    def __init__(self, keys: Sequence[KeyPlan], device: Optional[str] = "cpu"):
        self.device = torch.device(device or "cpu")
        self.state_dict: Dict[str, torch.Tensor] = {}
        self._plans = {k.key: k for k in keys}
        self._lock = threading.Lock()

    def write(self, key: str, tensor: torch.Tensor) -> None:
        tensor = tensor.to(self.device)
        with self._lock:
            self.state_dict[key] = tensor

    def write_range(self, key: str, start: int, tensor: torch.Tensor) -> None:
        with self._lock:
            target = self.state_dict.get(key)
            if target is None:
                plan = self._plans[key]
                target = torch.empty(plan.shape, dtype=plan.dtype, device=self.device)
                self.state_dict[key] = target
        target.view(-1)[start:start + tensor.numel()].copy_(tensor)

    def commit(self):
        return self.state_dict

    def abort(self) -> None:
        self.state_dict.clear()


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    return tensor.contiguous()
