"""Where each work item is merged: on the merge device, or on the CPU when it would not fit there.

A merge on a GPU shares the card with the host's loaded model and its generations, so the
memory it may take there is bounded by a VRAM budget (``vram_budget_mb``; by default half of
the VRAM free when the merge starts, see :func:`default_vram_budget`). Items take their
estimated working set from that budget before they run on the device, and give it back when
done. An item whose estimate is over the whole budget is merged on the CPU, that item alone,
and so is an item that runs out of memory on the device anyway (a method's temporaries are
larger than estimated, or a generation took the memory meanwhile): its device memory is given
back and it is merged again on the CPU instead of failing the merge. Each fallback is noted
and reported with the merge's warnings.

This is the one place that decides an item's device: everything below it (inputs, methods,
the output) follows the device of the item's workspace.
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, List, Optional, TypeVar

import torch

from ..errors import ParameterError
from ..memory import Budget
from .items import MIB, WorkItem
from .options import MergeOptions, require_device

CPU = torch.device("cpu")
# What the device raises when it is out of memory (torch.OutOfMemoryError in recent torch).
DeviceOutOfMemory = torch.cuda.OutOfMemoryError
# The share of the free VRAM a merge takes by default; the rest stays free for a generation.
DEFAULT_VRAM_SHARE = 0.5

T = TypeVar("T")


def free_vram(device: torch.device) -> int:
    """Bytes of ``device``'s memory this process could allocate now: what the card has free, plus
    what torch's cache holds without using it."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def default_vram_budget(device: torch.device) -> int:
    """The VRAM budget when none is given: :data:`DEFAULT_VRAM_SHARE` of the free VRAM when the
    merge starts. The loaded model already sits in the used part; the other half of the free
    part stays for a generation started while the merge runs."""
    return int(free_vram(device) * DEFAULT_VRAM_SHARE)


def vram_budget(options: MergeOptions, device: torch.device) -> Optional[int]:
    """The merge's VRAM budget in bytes on ``device``; None where there is none (the CPU, and
    devices whose free memory torch cannot tell, unless a budget is given).

    Raises:
        ParameterError: a budget larger than the card's memory.
    """
    if device.type == "cpu":
        return None
    given = options.vram_budget_mb
    if device.type != "cuda":
        return None if given is None else int(given) * MIB
    if given is None:
        return default_vram_budget(device)
    total = torch.cuda.get_device_properties(device).total_memory
    if int(given) * MIB > total:
        raise ParameterError("merge", "vram_budget_mb", f"{given} MiB is more than {device} has "
                             f"({total // MIB} MiB)", "give a smaller budget, or none for half of the free VRAM")
    return int(given) * MIB


def release_device_memory(device: torch.device) -> None:
    """Gives the memory torch's cache holds on ``device`` back to the card (for the host's model
    and generations)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Placement:
    """Decides the device of each work item of one merge and keeps the notes of the fallbacks.

    ``budget``: bytes the items running on ``device`` may take together (None: no bound);
    ``recovers``: whether an item that runs out of memory on ``device`` is merged again on the
    CPU. A merge on the CPU has neither (:func:`placement_for`).
    """

    def __init__(self, device: torch.device, budget: Optional[int] = None, recovers: bool = False):
        self.device = device
        self.budget = Budget(budget) if budget is not None else None
        self.recovers = recovers
        self._over_budget: Dict[str, None] = {}   # keys merged on the CPU, in order (a dict as an ordered set)
        self._out_of_memory: Dict[str, None] = {}
        self._lock = threading.Lock()

    def run(self, item: WorkItem, evaluate: Callable[[torch.device], T]) -> T:
        """``evaluate(device)`` on the device chosen for ``item``."""
        if self.budget is not None and item.cost > self.budget.capacity:
            self._note(self._over_budget, item)
            return evaluate(CPU)
        if self.budget is not None:
            self.budget.acquire(item.cost)
        try:
            return evaluate(self.device)
        except DeviceOutOfMemory:
            if not self.recovers:
                raise
        finally:
            if self.budget is not None:
                self.budget.release(item.cost)
        # here, out of the handler: the error's frames, which held the item's device tensors, are gone
        release_device_memory(self.device)
        self._note(self._out_of_memory, item)
        return evaluate(CPU)

    def notes(self) -> List[str]:
        """What the merge should say about its fallbacks (nothing when there were none)."""
        out = []
        if self._over_budget:
            out.append(f"{_count(self._over_budget)} merged on the CPU: larger than the VRAM budget of "
                       f"{self.budget.capacity / MIB:g} MiB ({_examples(self._over_budget)})")
        if self._out_of_memory:
            out.append(f"{_count(self._out_of_memory)} ran out of memory on {self.device} and were merged on the "
                       f"CPU instead ({_examples(self._out_of_memory)})")
        return out

    @property
    def fallbacks(self) -> List[str]:
        """The keys merged on the CPU instead of the device, in the order they fell back."""
        return [*self._over_budget, *(k for k in self._out_of_memory if k not in self._over_budget)]

    def _note(self, keys: Dict[str, None], item: WorkItem) -> None:
        with self._lock:
            keys[item.plan.key] = None


def placement_for(options: MergeOptions) -> Placement:
    """The placement of a merge with ``options``: its device (checked: it must exist here) and,
    on a GPU, its VRAM budget and the CPU fallback.

    Raises:
        ParameterError: a device this machine lacks, or a VRAM budget larger than the card.
    """
    device = require_device(options.device)
    if device.type == "cpu":
        return Placement(device)
    return Placement(device, vram_budget(options, device), recovers=True)


def _count(keys: Dict[str, None]) -> str:
    return "1 key" if len(keys) == 1 else f"{len(keys)} keys"


def _examples(keys: Dict[str, None], shown: int = 3) -> str:
    names = list(keys)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
