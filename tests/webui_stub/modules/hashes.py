"""modules/hashes.py: sha256 of model files, cached persistently in cache("hashes") (here: a dict the
tests inspect; an extension must never write into it, webui-host §6.5)."""
import hashlib
import os

cache = {}


def sha256_from_cache(filename, title):
    entry = cache.get(title)
    if entry and entry["mtime"] == os.path.getmtime(filename):
        return entry["sha256"]
    return None


def sha256(filename, title):
    found = sha256_from_cache(filename, title) if os.path.exists(filename) else None
    if found:
        return found
    with open(filename, "rb") as f:  # raises for a missing file, like the host
        digest = hashlib.sha256(f.read()).hexdigest()
    cache[title] = {"mtime": os.path.getmtime(filename), "sha256": digest}
    return digest
