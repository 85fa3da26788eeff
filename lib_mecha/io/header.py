"""Parse and validate a safetensors header, trusting nothing in the file.

Layout (safetensors README, "Format"): an 8-byte little-endian header length N, N bytes of UTF-8
JSON starting with ``{`` (trailing spaces allowed), then the data buffer. The JSON maps each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the
data buffer) plus an optional ``__metadata__`` of strings. The offsets must tile the data buffer
exactly: no overlaps, no holes, nothing past its end.

Every failure is a SafetensorsError with a one-line problem naming the tensor or the number.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Dict, Tuple

import torch

from ..errors import SafetensorsError
from .dtypes import ELEMENT_SIZES, TORCH_DTYPES
from .positional import PositionalFile

#: largest header accepted; the format's reference implementation uses the same cap
MAX_HEADER_BYTES = 100_000_000

_MAYBE_TRUNCATED = "the file may be truncated, or of another format"
_U64 = 2 ** 64  # shapes and offsets are unsigned 64-bit numbers in the format


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: ``start``/``end`` are ABSOLUTE byte offsets in its file."""

    key: str
    dtype: torch.dtype
    code: str
    shape: Tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def itemsize(self) -> int:
        return ELEMENT_SIZES[self.code]


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header: metadata, tensors in header order, where data starts, the file size."""

    path: str
    metadata: Dict[str, str]
    tensors: Dict[str, TensorInfo]
    data_start: int
    size: int


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _short(value, limit: int = 60) -> str:
    """repr() cut to ``limit`` characters: hostile headers can hold megabytes in one field."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _is_u64(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _U64


def _byte_size(shape, itemsize: int):
    """numel * itemsize, or None past 2**64 (stops early: a hostile shape can have a million dims)."""
    if 0 in shape:
        return 0
    total = itemsize
    for dim in shape:
        total *= dim
        if total >= _U64:
            return None
    return total


def parse_header(path, reader: PositionalFile, size: int) -> SafetensorsHeader:
    """Read and validate the header of an open file of ``size`` bytes.

    Raises:
        SafetensorsError: the file is not safetensors, is damaged, or is hostile.
    """
    def fail(problem, hint=None):
        return SafetensorsError(path, problem, hint)

    if size < 8:
        raise fail(f"not a safetensors file: it has {size} bytes, fewer than the 8-byte header length",
                   _MAYBE_TRUNCATED)
    prefix = bytearray(8)
    if reader.read_into(memoryview(prefix), 0) != 8:
        raise fail("short read of the header length: the file changed while being opened")
    length = int.from_bytes(prefix, "little")
    if 8 + length > size:
        raise fail(f"not a safetensors file: header length {length} is larger than the file ({size} bytes)",
                   _MAYBE_TRUNCATED)
    if length > MAX_HEADER_BYTES:
        raise fail(f"not a safetensors file: header length {length} exceeds the limit of "
                   f"{MAX_HEADER_BYTES} bytes")
    raw = bytearray(length)
    if reader.read_into(memoryview(raw), 8) != length:
        raise fail("short read of the header: the file changed while being opened")
    header = _decode(raw, fail)
    metadata = _metadata(header.pop("__metadata__", None), fail)

    data_start = 8 + length
    data_size = size - data_start
    relative = {key: _entry(key, entry, fail) for key, entry in header.items()}
    _check_layout(relative, data_size, fail)
    tensors = {key: TensorInfo(key, TORCH_DTYPES[code], code, shape, data_start + begin, data_start + end)
               for key, (code, shape, begin, end) in relative.items()}
    return SafetensorsHeader(str(path), metadata, tensors, data_start, size)


def _decode(raw: bytearray, fail) -> dict:
    if not raw.startswith(b"{"):
        raise fail("not a safetensors file: the header does not start with '{'", _MAYBE_TRUNCATED)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"not a safetensors file: the header is not UTF-8 (bad byte at {e.start})") from None
    try:
        # a header that starts with '{' and parses is a JSON object
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as e:
        raise fail(f"the header names {_short(e.args[0])} twice") from None
    except json.JSONDecodeError as e:
        raise fail(f"not a safetensors file: the header is not valid JSON ({e.msg} at byte {e.pos})") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of 5000 digits, or [[[[...
        raise fail(f"not a safetensors file: the header cannot be read as JSON ({type(e).__name__})") from None


def _metadata(value, fail) -> Dict[str, str]:
    if value is None:  # absent, or null as serde writes for None
        return {}
    if not isinstance(value, dict):
        raise fail(f"__metadata__ must map strings to strings, but it is {_kind(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise fail(f"__metadata__ value of {_short(key)} is {_kind(item)}, not a string")
    return dict(value)


def _entry(key: str, entry, fail):
    if not isinstance(entry, dict):
        raise fail(f"tensor {_short(key)}: entry is {_kind(entry)}, not an object")
    for field in ("dtype", "shape", "data_offsets"):
        if field not in entry:
            raise fail(f"tensor {_short(key)}: entry has no {field!r}")
    code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(code, str):
        raise fail(f"tensor {_short(key)}: dtype must be a string, not {_short(code)}")
    if code not in ELEMENT_SIZES:
        raise fail(f"tensor {_short(key)} has unknown dtype {_short(code)}")
    if code not in TORCH_DTYPES:
        raise fail(f"tensor {_short(key)} has dtype {code}, which torch {torch.__version__} cannot represent",
                   "a newer torch may read it")
    if not isinstance(shape, list) or not all(_is_u64(d) for d in shape):
        raise fail(f"tensor {_short(key)}: shape must be a list of non-negative integers, not {_short(shape)}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_u64(o) for o in offsets)
            or offsets[0] > offsets[1]):
        raise fail(f"tensor {_short(key)}: data_offsets must be [begin, end] with 0 <= begin <= end, "
                   f"not {_short(offsets)}")
    begin, end = offsets
    need = _byte_size(shape, ELEMENT_SIZES[code])
    if need is None:
        raise fail(f"tensor {_short(key)}: shape {_short(shape)} is too large (2**64 bytes or more)")
    if need != end - begin:
        raise fail(f"tensor {_short(key)}: shape {_short(shape)} of {code} needs {need} bytes, "
                   f"but data_offsets [{begin}, {end}] span {end - begin}")
    return code, tuple(shape), begin, end


def _check_layout(relative: dict, data_size: int, fail) -> None:
    """The offsets must tile [0, data_size) exactly, in any order."""
    expected, previous = 0, None
    for key, (_, _, begin, end) in sorted(relative.items(), key=lambda item: (item[1][2], item[1][3])):
        if begin < expected:
            raise fail(f"tensors {_short(previous)} and {_short(key)} overlap: {_short(key)} starts at "
                       f"data byte {begin}, before {_short(previous)} ends at {expected}")
        if begin > expected:
            if begin >= data_size:
                raise fail(f"tensor {_short(key)}: data_offsets [{begin}, {end}] lie outside the data "
                           f"section ({data_size} bytes)")
            raise fail(f"hole in the data buffer: data bytes {expected} to {begin} before tensor "
                       f"{_short(key)} belong to no tensor")
        expected, previous = end, key
    if expected > data_size:
        raise fail(f"file is truncated: tensor {_short(previous)} ends at data byte {expected}, "
                   f"but the data section has only {data_size} bytes")
    if expected < data_size:
        raise fail(f"hole in the data buffer: the last {data_size - expected} data bytes belong to no tensor")
