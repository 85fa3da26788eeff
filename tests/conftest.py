"""Fixtures shared by every test folder."""
from __future__ import annotations

import os
import threading

import pytest

from lib_mecha.engine import hashes
from lib_mecha.memory import STRICT_ENV
from lib_mecha.workspace import Workspace

# A merge method that keeps memory lent to it past its key fails its tests (lib_mecha/memory.py);
# merges the tests run in subprocesses inherit it.
os.environ[STRICT_ENV] = "1"

# Where the input hash cache of whoever runs the tests lives: the suite must never write it.
REAL_HASH_CACHE = hashes.user_cache_dir() / "hashes.json"


class HashCacheRecord:
    """The temporary folder of the hash cache, and every cache file this process wrote."""

    def __init__(self, folder):
        self.folder = folder
        self.written = []


@pytest.fixture(scope="session", autouse=True)
def hash_cache_in_a_temporary_folder(tmp_path_factory):
    """The input hash cache of every test (and of the command lines they start) goes to a
    temporary folder; at the end, no test may have written the user's own cache. (Other
    programs may write that file meanwhile: what is checked is what this process wrote.)"""
    record = HashCacheRecord(tmp_path_factory.mktemp("hash-cache"))
    real_store = hashes._store

    def recording_store(data):
        record.written.append(hashes.cache_file())
        real_store(data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIB_MECHA_CACHE", str(record.folder))
        mp.setattr(hashes, "_store", recording_store)
        yield record
    assert REAL_HASH_CACHE not in record.written, f"the tests wrote {REAL_HASH_CACHE}"


@pytest.fixture(autouse=True)
def hash_cache_folder_reset():
    """A host set up by a test keeps the cache in its data folder; the next test starts afresh."""
    yield
    hashes.use_folder(None)


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
