"""A model split over several .safetensors shards, described by a ``*.safetensors.index.json``.

The index (Hugging Face layout) is ``{"metadata": {...}, "weight_map": {key: shard file name}}``.
Every shard is opened and validated up front, and every key of the weight map must be in the
shard it names. Shard names must stay inside the index's folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..errors import ModelNotFound, SafetensorsError
from .header import MAX_HEADER_BYTES, TensorInfo
from .reader import INDEX_SUFFIX, SafetensorsFile, TensorSource


def find_index(folder: Path) -> Path:
    """The single ``*.safetensors.index.json`` in ``folder`` (SafetensorsError if none or several)."""
    found = sorted(p for p in Path(folder).iterdir() if p.name.lower().endswith(INDEX_SUFFIX) and p.is_file())
    if not found:
        raise SafetensorsError(folder, f"folder holds no *{INDEX_SUFFIX}, so it is not a sharded safetensors model",
                               "name a .safetensors file instead")
    if len(found) > 1:
        raise SafetensorsError(folder, "folder holds several index files (" + ", ".join(p.name for p in found) + ")",
                               "name the index file to use")
    return found[0]


def shard_files(index_path) -> List[Path]:
    """The files a sharded model reads: its index and every shard it names (not opened)."""
    index_path = Path(index_path)
    _, weight_map = _read_index(index_path)
    return [index_path] + [index_path.parent / name for name in dict.fromkeys(weight_map.values())]


class ShardedModel(TensorSource):
    """The same interface as SafetensorsFile over the shards of an index.

    Attributes:
        path: the index file. shards: the open SafetensorsFile objects, in weight-map order.
        tensors: key -> TensorInfo (offsets are absolute in the key's shard; see ``shard_of``).
        metadata: the shards' ``__metadata__`` merged (the first shard wins on a clash).
        index_metadata: the index's own "metadata" object, as found. size: total bytes of the shards.

    Thread safety: as SafetensorsFile.
    """

    def __init__(self, index_path):
        self.path = Path(index_path)
        self.index_metadata, weight_map = _read_index(self.path)
        self.shards: List[SafetensorsFile] = []
        self._by_key: Dict[str, SafetensorsFile] = {}
        self.tensors: Dict[str, TensorInfo] = {}
        try:
            self._open_shards(weight_map)
        except BaseException:
            self.close()
            raise
        self.metadata: Dict[str, str] = {}
        for shard in reversed(self.shards):
            self.metadata.update(shard.metadata)
        self.size = sum(shard.size for shard in self.shards)

    def _open_shards(self, weight_map: Dict[str, str]) -> None:
        folder = self.path.parent
        real_folder = os.path.realpath(folder)
        opened: Dict[str, SafetensorsFile] = {}
        for key, name in weight_map.items():
            shard = opened.get(name)
            if shard is None:
                target = folder / name
                real = os.path.realpath(target)
                if os.path.isabs(name) or os.path.commonpath([real_folder, real]) != real_folder:
                    raise SafetensorsError(self.path, f"weight_map puts {key!r} in {name!r}, which is outside "
                                                      f"the model folder")
                if not target.is_file():
                    raise SafetensorsError(self.path, f"shard {name!r} (holding {key!r}) does not exist")
                shard = opened[name] = SafetensorsFile(target)
                self.shards.append(shard)
            if key not in shard.tensors:
                raise SafetensorsError(self.path, f"weight_map puts {key!r} in {name!r}, but that shard has "
                                                  f"no such tensor")
            self._by_key[key] = shard
            self.tensors[key] = shard.tensors[key]

    def __repr__(self) -> str:
        return f"ShardedModel({str(self.path)!r}, {len(self.shards)} shards, {len(self.tensors)} tensors)"

    def shard_of(self, key: str) -> SafetensorsFile:
        """The shard holding ``key`` (KeyError naming the index when absent)."""
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"{key!r} is not in {self.path}") from None

    def read(self, key: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """As SafetensorsFile.read, from the shard holding ``key``."""
        return self.shard_of(key).read(key, out)

    def read_range(self, key: str, start_elem: int, end_elem: int,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """As SafetensorsFile.read_range, from the shard holding ``key``."""
        return self.shard_of(key).read_range(key, start_elem, end_elem, out)

    def view_range(self, key: str, start_elem: int = 0, end_elem: Optional[int] = None) -> Optional[torch.Tensor]:
        """As SafetensorsFile.view_range, from the shard holding ``key``."""
        return self.shard_of(key).view_range(key, start_elem, end_elem)

    def close(self) -> None:
        """Close every shard; idempotent."""
        for shard in self.shards:
            shard.close()


def _read_index(path: Path):
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_HEADER_BYTES + 1)
    except FileNotFoundError:
        raise ModelNotFound(str(path)) from None
    except OSError as e:
        raise SafetensorsError(path, f"cannot read the index: {e.strerror}") from e
    if len(raw) > MAX_HEADER_BYTES:
        raise SafetensorsError(path, f"index is larger than the limit of {MAX_HEADER_BYTES} bytes")
    try:
        index = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise SafetensorsError(path, f"index is not UTF-8 (bad byte at {e.start})") from None
    except json.JSONDecodeError as e:
        raise SafetensorsError(path, f"index is not valid JSON ({e.msg} at byte {e.pos})") from None
    except (ValueError, RecursionError) as e:
        raise SafetensorsError(path, f"index cannot be read as JSON ({type(e).__name__})") from None
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise SafetensorsError(path, "index has no \"weight_map\" object mapping tensor names to shard files")
    weight_map = index["weight_map"]
    for key, name in weight_map.items():
        if not isinstance(name, str) or not name:
            raise SafetensorsError(path, f"weight_map value of {key!r} is not a shard file name")
    metadata = index.get("metadata")
    return (metadata if isinstance(metadata, dict) else {}), weight_map
