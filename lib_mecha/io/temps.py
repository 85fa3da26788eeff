"""Temporary files of unfinished outputs: their names, replacing and removing files the way
Windows allows, and clearing what killed merges left behind.

A temp file is named ``.<output name>.mecha-tmp-<host>-<pid>-<token>``: the writing process and
machine are in the name, so a later merge into the same folder can tell a file left by a merge
that died (same machine, process gone) from one another merge is still writing. Files of other
machines (a shared network folder) are never judged, nor are files of other programs.

Windows refuses to remove or replace a file while any process holds it open (the WebUI's
loaded model, an antivirus scan of a fresh file). :func:`replace` and :func:`remove` retry for a
moment and then say so; a temp file that still cannot be removed is cleared by a later merge.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Callable, List

_MARK = ".mecha-tmp-"
_NAME = re.compile(r"^\..+\.mecha-tmp-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{12}$")
HOST_TAG = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]

# How long a replace or remove waits for another program to let go of the file: long enough for
# a scanner's look at a new file, short enough that a user waits for a clear message instead.
RETRY_SECONDS = 2.0
_PAUSES = (0.02, 0.05, 0.1, 0.2, 0.4)

_live_lock = threading.Lock()
_live: set = set()  # temp files this process is writing now (never stale, whatever the pid says)


def temp_path_for(target: Path) -> Path:
    """A fresh temp name beside ``target``, registered as being written by this process until
    :func:`finished` is called."""
    path = target.parent / f".{target.name}{_MARK}{HOST_TAG}-{os.getpid()}-{secrets.token_hex(6)}"
    with _live_lock:
        _live.add(str(path))
    return path


def finished(path: Path) -> None:
    """``path`` is no longer being written (committed, or given up)."""
    with _live_lock:
        _live.discard(str(path))


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of our temp files (of any process or machine)."""
    return _MARK in name and _NAME.match(name) is not None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True when that cannot be told)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0 only asks (on POSIX; on Windows os.kill would end the process)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists under another user
        return True
    return True


def _windows_process_alive(pid: int) -> bool:
    import ctypes
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def stale_temps(folder: Path) -> List[Path]:
    """Our temp files in ``folder`` whose writer is gone: this machine's, of a dead process, or of
    this process but no longer being written."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    with _live_lock:
        live = set(_live)
    own = os.getpid()
    stale = []
    for entry in entries:
        found = _NAME.match(entry.name) if _MARK in entry.name else None
        if found is None or found["host"] != HOST_TAG:
            continue
        pid = int(found["pid"])
        path = Path(folder) / entry.name
        if (str(path) not in live) if pid == own else not process_alive(pid):
            stale.append(path)
    return stale


def remove_stale_temps(folder: Path) -> List[Path]:
    """Remove what :func:`stale_temps` finds; returns the files removed. Never raises."""
    return [path for path in stale_temps(folder) if remove(path, retry=False)]


def remove(path: Path, retry: bool = True) -> bool:
    """Remove a file; True when it is gone. While another program holds it open (Windows)
    retries for up to :data:`RETRY_SECONDS` when ``retry``. Never raises."""
    try:
        _retrying(lambda: os.unlink(path), RETRY_SECONDS if retry else 0.0)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def replace(source: Path, target: Path) -> None:
    """``os.replace``, retried for up to :data:`RETRY_SECONDS` while ``target`` is held open by
    another program (Windows refuses then). Raises the last OSError."""
    _retrying(lambda: os.replace(source, target), RETRY_SECONDS)


def _retrying(action: Callable[[], None], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    pauses = iter(_PAUSES)
    while True:
        try:
            action()
            return
        except PermissionError:  # Windows: sharing violation or delete pending; POSIX: really denied
            pause = next(pauses, _PAUSES[-1])
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
