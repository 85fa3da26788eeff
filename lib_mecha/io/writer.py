"""Write a .safetensors file whose header is known before its first tensor.

The caller declares every key's dtype and shape up front, so the header and every offset are
fixed at construction. Tensors are then written at their offsets in any order, from any thread,
as they finish. The file lives under a temp name in the target folder until ``commit`` checks
that every byte was written and renames it into place; ``abort`` removes it. An interrupted
merge therefore never leaves a half-written file under the real name, and the temp files of a
merge that was killed are removed by the next writer into that folder (:mod:`.temps`).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import threading
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

from ..errors import OutputError, OutputExists
from .dtypes import ELEMENT_SIZES, code_of
from .paths import safe_output_path  # re-exported: the writer's companion
from .positional import CREATE_FLAGS, PositionalFile
from . import temps

__all__ = ["SafetensorsWriter", "build_header", "safe_output_path"]

Entry = Tuple[str, torch.dtype, Sequence[int]]


def build_header(entries: Iterable[Entry], metadata: Optional[Mapping[str, str]] = None):
    """The header bytes (length prefix excluded, space-padded so data starts 8-byte aligned) and
    each key's (dtype, shape, begin, end) relative to the data start, in the given order.

    Raises:
        ValueError: duplicate or reserved key, bad shape, dtype with no safetensors code.
        TypeError: a metadata key or value that is not a str.
    """
    header: Dict[str, object] = {}
    if metadata is not None:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"metadata must map str to str; {k!r} maps to {type(v).__name__}")
        header["__metadata__"] = dict(metadata)
    layout: Dict[str, Tuple[torch.dtype, Tuple[int, ...], int, int]] = {}
    offset = 0
    for key, dtype, shape in entries:
        if not isinstance(key, str) or key == "__metadata__":
            raise ValueError(f"invalid tensor key {key!r}")
        if key in layout:
            raise ValueError(f"tensor key {key!r} is declared twice")
        shape = tuple(shape)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"shape of {key!r} must hold non-negative ints, not {shape!r}")
        code = code_of(dtype)
        nbytes = math.prod(shape) * ELEMENT_SIZES[code]
        header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        layout[key] = (dtype, shape, offset, offset + nbytes)
        offset += nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return text + b" " * (-(8 + len(text)) % 8), layout


class _Coverage:
    """The byte spans of one key written so far, merged, so a rewritten chunk is not counted twice."""

    def __init__(self):
        self.spans: List[Tuple[int, int]] = []
        self.touched = False

    def add(self, start: int, end: int) -> None:
        self.touched = True
        merged: List[Tuple[int, int]] = []
        for s, e in sorted(self.spans + [(start, end)]):
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
            elif e > s:
                merged.append((s, e))
        self.spans = merged

    @property
    def covered(self) -> int:
        return sum(e - s for s, e in self.spans)


class SafetensorsWriter:
    """Stream tensors into a new .safetensors file at offsets fixed up front.

    Args:
        path: the final file. Its folder must exist and be writable.
        entries: ``(key, torch dtype, shape)`` for every tensor, in file order.
        metadata: ``__metadata__`` (str -> str), written first in the header.
        overwrite: replace an existing file; otherwise an existing file is never touched.
        fsync: flush the data to disk before the rename.

    Attributes:
        offsets: key -> (start, end), ABSOLUTE byte offsets in the file. data_start, size, temp_path.

    Thread safety: ``write``/``write_range`` may be called from several threads at once (positional
    writes). ``commit``/``abort`` must not race with writes.

    Contract: use it as a context manager (commit on normal exit, abort on exception), or call
    ``abort()`` in a ``finally``; ``__del__`` never cleans up.

    Raises (at construction):
        OutputError: missing folder, not a folder, not writable, not enough space.
        OutputExists: the file exists and ``overwrite`` is False.

    Example:
        >>> with SafetensorsWriter(out, [("w", torch.float16, (4, 4))], {"k": "v"}) as w:
        ...     w.write("w", torch.ones(4, 4, dtype=torch.float16))
    """

    def __init__(self, path, entries: Iterable[Entry], metadata: Optional[Mapping[str, str]] = None,
                 overwrite: bool = False, *, fsync: bool = True, positional: Optional[bool] = None):
        self.path = Path(path)
        self.overwrite = bool(overwrite)
        self.fsync = fsync
        header, layout = build_header(entries, metadata)
        self.data_start = 8 + len(header)
        self._layout = layout
        self.offsets: Dict[str, Tuple[int, int]] = {
            key: (self.data_start + begin, self.data_start + end) for key, (_, _, begin, end) in layout.items()}
        self.size = self.data_start + sum(end - begin for _, _, begin, end in layout.values())
        folder = _check_target(self.path, self.overwrite)
        temps.remove_stale_temps(folder)
        _check_space(folder, self.size)

        self.temp_path = temps.temp_path_for(self.path)
        try:
            fd = os.open(self.temp_path, CREATE_FLAGS, 0o666)
        except OSError as e:
            temps.finished(self.temp_path)
            raise OutputError(f"cannot write in folder {folder}: {e.strerror}") from e
        self._fd = fd
        self._lock = threading.Lock()
        # One positional write at a time: concurrent writes to one file queue on the inode's lock
        # in the kernel, where the waiter spins and takes the core from the other threads'
        # arithmetic; here it sleeps.
        self._write_lock = threading.Lock()
        self._coverage = {key: _Coverage() for key in layout}
        self._committed = False
        try:
            self._file = (PositionalFile(fd, writable=True) if positional is None
                          else PositionalFile(fd, writable=True, positional=positional))
            self._file.write_from(memoryview(len(header).to_bytes(8, "little") + header), 0)
            os.ftruncate(fd, self.size)
        except OSError as e:
            self.abort()
            raise OutputError(f"cannot write {self.temp_path}: {e.strerror}") from e
        except BaseException:
            self.abort()
            raise

    def __repr__(self) -> str:
        return f"SafetensorsWriter({str(self.path)!r}, {len(self._layout)} tensors)"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # --- writing ---------------------------------------------------------------------------

    def write(self, key: str, tensor: torch.Tensor) -> None:
        """Write the whole tensor of ``key``; dtype and shape must match the declaration (ValueError)."""
        dtype, shape, _, _ = self._entry(key)
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(f"{key!r} was declared {dtype} {list(shape)}, got {tensor.dtype} {list(tensor.shape)}")
        self._put(key, 0, tensor)

    def write_range(self, key: str, start_elem: int, tensor: torch.Tensor) -> None:
        """Write a 1-D ``tensor`` as elements ``[start_elem, start_elem + len)`` of the flattened ``key``."""
        dtype, shape, _, _ = self._entry(key)
        numel = math.prod(shape)
        if tensor.dtype != dtype or tensor.dim() != 1:
            raise ValueError(f"write_range of {key!r} needs a 1-D {dtype} tensor, got {tensor.dtype} "
                             f"{list(tensor.shape)}")
        if not (isinstance(start_elem, int) and 0 <= start_elem and start_elem + tensor.numel() <= numel):
            raise ValueError(f"elements [{start_elem}, {start_elem}+{tensor.numel()}) are not inside {key!r} "
                             f"({numel} elements)")
        self._put(key, start_elem * tensor.element_size(), tensor)

    def _entry(self, key: str):
        try:
            return self._layout[key]
        except KeyError:
            raise ValueError(f"{key!r} was not declared for {self.path}") from None

    def _put(self, key: str, byte_offset: int, tensor: torch.Tensor) -> None:
        if self._fd < 0:
            raise ValueError(f"writer for {self.path} is closed")
        data = _as_bytes(tensor)
        start = self.offsets[key][0] + byte_offset
        if data.numel():
            try:
                # .numpy() shares memory: the bytes go from the tensor to the file, uncopied
                with self._write_lock:
                    self._file.write_from(memoryview(data.numpy()), start)
            except OSError as e:
                raise OutputError(f"cannot write {key!r} to {self.temp_path}: {e.strerror}") from e
        with self._lock:
            self._coverage[key].add(byte_offset, byte_offset + data.numel())

    # --- finishing -------------------------------------------------------------------------

    def missing(self) -> List[str]:
        """Keys not (fully) written yet, in file order."""
        with self._lock:
            return [key for key, (_, _, begin, end) in self._layout.items()
                    if not self._coverage[key].touched or self._coverage[key].covered != end - begin]

    def commit(self) -> Path:
        """Check every key was fully written, then move the file into place; returns the path.

        On any failure the temp file is removed and nothing is left at ``path``.

        Raises:
            OutputError: a key was not fully written, or the file cannot be moved into place.
            OutputExists: ``path`` appeared meanwhile and ``overwrite`` is False (it is not replaced).
        """
        if self._fd < 0:
            raise ValueError(f"writer for {self.path} is already closed")
        try:
            missing = self.missing()
            if missing:
                key = missing[0]
                _, _, begin, end = self._layout[key]
                raise OutputError(f"{key!r} was not fully written ({self._coverage[key].covered} of "
                                  f"{end - begin} bytes); nothing was saved to {self.path}")
            fd, self._fd = self._fd, -1
            try:
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            self._publish()
        except OSError as e:
            self.abort()
            raise OutputError(f"cannot save {self.path}: {e.strerror}") from e
        except BaseException:
            self.abort()
            raise
        self._committed = True
        temps.finished(self.temp_path)
        if self.fsync:
            _sync_folder(self.path.parent)
        return self.path

    def _publish(self) -> None:
        if self.overwrite:
            try:
                temps.replace(self.temp_path, self.path)
            except PermissionError:
                # Windows: the old file is open or mapped elsewhere (a WebUI that loaded it, a viewer)
                raise OutputError(f"cannot replace {self.path}: another program holds it open; nothing was "
                                  f"saved", "close it there (or load another model), or save under another "
                                        "name") from None
            return
        # a hard link fails if the name exists, so a file that appeared meanwhile is never clobbered
        try:
            os.link(self.temp_path, self.path)
        except FileExistsError:
            raise OutputExists(self.path) from None
        except OSError:
            # no hard links on this filesystem (FAT, some network shares): check, then rename.
            # On Windows rename itself refuses an existing target.
            if os.path.lexists(self.path):
                raise OutputExists(self.path) from None
            try:
                os.rename(self.temp_path, self.path)
            except FileExistsError:
                raise OutputExists(self.path) from None
            return
        # the file is published; a second name that cannot go now is cleared by a later writer
        temps.remove(self.temp_path)

    def abort(self) -> None:
        """Close and remove the temp file; idempotent, and harmless after ``commit``."""
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        if not self._committed:
            # never raises (it must not mask the error being handled); what cannot be removed
            # now (Windows: a scanner still has it open) is cleared by a later writer
            temps.remove(self.temp_path)
            temps.finished(self.temp_path)


def _as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A 1-D uint8 CPU view of the tensor's bytes (copies only if on another device or not contiguous)."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    if t.numel() == 0:
        return torch.empty(0, dtype=torch.uint8)
    flat = t.reshape(-1)  # a view when the memory is already in order, else a contiguous copy
    if flat.stride(0) != 1:  # "contiguous" size-1 tensors may carry stride 0 (expand), which view rejects
        flat = torch.empty_like(flat, memory_format=torch.contiguous_format).copy_(flat)
    return flat.view(torch.uint8)


def _check_target(path: Path, overwrite: bool) -> Path:
    folder = path.parent
    if not folder.exists():
        raise OutputError(f"folder does not exist: {folder}")
    if not folder.is_dir():
        raise OutputError(f"not a folder: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"folder is not writable: {folder}")
    if path.is_dir():
        raise OutputError(f"output is a folder: {path}")
    if os.path.lexists(path) and not overwrite:
        raise OutputExists(path)
    return folder


def _check_space(folder: Path, size: int) -> None:
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return
    # total == 0: a pseudo filesystem that reports nothing useful; let the writes decide
    if usage.total and usage.free < size:
        raise OutputError(f"not enough free space in {folder}: the output needs {size} bytes, "
                          f"{usage.free} are free")


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); best effort, Windows cannot open folders."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
