"""sha256 of input files, remembered by (path, size, mtime) so a file is hashed once.

The cache is a small JSON file in lib_mecha's own cache folder (``$LIB_MECHA_CACHE`` or
``~/.cache/lib_mecha``); it never touches a WebUI's hash cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Dict, Optional

_lock = threading.Lock()
_BLOCK = 1 << 22


def cache_file() -> Path:
    root = os.environ.get("LIB_MECHA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lib_mecha")
    return Path(root) / "hashes.json"


def _load() -> Dict[str, str]:
    try:
        with open(cache_file(), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store(data: Dict[str, str]) -> None:
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=0, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs time


def _identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def cached_sha256(path) -> Optional[str]:
    """The remembered sha256 of a file, if it has not changed since it was hashed."""
    path = Path(path)
    with _lock:
        return _load().get(_identity(path))


def sha256_of(path) -> str:
    """Full sha256 of a file (hex), from the cache when the file is unchanged."""
    path = Path(path)
    ident = _identity(path)
    with _lock:
        known = _load().get(ident)
    if known:
        return known
    h = hashlib.sha256()
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    digest = h.hexdigest()
    with _lock:
        data = _load()
        data[ident] = digest
        _store(data)
    return digest
