"""The process's peak memory during a job, above its level when the job started.

The kernel's own peak (``VmHWM``, ``ru_maxrss``) cannot be reset per job, so the level is
sampled on a thread of its own. What is sampled, in order of preference:

* Linux: the resident set from ``/proc/self/status`` (``VmRSS``). Not only its private part
  (``RssAnon``): hosts keep weights in private mappings of the checkpoint file (safetensors'
  ``load_file``), and the first write into such a page moves it from the file's part of the
  resident set to the private part without adding memory (in the real Forge, the first hot-load
  raised ``RssAnon`` by 767 MB while ``VmRSS`` ended 89 MB above its level before);
* elsewhere: the resident set from ``psutil`` when the host has it (A1111 and Forge ship it);
* else the growth of ``ru_maxrss`` (``resource``), a lower bound: it only shows memory above the
  process's earlier peak;
* else nothing (``extra_mb`` is None).
"""
from __future__ import annotations

import sys
import threading
from typing import Callable, Optional

INTERVAL = 0.01  # seconds between samples


def _proc_status_rss() -> Optional[int]:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _psutil_rss() -> Optional[int]:
    try:
        import psutil
    except ImportError:
        return None
    try:
        return int(psutil.Process().memory_info().rss)
    except Exception:  # psutil raises its own errors on odd platforms
        return None


def _max_rss() -> Optional[int]:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB elsewhere


def choose_probe() -> Optional[Callable[[], Optional[int]]]:
    """The best probe this platform offers (see the module docstring), or None."""
    for probe in (_proc_status_rss, _psutil_rss):
        if probe() is not None:
            return probe
    return _max_rss if _max_rss() is not None else None


class PeakMemory:
    """Context manager: ``extra_mb`` is the highest sampled level above the level at entry.

    Example:
        >>> with PeakMemory() as peak:
        ...     work()
        >>> peak.extra_mb
    """

    def __init__(self, probe: Optional[Callable[[], Optional[int]]] = None, interval: float = INTERVAL):
        self.probe = probe if probe is not None else choose_probe()
        self.interval = interval
        self.baseline: Optional[int] = None
        self.peak: Optional[int] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        value = self.probe() if self.probe is not None else None
        if value is not None and (self.peak is None or value > self.peak):
            self.peak = value

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakMemory":
        if self.probe is not None:
            self.baseline = self.probe()
            self.peak = self.baseline
            self._thread = threading.Thread(target=self._run, name="mecha-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    @property
    def extra_mb(self) -> Optional[float]:
        """Peak above the level at entry, in MiB (None when this platform offers no probe)."""
        if self.baseline is None or self.peak is None:
            return None
        return round(max(0, self.peak - self.baseline) / (1 << 20), 1)
