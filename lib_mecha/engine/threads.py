"""The merge's threads, and the one piece of process state they touch: torch's intra-op threads.

A merge runs on threads of its own (:class:`MergeThreads`): ``mecha-merge`` workers evaluate
items side by side, ``mecha-help`` threads are granted to a key too big to run beside another,
and ``mecha-write`` writes whole keys to a file; with ``threads=0`` the calling thread merges.
torch's OpenMP threads on top of those only fight for the same cores (every parallel region of
every op waits for its slowest, often descheduled, member), so each of them runs torch's ops on
one intra-op thread.

That setting must not leave the merge's threads. ``torch.set_num_threads`` would store a
process-wide count that every thread picks up when it first runs torch (in a WebUI, the host's
own generation), and two overlapping merges would restore each other's values. Instead each
merge thread sets its own count through the OpenMP runtime torch runs on: the count is
per-thread state in OpenMP, and torch reads it from there once it has set the thread up. A
thread that merges itself (``threads=0``) sets its count for the merge and restores it after.
Where the runtime cannot be found (another OpenMP build, no OpenMP), nothing is changed:
torch's own threads run, results are the same.

Python's garbage collector is left as it is: pausing it would pause it for the whole process.
"""
from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional

import torch

# file names of the OpenMP runtimes torch's builds ship: GNU (Linux), Intel (Windows, some
# Linux builds), LLVM (macOS), Microsoft's
_RUNTIME_NAMES = ("gomp", "iomp5", "libomp", "vcomp")


def _loaded_library(path: Path):
    """The library at ``path`` if this process has loaded it already, else None: loading a second
    copy of an OpenMP runtime must never happen."""
    if os.name == "nt":
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.GetModuleHandleW.restype = ctypes.c_void_p
        kernel32.GetModuleHandleW.argtypes = [ctypes.c_wchar_p]
        return ctypes.CDLL(str(path)) if kernel32.GetModuleHandleW(str(path)) else None
    no_load = getattr(os, "RTLD_NOLOAD", None)
    if no_load is None:
        return None
    try:
        return ctypes.CDLL(str(path), mode=no_load | os.RTLD_LAZY)
    except OSError:
        return None


def runtime_candidates() -> List[Path]:
    """The OpenMP runtimes shipped with torch (its ``lib`` folder, or ``torch.libs`` beside it)."""
    package = Path(torch.__file__).parent
    found = []
    for folder in (package / "lib", package.parent / "torch.libs"):
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir()
                            if p.is_file() and any(name in p.name.lower() for name in _RUNTIME_NAMES))
    return found


class OpenMP:
    """The calling thread's OpenMP thread count in the runtime torch runs on."""

    def __init__(self, library):
        self._get = library.omp_get_max_threads
        self._set = library.omp_set_num_threads
        self._get.restype, self._get.argtypes = ctypes.c_int, []
        self._set.restype, self._set.argtypes = None, [ctypes.c_int]

    def limit(self, count: int) -> int:
        """Sets this thread's count to ``count``; returns the count it had."""
        torch.get_num_threads()  # torch sets the thread up first (which sets the count)
        previous = self._get()
        self._set(count)
        return previous

    def restore(self, previous: int) -> None:
        self._set(previous)

    def is_torchs(self) -> bool:
        """Whether torch follows this runtime's count of the calling thread."""
        before = torch.get_num_threads()
        previous = self.limit(before + 1)
        followed = torch.get_num_threads() == before + 1
        self.restore(previous)
        return followed


_runtime_lock = threading.Lock()
_runtime: List[Optional[OpenMP]] = []  # found once: [] until then, [None] when there is none


def torch_runtime(candidates: Optional[Callable[[], List[Path]]] = None) -> Optional[OpenMP]:
    """The OpenMP runtime torch runs on, found among the loaded libraries of
    :func:`runtime_candidates` (once per process), or None."""
    with _runtime_lock:
        if not _runtime:
            found = None
            for path in (candidates or runtime_candidates)():
                library = _loaded_library(path)
                if library is None or not hasattr(library, "omp_set_num_threads"):
                    continue
                runtime = OpenMP(library)
                if runtime.is_torchs():
                    found = runtime
                    break
            _runtime.append(found)
        return _runtime[0]


def limit_this_thread(count: int) -> Optional[int]:
    """Makes torch run the calling thread's ops on ``count`` intra-op threads; returns the count
    to restore, or None where it cannot be set (nothing changed)."""
    runtime = torch_runtime()
    return None if runtime is None else runtime.limit(count)


class MergeThreads:
    """The threads of one merge, each running torch's ops on ``intra_op`` threads (0: torch's
    own count, unchanged). ``threads`` workers (0: the calling thread merges, its own count
    limited for the merge) and ``threads - 1`` helpers; :attr:`initializer` sets up any other
    thread of the merge. A context manager: the pools are shut down, and the calling thread's
    count restored, on exit."""

    def __init__(self, threads: int, intra_op: Optional[int]):
        self.intra_op = intra_op or 0
        self.workers: Optional[ThreadPoolExecutor] = None
        self.helpers: Optional[ThreadPoolExecutor] = None
        self._restore: Optional[int] = None
        if threads > 0:
            self.workers = ThreadPoolExecutor(threads, "mecha-merge", initializer=self.initializer)
        if threads > 1:
            self.helpers = ThreadPoolExecutor(threads - 1, "mecha-help", initializer=self.initializer)

    def initializer(self) -> None:
        """Run first by each thread of the merge."""
        if self.intra_op:
            limit_this_thread(self.intra_op)

    def __enter__(self) -> "MergeThreads":
        if self.workers is None and self.intra_op:
            self._restore = limit_this_thread(self.intra_op)
        return self

    def __exit__(self, *exc) -> None:
        for pool in (self.workers, self.helpers):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        if self._restore is not None:
            torch_runtime().restore(self._restore)
