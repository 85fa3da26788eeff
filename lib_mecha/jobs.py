"""One merge or save at a time per process, in a background thread, with progress, ETA and cancel.

:data:`RUNNER` is shared by every browser tab and by the REST routes: a second Merge (or a Save
during a merge, or a REST merge during a tab's) is refused with :class:`~lib_mecha.errors.Busy`
instead of starting a second job. Cancel sets the event the engine checks between keys, so a
job stops within one key.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .errors import Busy, MechaError, MergeCancelled

log = logging.getLogger("lib_mecha.jobs")
JobFn = Callable[["Job"], Any]
ETA_FROM = 0.10   # share of the bytes done before an ETA is shown: the first keys say little


@dataclass
class Job:
    """A running or finished job. Progress fields are written by the job's thread."""

    kind: str                          # "merge" | "save"
    label: str
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    total: int = 0
    bytes: int = 0
    total_bytes: int = 0               # the plan's output bytes, once planning ends
    merging_since: Optional[float] = None
    phase: str = "planning"
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: Optional[BaseException] = None
    ended: Optional[float] = None
    info: dict = field(default_factory=dict)  # what the starter wants reported with the job

    def planned(self, keys: int, nbytes: int) -> None:
        """The engine's callback when planning ends: what there is to do, and the clock of the ETA."""
        self.total, self.total_bytes = int(keys), int(nbytes)
        self.merging_since = time.monotonic()
        self.phase = "merging"

    def progress(self, done: int, total: int, nbytes: int = 0) -> None:
        """The engine's progress callback."""
        self.done, self.total, self.bytes = int(done), int(total), int(nbytes)
        if self.merging_since is None:  # an engine that does not report the end of planning
            self.merging_since = time.monotonic()
        self.phase = "merging"

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def fraction(self) -> float:
        """The share of the work done: bytes written when the plan's size is known, else keys."""
        if self.total_bytes:
            return min(1.0, self.bytes / self.total_bytes)
        return self.done / self.total if self.total else 0.0

    def eta(self, now: Optional[float] = None) -> Optional[float]:
        """Seconds left, from the bytes merged since planning ended against the bytes to do;
        None before :data:`ETA_FROM` of the bytes are done (keys differ in size by 10^5, and the
        first ones are the largest), when the plan's size is unknown, or once finished."""
        if self.finished.is_set() or not self.total_bytes or self.merging_since is None:
            return None
        fraction = self.bytes / self.total_bytes
        if fraction < ETA_FROM:
            return None
        spent = (now if now is not None else time.monotonic()) - self.merging_since
        return max(0.0, spent / fraction - spent)

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, MergeCancelled)

    def message(self) -> str:
        """The job's outcome as one line (empty while running)."""
        if not self.finished.is_set():
            return ""
        if self.error is None:
            return ""
        if isinstance(self.error, MechaError):
            return self.error.format_message()
        return f"unexpected error: {type(self.error).__name__}: {self.error}"


class JobRunner:
    """Starts jobs one at a time. Thread safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._current: Optional[Job] = None

    @property
    def current(self) -> Optional[Job]:
        with self._lock:
            return self._current

    def busy(self) -> Optional[Job]:
        """The running job, if any."""
        job = self.current
        return job if job is not None and not job.finished.is_set() else None

    def start(self, kind: str, label: str, fn: JobFn) -> Job:
        """Run ``fn(job)`` in a background thread and return the job at once.

        Raises:
            Busy: another job is running (it is named, with its progress).
        """
        with self._lock:
            running = self._current
            if running is not None and not running.finished.is_set():
                pct = f", {running.fraction:.0%} done" if running.total else ""
                raise Busy(f"a {running.kind} is running ({running.label}{pct}); {kind} was not started",
                           "wait for it to finish, or cancel it")
            job = Job(kind, label)
            self._current = job
        thread = threading.Thread(target=self._run, args=(job, fn), name=f"mecha-{kind}", daemon=True)
        thread.start()
        return job

    @staticmethod
    def _run(job: Job, fn: JobFn) -> None:
        try:
            job.result = fn(job)
        except BaseException as e:  # reported in the tab; a job thread must never die silently
            job.error = e
            if not isinstance(e, MechaError):
                log.error("Mecha %s failed", job.kind, exc_info=e)
        finally:
            job.ended = time.monotonic()
            job.finished.set()

    def cancel(self) -> bool:
        """Ask the running job to stop; False when none runs."""
        job = self.busy()
        if job is None:
            return False
        job.cancel.set()
        job.phase = "cancelling"
        return True


RUNNER = JobRunner()
