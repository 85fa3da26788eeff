"""sha256 of input files, remembered by (path, size, mtime) so a file is hashed once.

The cache is a small JSON file, ``hashes.json``, in the host's data folder inside a WebUI (the
extension calls :func:`use_folder` with it, so it follows ``--data-dir``), else in the user's
cache folder (:func:`user_cache_dir`). Entries of files that are gone or have changed since are
dropped whenever it is written, so it holds no more than the files still hashed. It never
touches a WebUI's own hash cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Dict, Mapping, Optional

_lock = threading.Lock()
_BLOCK = 1 << 22
_folder: Optional[Path] = None  # the host's data folder, when a WebUI host set one


def user_cache_dir(environ: Mapping[str, str] = os.environ, platform: str = sys.platform) -> Path:
    """lib_mecha's folder in the user's cache: ``$LIB_MECHA_CACHE`` when set, else
    ``%LOCALAPPDATA%\\lib_mecha`` on Windows, ``~/Library/Caches/lib_mecha`` on macOS and
    ``$XDG_CACHE_HOME/lib_mecha`` (by default ``~/.cache/lib_mecha``) elsewhere."""
    if environ.get("LIB_MECHA_CACHE"):
        return Path(environ["LIB_MECHA_CACHE"])
    home = Path(environ.get("HOME") or environ.get("USERPROFILE") or os.path.expanduser("~"))
    if platform.startswith("win"):
        base = environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
    elif platform == "darwin":
        base = str(home / "Library" / "Caches")
    else:
        base = environ.get("XDG_CACHE_HOME") or str(home / ".cache")
    return Path(base) / "lib_mecha"


def use_folder(folder: Optional[os.PathLike]) -> None:
    """Keep the cache in ``folder`` from now on (a WebUI host's data folder); None goes back to
    :func:`user_cache_dir`."""
    global _folder
    _folder = Path(folder) if folder is not None else None


def cache_file() -> Path:
    return (_folder if _folder is not None else user_cache_dir()) / "hashes.json"


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
        tmp.write_text(json.dumps(_current(data), indent=0, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs time


def _current(data: Dict[str, str]) -> Dict[str, str]:
    """The entries whose file still exists with the size and mtime it had when it was hashed."""
    kept = {}
    for ident, digest in data.items():
        path, _, _ = ident.rpartition("|")[0].rpartition("|")
        try:
            if _identity(Path(path)) == ident:
                kept[ident] = digest
        except OSError:
            pass
    return kept


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
