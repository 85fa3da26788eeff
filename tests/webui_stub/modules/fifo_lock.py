"""The host's generation lock: a non-reentrant FIFO lock (Forge modules/fifo_lock.py; A1111 the same)."""
import collections
import threading


class FIFOLock:
    def __init__(self):
        self._lock = threading.Lock()
        self._inner = threading.Lock()
        self._pending = collections.deque()

    def acquire(self, blocking=True):
        with self._inner:
            if self._lock.acquire(False):
                return True
            if not blocking:
                return False
            event = threading.Event()
            self._pending.append(event)
        event.wait()
        return self._lock.acquire()

    def release(self):
        with self._inner:
            if self._pending:
                self._pending.popleft().set()
            self._lock.release()

    def locked(self):
        return self._lock.locked()

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()
