"""Damaged, hostile and foreign files: each refused with one exact, one-line problem text."""
from __future__ import annotations

import json
import os
import random
import sys

import pytest
import torch

from lib_mecha.errors import ModelNotFound, SafetensorsError, UnsafeFormat
from lib_mecha.io import SafetensorsFile, open_model
from lib_mecha.io import dtypes as dtypes_module
from lib_mecha.io.positional import PORTABLE_IO

mapped_reads_only = pytest.mark.skipif(PORTABLE_IO, reason="about reads of mapped file pages, which the "
                                       "Windows paths (LIB_MECHA_PORTABLE_IO=1) never make")

W = "model.diffusion_model.out.2.weight"
B = "model.diffusion_model.out.2.bias"


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def problem(path) -> str:
    with pytest.raises(SafetensorsError) as info:
        SafetensorsFile(path).close()
    err = info.value
    assert type(err) is SafetensorsError
    assert err.path == str(path) and str(err).startswith(f"{path}: {err.problem}")
    assert "\n" not in str(err)
    return err.problem


# --- the first 8 bytes and the JSON text ------------------------------------------------

def test_fewer_than_8_bytes(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x10\x00\x00")
    assert problem(path) == "not a safetensors file: it has 3 bytes, fewer than the 8-byte header length"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    assert problem(path) == "not a safetensors file: it has 0 bytes, fewer than the 8-byte header length"


def test_header_length_larger_than_file(raw_file):
    path = raw_file(b'{"a":1}', length=1000)
    assert problem(path) == "not a safetensors file: header length 1000 is larger than the file (15 bytes)"


def test_header_length_over_the_cap(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:  # sparse: no real disk space
        f.write((100_000_001).to_bytes(8, "little") + b"{")
        f.truncate(8 + 100_000_001)
    assert problem(path) == ("not a safetensors file: header length 100000001 exceeds the limit of "
                             "100000000 bytes")


def test_header_not_an_object(raw_file):
    assert problem(raw_file(b'[{"dtype": "F32"}]')) == "not a safetensors file: the header does not start with '{'"


def test_header_with_leading_space(raw_file):
    assert problem(raw_file(b' {}')) == "not a safetensors file: the header does not start with '{'"


def test_bad_json(raw_file):
    path = raw_file(b'{"w": {"dtype": "F32",}}')
    assert problem(path) == ("not a safetensors file: the header is not valid JSON "
                             "(Expecting property name enclosed in double quotes at byte 22)")


def test_header_not_utf8(raw_file):
    assert problem(raw_file(b'{"\xff": 1}')) == "not a safetensors file: the header is not UTF-8 (bad byte at 2)"


def test_duplicate_key(raw_file):
    text = b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "w": {}}'
    assert problem(raw_file(text, bytes(8))) == "the header names 'w' twice"


def test_deep_nesting(raw_file):
    path = raw_file(b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert problem(path) == "not a safetensors file: the header cannot be read as JSON (RecursionError)"


def test_integer_of_thousands_of_digits(raw_file):
    path = raw_file(b'{"w": {"dtype": "U8", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 1]}}', b"\0")
    if hasattr(sys, "set_int_max_str_digits"):  # 3.11+: json refuses such integers itself
        expected = "not a safetensors file: the header cannot be read as JSON (ValueError)"
    else:
        expected = f"tensor 'w': shape must be a list of non-negative integers, not [{'9' * 53}..."
    assert problem(path) == expected


def test_trailing_spaces_are_allowed(raw_file):
    with SafetensorsFile(raw_file(b'{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}    ', b"\x07")) as f:
        assert f.read("w").tolist() == [7]


# --- __metadata__ --------------------------------------------------------------------------

def test_metadata_not_an_object(raw_file):
    assert problem(raw_file({"__metadata__": ["a"]})) == "__metadata__ must map strings to strings, but it is a list"


def test_metadata_value_not_a_string(raw_file):
    path = raw_file({"__metadata__": {"format": "pt", "steps": 3}})
    assert problem(path) == "__metadata__ value of 'steps' is a number, not a string"


def test_metadata_null_reads_as_empty(raw_file):
    with SafetensorsFile(raw_file({"__metadata__": None})) as f:
        assert f.metadata == {} and f.tensors == {}


# --- entries ------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ([1, 2], "tensor 'model.diffusion_model.out.2.weight': entry is a list, not an object"),
    ({"shape": [2], "data_offsets": [0, 8]}, "tensor 'model.diffusion_model.out.2.weight': entry has no 'dtype'"),
    ({"dtype": "F32", "shape": [2]}, "tensor 'model.diffusion_model.out.2.weight': entry has no 'data_offsets'"),
    (entry(dtype=32), "tensor 'model.diffusion_model.out.2.weight': dtype must be a string, not 32"),
    (entry(dtype="F7"), "tensor 'model.diffusion_model.out.2.weight' has unknown dtype 'F7'"),
    (entry(shape=(-2,)), "tensor 'model.diffusion_model.out.2.weight': shape must be a list of non-negative "
                         "integers, not [-2]"),
    (dict(entry(), shape=[True, 2]), "tensor 'model.diffusion_model.out.2.weight': shape must be a list of "
                                     "non-negative integers, not [True, 2]"),
    (dict(entry(), shape="2"), "tensor 'model.diffusion_model.out.2.weight': shape must be a list of "
                               "non-negative integers, not '2'"),
    (entry(offsets=(8, 0)), "tensor 'model.diffusion_model.out.2.weight': data_offsets must be [begin, end] "
                            "with 0 <= begin <= end, not [8, 0]"),
    (entry(offsets=(0, 4, 8)), "tensor 'model.diffusion_model.out.2.weight': data_offsets must be [begin, end] "
                               "with 0 <= begin <= end, not [0, 4, 8]"),
    (entry(offsets=(-8, 0)), "tensor 'model.diffusion_model.out.2.weight': data_offsets must be [begin, end] "
                             "with 0 <= begin <= end, not [-8, 0]"),
    (entry(shape=(3,)), "tensor 'model.diffusion_model.out.2.weight': shape [3] of F32 needs 12 bytes, "
                        "but data_offsets [0, 8] span 8"),
    (entry(dtype="F16"), "tensor 'model.diffusion_model.out.2.weight': shape [2] of F16 needs 4 bytes, "
                         "but data_offsets [0, 8] span 8"),
    (entry(shape=(2 ** 32, 2 ** 32)), "tensor 'model.diffusion_model.out.2.weight': shape [4294967296, "
                                      "4294967296] is too large (2**64 bytes or more)"),
], ids=["list", "no-dtype", "no-offsets", "dtype-int", "unknown-dtype", "negative-dim", "bool-dim",
        "shape-string", "begin-after-end", "three-offsets", "negative-offset", "shape-mismatch",
        "dtype-mismatch", "shape-overflow"])
