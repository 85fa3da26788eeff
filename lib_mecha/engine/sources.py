"""Opened inputs: resolving model names to files, opening them once, knowing their keys.

A :class:`Source` is one input file (or sharded model) of a plan, with its detected
architecture and the map from canonical key names to the names stored in the file (old
alias names are accepted on input; the output always uses canonical names).
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..arch import base as arch_base
from ..errors import ModelNotFound, UnknownArchitecture
from ..io import open_model
from ..recipe import ModelNode

MODEL_SUFFIXES = (".safetensors",)
INDEX_SUFFIX = ".safetensors.index.json"
GENERIC = None  # the architecture of files no table explains: merged by their common keys


def resolve_model_path(name: str, model_dirs: Sequence[str] = ()) -> Path:
    """Find a model by path or name; ``.safetensors`` may be omitted.

    Absolute paths are taken as they are. A relative name is tried against each model folder
    in order, then against the working directory.

    Raises:
        ModelNotFound: naming the model and every folder searched.
    """
    raw = Path(os.path.expanduser(name))
    candidates = [raw] if raw.is_absolute() else [Path(d) / raw for d in model_dirs] + [raw]
    for base in candidates:
        for path in (base, base.with_name(base.name + ".safetensors"), base.with_name(base.name + INDEX_SUFFIX)):
            if path.is_file() or (path.is_dir() and any(path.glob("*" + INDEX_SUFFIX))):
                return path.resolve()
    searched = [str(Path(d)) for d in model_dirs] if not raw.is_absolute() else []
    if not raw.is_absolute():
        searched.append(os.getcwd())
    raise ModelNotFound(name, searched)


@dataclass
class Source:
    """One opened input."""

    index: int
    path: Path
    file: object  # lib_mecha.io.SafetensorsFile or ShardedModel
    architecture: Optional[arch_base.Architecture]
    key_map: Dict[str, str] = field(default_factory=dict)  # canonical -> stored name
    _identity: Optional[str] = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def identity(self) -> str:
        """What identifies this input's content cheaply: path, size, modification and change
        time (a rewrite that keeps the size and sets the old modification time back still
        changes the change time)."""
        if self._identity is None:
            st = self.path.stat()
            self._identity = f"{self.path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
        return self._identity

    def info(self, canonical_key: str):
        return self.file.tensors[self.key_map[canonical_key]]

    def close(self) -> None:
        self.file.close()


# (path, size, times, config) -> (architecture, key map): re-merges open the same files again and
# again, and detecting an architecture costs about as much as planning every key
_DESCRIBED: "OrderedDict[tuple, Tuple[Optional[arch_base.Architecture], Dict[str, str]]]" = OrderedDict()
_DESCRIBED_LIMIT = 32
_described_lock = threading.Lock()


def open_source(index: int, path: Path, node: ModelNode) -> Source:
    st = os.stat(path)
    ident = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, node.model_config)
    handle = open_model(path)
    try:
        with _described_lock:
            known = _DESCRIBED.get(ident)
        if known is None or len(known[1]) != len(handle.tensors) or any(
                n not in handle.tensors for n in known[1].values()):
            known = _describe(node, handle)
            with _described_lock:
                _DESCRIBED[ident] = known
                while len(_DESCRIBED) > _DESCRIBED_LIMIT:
                    _DESCRIBED.popitem(last=False)
        arch, key_map = known
        return Source(index, Path(path), handle, arch, dict(key_map))
    except BaseException:
        handle.close()
        raise


def _describe(node: ModelNode, handle) -> Tuple[Optional[arch_base.Architecture], Dict[str, str]]:
    arch = _architecture_for(node, handle)
    key_map: Dict[str, str] = {}
    for name in handle.tensors:
        canonical = arch.canonical(name) if arch is not None else None
        key_map.setdefault(canonical or name, name)
    return arch, key_map


def _architecture_for(node: ModelNode, handle) -> Optional[arch_base.Architecture]:
    config = node.model_config
    if config and config != "structural":
        try:
            return arch_base.resolve_architecture(config)
        except UnknownArchitecture:
            # a LoRA or block config named by sd-mecha: not a key table of ours; treat as generic
            if config in arch_base.architecture_ids():
                raise
            return GENERIC
    shapes = {k: tuple(t.shape) for k, t in handle.tensors.items()}
    return arch_base.detect(list(handle.tensors), shapes)


class SourceSet:
    """Every input of a plan, opened once each (two names for one file share one Source)."""

    def __init__(self, model_dirs: Sequence[str] = ()):
        self.model_dirs = tuple(model_dirs)
        self.sources: List[Source] = []
        self._by_node: Dict[ModelNode, Source] = {}
        self._by_path: Dict[Tuple[Path, Optional[str]], Source] = {}

    def open(self, nodes: Iterable[ModelNode]) -> None:
        try:
            for node in nodes:
                path = resolve_model_path(node.path, self.model_dirs)
                key = (path, node.model_config)
                source = self._by_path.get(key)
                if source is None:
                    source = open_source(len(self.sources), path, node)
                    self.sources.append(source)
                    self._by_path[key] = source
                self._by_node[node] = source
        except BaseException:
            self.close()
            raise

    def of(self, node: ModelNode) -> Source:
        return self._by_node[node]

    def close(self) -> None:
        for s in self.sources:
            s.close()
