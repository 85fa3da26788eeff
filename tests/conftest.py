"""Fixtures shared by every test folder."""
from __future__ import annotations

import threading

import pytest

from lib_mecha import workers


@pytest.fixture
def loop_threads(monkeypatch):
    """The names of the threads that ran any range of any ``workers.for_each_range`` loop, so a test
    can check that a granted thread really took part."""
    names = set()
    lock = threading.Lock()
    original = workers.for_each_range

    def recording(spans, body, make_state=lambda: None):
        def wrapped(start, end, state):
            with lock:
                names.add(threading.current_thread().name)
            return body(start, end, state)
        return original(spans, wrapped, make_state)

    monkeypatch.setattr(workers, "for_each_range", recording)
    return names
