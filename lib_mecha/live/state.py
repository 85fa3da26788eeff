"""What the running model holds, remembered between hot-loads by the host adapter.

* ``original``: the checkpoint the model was loaded from before the first hot-load, with the
  file's size and times then, so a restore can tell whether the file still holds those weights;
* ``fingerprints``: for every key that holds merged values now, the fingerprint of the value
  (keys not listed hold the original's values); a re-merge writes only keys whose fingerprint
  differs, a restore only the keys listed;
* ``recipe`` and ``options`` of the loaded merge, to recompute its keys when a later hot-load
  fails part-way;
* ``seeds``: the concrete seeds given to fresh-seed methods (see :mod:`.seeds`).
"""
from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .seeds import SeedBook


def file_stamp(path: os.PathLike) -> Optional[Tuple[int, int, int]]:
    """Size, modification and change time of a file (None when it is gone): any rewrite,
    even one that keeps the size and sets the old modification time back, changes it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class Original:
    """The checkpoint a restore brings back."""

    path: Path
    label: str
    stamp: Optional[Tuple[int, int, int]]
    host_info: Any = None          # what the host adapter needs to reload it its own way

    @classmethod
    def of(cls, path, label: str, host_info: Any = None) -> "Original":
        return cls(Path(path), label, file_stamp(path), host_info)

    def unchanged(self) -> bool:
        return self.stamp is not None and file_stamp(self.path) == self.stamp

    @property
    def streamable(self) -> bool:
        """A restore can read it key by key (pickled checkpoints are never opened)."""
        return self.path.suffix.lower() == ".safetensors" and self.unchanged()


@dataclass
class LiveState:
    original: Optional[Original] = None
    ident: Any = None                      # the loaded merge's MergeIdentity; None: the original
    fingerprints: Dict[str, str] = field(default_factory=dict)
    recipe: Any = None
    options: Any = None
    seeds: SeedBook = field(default_factory=dict)
    report: Any = None                     # the LiveReport of the hot-load that made the merge
    _model: Optional[weakref.ref] = None   # the model object the state describes

    def describes(self, model) -> bool:
        """True while ``model`` is the object this state was recorded on."""
        return self._model is not None and self._model() is model

    def attach(self, model, original: Original) -> None:
        """Start describing ``model``, loaded from ``original``, as holding only the original."""
        self.forget()
        self.original = original
        self._model = weakref.ref(model)

    def forget(self) -> None:
        """Nothing known: the model was replaced or restored. Seeds are kept for the next merge."""
        self.original = None
        self.ident = None
        self.fingerprints = {}
        self.recipe = None
        self.options = None
        self.report = None
        self._model = None

    def merged_keys(self) -> List[str]:
        return list(self.fingerprints)
