"""A terminal progress bar with an ETA, fed by the engine's progress callback."""
from __future__ import annotations

import contextlib
import sys
import threading
import time


class ProgressBar:
    def __init__(self, stream, width: int = 30):
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, done: int, total: int, bytes_done: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        fraction = done / total if total else 1.0
        filled = int(self.width * fraction)
        elapsed = now - self.started
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} keys "
                          f"{bytes_done / 2**20:8.1f} MiB  {elapsed:5.1f}s elapsed  ETA {eta:5.1f}s")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


@contextlib.contextmanager
def terminal_job(quiet: bool = False):
    """``(progress, cancel)`` for a command-line job: a bar on a terminal's stderr (none when ``quiet``
    or not a terminal), and the event set when Ctrl+C interrupts the job."""
    bar = None if quiet or not sys.stderr.isatty() else ProgressBar(sys.stderr)
    cancel = threading.Event()
    try:
        yield (bar.update if bar else None), cancel
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        if bar:
            bar.close()
