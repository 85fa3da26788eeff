"""Fixtures shared by every test folder."""
from __future__ import annotations

import os
import threading

import pytest

from lib_mecha.memory import STRICT_ENV
from lib_mecha.workspace import Workspace

# A merge method that keeps memory lent to it past its key fails its tests (lib_mecha/memory.py);
# merges the tests run in subprocesses inherit it.
os.environ[STRICT_ENV] = "1"


@pytest.fixture
def loop_threads(monkeypatch):
    """The names of the threads that ran any range of any ``Workspace.for_each_range`` loop, so a
    test can check that a granted thread really took part."""
    names = set()
    lock = threading.Lock()
    original = Workspace.for_each_range

    def recording(self, spans, body, make_state=None):
        def wrapped(start, end, state):
            with lock:
                names.add(threading.current_thread().name)
            return body(start, end, state)
        return original(self, spans, wrapped, make_state)

    monkeypatch.setattr(Workspace, "for_each_range", recording)
    return names
