"""Short recipe ids (``Mecha recipe: <id>`` in infotexts) and the full recipes behind them.

Kept in the extension's own data folder (``recipes.json``), never in the host's hash cache or
settings. The file is small: one entry per distinct recipe that was hot-loaded or previewed,
oldest dropped beyond ``limit``.
"""
from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional

from .base import MergeIdentity

INFOTEXT_KEY = "Mecha recipe"


class RecipeStore:
    """A bounded id → recipe map, persisted atomically. Thread safe."""

    def __init__(self, folder: Optional[os.PathLike], limit: int = 500):
        self._path = Path(folder) / "recipes.json" if folder else None
        self._limit = limit
        self._lock = threading.Lock()
        self._items: "OrderedDict[str, str]" = OrderedDict()
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._path is None or not self._path.is_file():
            return
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # a damaged store only loses old ids; never block a merge on it
        if isinstance(data, dict):
            for k, v in data.items():
                if isinstance(k, str) and isinstance(v, str):
                    self._items[k] = v

    def remember(self, ident: MergeIdentity) -> str:
        """Store the recipe under its short id and return the id."""
        with self._lock:
            self._load()
            self._items.pop(ident.short_id, None)
            self._items[ident.short_id] = ident.recipe_text
            while len(self._items) > self._limit:
                self._items.popitem(last=False)
            self._save()
        return ident.short_id

    def lookup(self, short_id: str) -> Optional[str]:
        """The full recipe text for an id (or a unique prefix of one), or None."""
        short_id = (short_id or "").strip().lower()
        if not short_id:
            return None
        with self._lock:
            self._load()
            if short_id in self._items:
                return self._items[short_id]
            hits = [v for k, v in self._items.items() if k.startswith(short_id)]
            return hits[0] if len(hits) == 1 else None

    def _save(self) -> None:
        if self._path is None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_name(self._path.name + ".tmp")
            tmp.write_text(json.dumps(self._items, indent=0), encoding="utf-8")
            os.replace(tmp, self._path)
        except OSError:
            pass  # read-only data folder: ids still work for this session