def test_bad_entry(raw_file, value, expected):
    assert problem(raw_file({W: value}, bytes(8))) == expected


def test_dtype_this_torch_lacks(raw_file, monkeypatch):
    monkeypatch.delitem(dtypes_module.TORCH_DTYPES, "F8_E8M0")
    path = raw_file({W: entry(dtype="F8_E8M0", offsets=(0, 2))}, bytes(2))
    assert problem(path) == (f"tensor 'model.diffusion_model.out.2.weight' has dtype F8_E8M0, which torch "
                             f"{torch.__version__} cannot represent")


def test_long_keys_are_cut_in_messages(raw_file):
    key = "k" * 500
    text = problem(raw_file({key: entry(dtype="X")}, bytes(8)))
    assert text == f"tensor '{'k' * 56}... has unknown dtype 'X'"


# --- layout of the data buffer ----------------------------------------------------------

def test_offsets_outside_the_data(raw_file):
    path = raw_file({W: entry(offsets=(0, 8)), B: entry(offsets=(40, 48))}, bytes(16))
    assert problem(path) == ("tensor 'model.diffusion_model.out.2.bias': data_offsets [40, 48] lie outside "
                             "the data section (16 bytes)")


def test_overlapping_offsets(raw_file):
    path = raw_file({W: entry(shape=(4,), offsets=(0, 16)), B: entry(offsets=(8, 16))}, bytes(16))
    assert problem(path) == ("tensors 'model.diffusion_model.out.2.weight' and 'model.diffusion_model.out.2.bias' "
                             "overlap: 'model.diffusion_model.out.2.bias' starts at data byte 8, before "
                             "'model.diffusion_model.out.2.weight' ends at 16")


def test_hole_between_tensors(raw_file):
    path = raw_file({W: entry(offsets=(0, 8)), B: entry(offsets=(12, 20))}, bytes(20))
    assert problem(path) == ("hole in the data buffer: data bytes 8 to 12 before tensor "
                             "'model.diffusion_model.out.2.bias' belong to no tensor")


def test_hole_at_the_start(raw_file):
    path = raw_file({W: entry(offsets=(4, 12))}, bytes(12))
    assert problem(path) == ("hole in the data buffer: data bytes 0 to 4 before tensor "
                             "'model.diffusion_model.out.2.weight' belong to no tensor")


def test_hole_at_the_end(raw_file):
    path = raw_file({W: entry(offsets=(0, 8))}, bytes(11))
    assert problem(path) == "hole in the data buffer: the last 3 data bytes belong to no tensor"


