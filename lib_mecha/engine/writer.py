"""Handing finished items to the sink: at once, or behind the merge on a writer thread.

The sink protocol: ``write(key, tensor)`` for a whole key, ``write_range(key, start, tensor)``
for a slice of the flattened key, ``commit()`` / ``abort()`` at the end, and ``copies``: True
when the sink is done with a tensor once ``write`` returns (a file), False when it keeps it (a
state dict). A tensor's memory goes back to the pool once it has been written (unless kept).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional

from .evaluate import Output
from .items import WorkItem

Deliver = Callable[[WorkItem, Output], None]


def write(sink, item: WorkItem, output: Output) -> None:
    """Writes the item's tensor into the sink now, then gives its memory back."""
    try:
        if item.start is None:
            sink.write(item.plan.key, output.tensor)
        else:
            sink.write_range(item.plan.key, item.start, output.tensor)
    except BaseException:
        output.dropped()
        raise
    output.written()


def write_now(sink) -> Deliver:
    return lambda item, output: write(sink, item, output)


class WriteBehind:
    """Writes whole keys to a sink that copies them (a file) on a thread of its own, so the
    workers go on merging while a key is written: a whole key running alone would otherwise
    leave every other thread idle while it is written. At most ``depth`` keys wait to be
    written, besides the budget. Slices are written at once (they are small)."""

    def __init__(self, sink, depth: int, initializer: Optional[Callable[[], None]] = None):
        self._sink = sink
        self._slots = threading.Semaphore(depth)
        self._errors: List[BaseException] = []
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mecha-write", initializer=initializer)

    def deliver(self, item: WorkItem, output: Output) -> None:
        if self._errors:
            output.dropped()
            raise self._errors[0]
        if item.start is not None:
            write(self._sink, item, output)
            return
        self._slots.acquire()
        self._thread.submit(self._write, item, output)

    def _write(self, item: WorkItem, output: Output) -> None:
        try:
            write(self._sink, item, output)
        except BaseException as e:  # raised by the next hand-over and by close()
            self._errors.append(e)
        finally:
            self._slots.release()

    def close(self) -> Optional[BaseException]:
        """Waits for every write; returns the first write error, if any."""
        self._thread.shutdown(wait=True)
        return self._errors[0] if self._errors else None
