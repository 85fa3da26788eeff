"""The engine sink that writes each finished key straight into the running model.

The engine hands it tensors already in the output dtype of the plan, which for a live merge is
the dtype Save writes (so the preview is the saved file's weights, whatever the host's precision);
the live target casts them to the model's own dtype as the host's loader casts a file.

Nothing of the merge is held beyond the keys in flight: whole keys are copied in at once; slices
of a key that maps one to one onto a live tensor go straight into it; slices of a key the host
splits or transposes are gathered in one buffer of that key and converted when complete.
``touched`` names every key that any write has started on, which is what a failure must undo.
"""
from __future__ import annotations

import threading
from typing import Dict, Sequence, Set

import torch

from ..engine.plan import KeyPlan
from .target import LiveTarget, Route


class LiveSink:
    """A sink (see :mod:`lib_mecha.engine.sinks`) over a :class:`LiveTarget`. Thread safe."""

    copies = True  # every tensor is copied into the model at once and not kept

    def __init__(self, target: LiveTarget, routes: Dict[str, Route], keys: Sequence[KeyPlan]):
        self.target = target
        self.routes = routes
        self._plans = {k.key: k for k in keys}
        self._received: Dict[str, int] = {}
        self._staged: Dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()
        self.touched: Set[str] = set()
        self.written: Set[str] = set()

    def write(self, key: str, tensor: torch.Tensor) -> None:
        route = self.routes[key]
        with self._lock:
            self.touched.add(key)
        self.target.write(route, tensor)
        with self._lock:
            self.written.add(key)

    def write_range(self, key: str, start: int, tensor: torch.Tensor) -> None:
        route = self.routes[key]
        plan = self._plans[key]
        flat = tensor.reshape(-1)
        if route.direct:
            with self._lock:
                self.touched.add(key)
            self.target.write_slice(route, start, flat)
            self._count(key, flat.numel(), plan)
            return
        with self._lock:
            staged = self._staged.get(key)
            if staged is None:
                staged = self._staged[key] = torch.empty(plan.numel, dtype=plan.dtype)
        staged[start:start + flat.numel()].copy_(flat)
        if self._count(key, flat.numel(), plan, mark=False):
            with self._lock:
                whole = self._staged.pop(key)
                self.touched.add(key)
            self.target.write(route, whole.view(plan.shape))
            with self._lock:
                self.written.add(key)

    def _count(self, key: str, n: int, plan: KeyPlan, mark: bool = True) -> bool:
        """Adds ``n`` received elements; True when the key is complete."""
        with self._lock:
            got = self._received.get(key, 0) + n
            self._received[key] = got
            complete = got >= plan.numel
            if complete and mark:
                self.written.add(key)
            return complete

    def commit(self) -> Set[str]:
        """The keys written (all of them, or the engine would not commit)."""
        with self._lock:
            self._staged.clear()
            return set(self.written)

    def abort(self) -> None:
        with self._lock:
            self._staged.clear()