def test_truncated_data(raw_file):
    path = raw_file({W: entry(offsets=(0, 8)), B: entry(offsets=(8, 16))}, bytes(13))
    assert problem(path) == ("file is truncated: tensor 'model.diffusion_model.out.2.bias' ends at data byte 16, "
                             "but the data section has only 13 bytes")


def test_offsets_need_not_follow_header_order(raw_file):
    path = raw_file({B: entry(offsets=(8, 16)), W: entry(offsets=(0, 8))},
                    torch.tensor([1.0, 2.0, 3.0, 4.0]).numpy().tobytes())
    with SafetensorsFile(path) as f:
        assert list(f.tensors) == [B, W]
        assert f.read(W).tolist() == [1.0, 2.0] and f.read(B).tolist() == [3.0, 4.0]


def test_file_shrinks_after_opening(tmp_path, raw_file):
    path = raw_file({W: entry(shape=(4,), offsets=(0, 16))}, bytes(16))
    with SafetensorsFile(path) as f:
        os.truncate(path, path.stat().st_size - 10)
        with pytest.raises(SafetensorsError) as info:
            f.read(W)
        start = f.tensors[W].start
    assert info.value.problem == (f"short read of tensor 'model.diffusion_model.out.2.weight': got 6 of 16 bytes "
                                  f"at offset {start}; the file changed after it was opened")


@mapped_reads_only
def test_file_shrinks_before_a_view_is_mapped(raw_file):
    text = json.dumps({W: entry(shape=(4,), offsets=(0, 16))}).encode()
    path = raw_file(text + b" " * (-(8 + len(text)) % 8), bytes(16))  # padded: the floats are mappable
    with SafetensorsFile(path) as f:
        os.truncate(path, path.stat().st_size - 10)
        start = f.tensors[W].start
        with pytest.raises(SafetensorsError) as info:
            f.view_range(W)
    assert info.value.problem == (f"cannot read bytes {start}..{start + 16}: the file is shorter now; "
                                  f"it changed after it was opened")


# --- foreign files and dispatch ---------------------------------------------------------

PICKLE_PROBLEM = "pickled checkpoints are never loaded, because unpickling can run code hidden in the file"


def test_pickled_ckpt_is_refused(tmp_path):
    path = tmp_path / "v1-5-pruned.ckpt"
    torch.save({"state_dict": {W: torch.zeros(2)}}, path)
    with pytest.raises(UnsafeFormat) as info:
        open_model(path)
    assert info.value.problem == PICKLE_PROBLEM
    assert info.value.hint == "convert it to .safetensors first, with a tool you trust, and use that file"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_pickle_renamed_to_safetensors_is_refused(tmp_path, legacy):
    path = tmp_path / "innocent.safetensors"
    torch.save({W: torch.zeros(2)}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeFormat) as info:
        open_model(path)
    assert info.value.problem == "holds pickled data, not safetensors; " + PICKLE_PROBLEM


def test_pickle_under_another_name_is_refused(tmp_path):
    path = tmp_path / "model.weights"
    torch.save({W: torch.zeros(2)}, path)
    with pytest.raises(UnsafeFormat):
        open_model(path)


def test_random_bytes_named_safetensors(tmp_path):
    data = random.Random(1234).randbytes(64)
    assert data[:2] != b"PK" and data[0] != 0x80  # not mistaken for a pickle
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    with pytest.raises(SafetensorsError) as info:
        open_model(path)
    assert type(info.value) is SafetensorsError
    length = int.from_bytes(data[:8], "little")
    assert info.value.problem == f"not a safetensors file: header length {length} is larger than the file (64 bytes)"
    assert info.value.hint == "the file may be truncated, or of another format"


def test_text_file_is_not_safetensors(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is no model at all\n")
    with pytest.raises(SafetensorsError) as info:
        open_model(path)
    assert info.value.problem.startswith("not a safetensors file: header length ")


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFound, match="model not found: .*nothing.safetensors"):
        open_model(tmp_path / "nothing.safetensors")
    with pytest.raises(ModelNotFound):
        SafetensorsFile(tmp_path / "nothing.safetensors")


def test_folder_is_not_a_file(tmp_path):
    assert problem(tmp_path) == "is a folder, not a safetensors file"


def test_safetensors_whose_length_bytes_look_like_pickle_still_opens(raw_file):
    """A header of 640 bytes starts the file with 0x80 0x02, the pickle protocol-2 opcode."""
    text = b'{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    path = raw_file(text + b" " * (640 - len(text)), b"\x05", name="model.weights")
    assert path.read_bytes()[:2] == b"\x80\x02"
    with open_model(path) as f:
        assert f.read("w").tolist() == [5]
