"""Read tensors from safetensors files without holding the file: only the header stays in memory.

Bytes go straight from the file into the tensor's memory (pread into a memoryview of the new
tensor), so reading a key costs one allocation and no intermediate copies. Pickled checkpoints are
recognized and refused, never unpickled.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Dict, Iterator, Optional

import torch

from ..errors import ModelNotFound, SafetensorsError, UnsafeFormat
from .header import SafetensorsHeader, TensorInfo, parse_header
from .mapping import map_range
from .positional import PORTABLE_IO, READ_FLAGS, PositionalFile

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
INDEX_SUFFIX = ".safetensors.index.json"


class TensorSource:
    """What SafetensorsFile and ShardedModel share: ``tensors`` (key -> TensorInfo), ``metadata``,
    ``read``/``read_range``, ``close`` and the context manager."""

    path: Path
    metadata: Dict[str, str]
    tensors: Dict[str, TensorInfo]

    def keys(self):
        return self.tensors.keys()

    def __contains__(self, key) -> bool:
        return key in self.tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class SafetensorsFile(TensorSource):
    """One open .safetensors file with a validated header.

    Attributes:
        path: the file. metadata: ``__metadata__`` (str -> str). tensors: key -> TensorInfo in
        header order, with absolute offsets. size: file size in bytes. data_start: where data begins.

    Thread safety: ``read``/``read_range`` may run from any number of threads at once (positional
    reads share no file position). Do not call ``close`` while reads are in progress.

    Raises (at construction):
        ModelNotFound: no such file. SafetensorsError: unreadable, not safetensors, damaged or hostile.

    Example:
        >>> with SafetensorsFile("model.safetensors") as f:
        ...     w = f.read("model.diffusion_model.out.2.weight")
    """

    def __init__(self, path, *, positional: Optional[bool] = None):
        self.path = Path(path)
        fd = _open_regular(self.path)
        try:
            self._file = (PositionalFile(fd) if positional is None
                          else PositionalFile(fd, positional=positional))
            header = parse_header(self.path, self._file, os.fstat(fd).st_size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if hasattr(os, "posix_fadvise") and not PORTABLE_IO:
            # merges walk each file front to back: a larger read-ahead window, where the OS has one
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        self.header: SafetensorsHeader = header
        self.metadata = header.metadata
        self.tensors = header.tensors
        self.size = header.size
        self.data_start = header.data_start

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"{len(self.tensors)} tensors"
        return f"SafetensorsFile({str(self.path)!r}, {state})"

    def info(self, key: str) -> TensorInfo:
        """The TensorInfo of ``key`` (KeyError naming the file when absent)."""
        try:
            return self.tensors[key]
        except KeyError:
            raise KeyError(f"{key!r} is not in {self.path}") from None

    def read(self, key: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """A CPU tensor with the stored dtype and shape of ``key``.

        Args:
            out: optional contiguous CPU buffer to fill instead of allocating, either uint8 or of the
                stored dtype, with at least as many bytes as the tensor; the result is a view of it.

        Raises:
            SafetensorsError: the file became shorter than its header says (changed after opening).
        """
        info = self.info(key)
        buffer = self._fill(info, info.start, info.end, out)
        return buffer.view(info.dtype).reshape(info.shape)

    def read_range(self, key: str, start_elem: int, end_elem: int,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Elements ``[start_elem, end_elem)`` of the flattened tensor, as a 1-D tensor of its dtype.

        For chunked merging of big keys; ``out`` as in ``read``.
        """
        info = self.info(key)
        if not (isinstance(start_elem, int) and isinstance(end_elem, int)
                and 0 <= start_elem <= end_elem <= info.numel):
            raise ValueError(f"range [{start_elem}, {end_elem}) is not inside {key!r} "
                             f"({info.numel} elements)")
        size = info.itemsize
        buffer = self._fill(info, info.start + start_elem * size, info.start + end_elem * size, out)
        return buffer.view(info.dtype)

    def view_range(self, key: str, start_elem: int = 0, end_elem: Optional[int] = None) -> Optional[torch.Tensor]:
        """Elements ``[start_elem, end_elem)`` of ``key`` as a 1-D view of the file's pages.

        No bytes are copied: for callers that convert the values anyway (into another dtype or
        onto another device) or only read them. The view is private copy-on-write memory:
        writing into it copies the page touched for this process and never changes the file.
        None when the range cannot be mapped here; ``read_range`` then gives the same values.
        """
        info = self.info(key)
        end_elem = info.numel if end_elem is None else end_elem
        if not 0 <= start_elem <= end_elem <= info.numel:
            raise ValueError(f"range [{start_elem}, {end_elem}) is not inside {key!r} ({info.numel} elements)")
        if self._fd < 0:
            raise ValueError(f"{self.path} is closed")
        if PORTABLE_IO:
            return None  # as on Windows, where mapping.map_range has no shared mappings
        size = info.itemsize
        return map_range(self._fd, self.path, info.start + start_elem * size, info.start + end_elem * size,
                         info.dtype)

    def close(self) -> None:
        """Close the file; idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def _fill(self, info: TensorInfo, start: int, end: int, out: Optional[torch.Tensor]) -> torch.Tensor:
        if self._fd < 0:
            raise ValueError(f"{self.path} is closed")
        buffer = _byte_buffer(end - start, info.dtype, out)
        # .numpy() shares the tensor's memory: the read lands directly in the tensor
        got = self._file.read_into(memoryview(buffer.numpy()), start)
        if got != end - start:
            raise SafetensorsError(self.path, f"short read of tensor {info.key!r}: got {got} of {end - start} "
                                              f"bytes at offset {start}; the file changed after it was opened")
        return buffer


def _byte_buffer(nbytes: int, dtype: torch.dtype, out: Optional[torch.Tensor]) -> torch.Tensor:
    if out is None:
        return torch.empty(nbytes, dtype=torch.uint8)
    if out.device.type != "cpu" or not out.is_contiguous() or out.dtype not in (torch.uint8, dtype):
        raise ValueError(f"out must be a contiguous CPU tensor of uint8 or {dtype}, "
                         f"not {out.dtype} on {out.device}")
    flat = out.reshape(-1).view(torch.uint8)
    if flat.numel() < nbytes:
        raise ValueError(f"out holds {flat.numel()} bytes, {nbytes} are needed")
    return flat[:nbytes]


def _open_regular(path: Path) -> int:
    try:
        fd = os.open(path, READ_FLAGS)
    except FileNotFoundError:
        raise ModelNotFound(str(path)) from None
    except IsADirectoryError:
        raise SafetensorsError(path, "is a folder, not a safetensors file") from None
    except OSError as e:
        raise SafetensorsError(path, f"cannot open: {e.strerror}") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise SafetensorsError(path, f"is {what}, not a safetensors file")
    return fd


def read_header(path) -> SafetensorsHeader:
    """The validated header of a .safetensors file (metadata, tensors, data_start, size); reads no tensor."""
    with SafetensorsFile(path) as f:
        return f.header


# --- dispatch ----------------------------------------------------------------------------

_PICKLE_PROBLEM = "pickled checkpoints are never loaded, because unpickling can run code hidden in the file"
_PICKLE_HINT = "convert it to .safetensors first, with a tool you trust, and use that file"


def looks_pickled(path) -> bool:
    """Whether a file starts like a zip archive (torch.save) or a pickle stream (protocol 2 to 5)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def open_model(path) -> TensorSource:
    """Open a model for reading, by what the path is.

    - ``*.safetensors`` file: SafetensorsFile.
    - ``*.safetensors.index.json``, or a folder holding exactly one: ShardedModel.
    - pickled checkpoints (.ckpt/.pt/.pth/.bin, or zip/pickle content under any name): UnsafeFormat.
    - any other file is tried as safetensors; one that fails reports "not a safetensors file".

    Raises:
        ModelNotFound, UnsafeFormat, SafetensorsError.
    """
    from .sharded import ShardedModel, find_index

    p = Path(path)
    if p.is_dir():
        return ShardedModel(find_index(p))
    if p.name.lower().endswith(INDEX_SUFFIX):
        return ShardedModel(p)
    if not p.exists():
        raise ModelNotFound(str(p))
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeFormat(p, _PICKLE_PROBLEM, _PICKLE_HINT)
    try:
        return SafetensorsFile(p)
    except SafetensorsError:
        if looks_pickled(p):
            raise UnsafeFormat(p, "holds pickled data, not safetensors; " + _PICKLE_PROBLEM, _PICKLE_HINT) from None
        raise
