"""SafetensorsWriter: exact bytes, alignment, atomic commit, refusals, chunked and concurrent writes."""
from __future__ import annotations

import json
import os
import shutil
import threading
from collections import namedtuple

import pytest
import safetensors.torch
import torch

from lib_mecha.errors import OutputError, OutputExists
from lib_mecha.io import SafetensorsFile, SafetensorsWriter
from lib_mecha.io import temps

W = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
B = "model.diffusion_model.input_blocks.1.1.proj_in.bias"


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".mecha-tmp-" in p.name)


def entries_of(tensors):
    return [(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]


def test_exact_bytes(tmp_path):
    path = tmp_path / "golden.safetensors"
    with SafetensorsWriter(path, [("a", torch.float32, (2,)), ("b", torch.uint8, (3,))], {"k": "v"}) as w:
        w.write("b", torch.tensor([1, 2, 3], dtype=torch.uint8))
        w.write("a", torch.tensor([1.0, -2.0]))
    header = (b'{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
              b'"b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}')
    padded = header + b" " * (-(8 + len(header)) % 8)
    assert path.read_bytes() == (len(padded).to_bytes(8, "little") + padded
                                 + b"\x00\x00\x80\x3f\x00\x00\x00\xc0" + b"\x01\x02\x03")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("extra", range(8))
def test_data_start_is_8_byte_aligned(tmp_path, extra):
    path = tmp_path / f"a{extra}.safetensors"
    w = SafetensorsWriter(path, [(W, torch.float16, (2, 2))], {"note": "x" * extra})
    with w:
        w.write(W, torch.ones(2, 2, dtype=torch.float16))
    blob = path.read_bytes()
    length = int.from_bytes(blob[:8], "little")
    assert w.data_start == 8 + length and w.data_start % 8 == 0
    assert blob[8:8 + length].rstrip(b" ").endswith(b"}")
    assert w.offsets[W] == (w.data_start, w.data_start + 8) and w.size == len(blob)
    assert safetensors.torch.load_file(path)[W].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_header_keeps_the_given_order_and_metadata_first(tmp_path):
    path = tmp_path / "order.safetensors"
    tensors = {"z": torch.zeros(1), "a": torch.ones(2), "m": torch.full((3,), 2.0)}
    with SafetensorsWriter(path, entries_of(tensors), {"b": "1", "a": "2"}) as w:
        for k, v in tensors.items():
            w.write(k, v)
    blob = path.read_bytes()
    header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    assert list(header) == ["__metadata__", "z", "a", "m"]
    assert [header[k]["data_offsets"] for k in "zam"] == [[0, 4], [4, 12], [12, 24]]
    with SafetensorsFile(path) as f:
        assert f.metadata == {"b": "1", "a": "2"}


def test_chunked_writes_in_any_order(tmp_path):
    full = torch.arange(40, dtype=torch.bfloat16)
    path = tmp_path / "chunks.safetensors"
    with SafetensorsWriter(path, [(W, torch.bfloat16, (5, 8))]) as w:
        for start in (32, 0, 16, 8, 24, 8):  # a chunk written twice counts once
            w.write_range(W, start, full[start:start + 8])
    with SafetensorsFile(path) as f:
        assert torch.equal(f.read(W), full.reshape(5, 8))


def test_odd_tensors(tmp_path):
    """Non-contiguous, expanded, requiring grad, 0-dim, empty and bool tensors are written as values."""
    tensors = {
        "t": torch.arange(6.0).reshape(2, 3).t(),
        "e": torch.tensor(3.0).expand(1),
        "g": torch.ones(2, requires_grad=True),
        "s": torch.tensor(7, dtype=torch.int64),
        "z": torch.zeros(0, 4, dtype=torch.float8_e4m3fn),
        "b": torch.tensor([True, False, True]),
    }
    path = tmp_path / "odd.safetensors"
    with SafetensorsWriter(path, entries_of(tensors)) as w:
        for k, v in tensors.items():
            w.write(k, v)
    loaded = safetensors.torch.load_file(path)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
        assert torch.equal(loaded[k].float(), v.detach().float()), k


@pytest.mark.parametrize("positional", [True, False], ids=["pwrite", "seek-fallback"])
def test_concurrent_writes(tmp_path, positional):
    tensors = {f"model.diffusion_model.middle_block.{i}.weight": torch.full((256,), float(i)) for i in range(12)}
    path = tmp_path / "threads.safetensors"
    with SafetensorsWriter(path, entries_of(tensors), positional=positional) as w:
        threads = [threading.Thread(target=w.write, args=(k, v)) for k, v in tensors.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    loaded = safetensors.torch.load_file(path)
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


# --- refusals at construction -----------------------------------------------------------

def test_existing_target_is_refused_and_untouched(tmp_path):
    path = tmp_path / "merged.safetensors"
    path.write_bytes(b"precious")
    with pytest.raises(OutputExists) as info:
        SafetensorsWriter(path, [(W, torch.float32, (1,))])
    assert str(info.value) == (f"output already exists: {path} "
                               f"(choose another name, or ask for overwriting (--overwrite))")
    assert path.read_bytes() == b"precious" and leftovers(tmp_path) == []


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "merged.safetensors"
    path.write_bytes(b"old")
    with SafetensorsWriter(path, [(W, torch.float32, (1,))], overwrite=True) as w:
        w.write(W, torch.tensor([5.0]))
    assert safetensors.torch.load_file(path)[W].tolist() == [5.0]
    assert leftovers(tmp_path) == []


def test_missing_folder(tmp_path):
    with pytest.raises(OutputError) as info:
        SafetensorsWriter(tmp_path / "nope" / "m.safetensors", [])
    assert str(info.value) == f"folder does not exist: {tmp_path / 'nope'}"


def test_parent_is_a_regular_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError) as info:
        SafetensorsWriter(tmp_path / "file" / "m.safetensors", [])
    assert str(info.value) == f"not a folder: {tmp_path / 'file'}"


def test_target_is_a_folder(tmp_path):
    (tmp_path / "m.safetensors").mkdir()
    with pytest.raises(OutputError, match="output is a folder: "):
        SafetensorsWriter(tmp_path / "m.safetensors", [], overwrite=True)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: chmod cannot make a folder read-only for root")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="folder is not writable: "):
            SafetensorsWriter(folder / "m.safetensors", [])
    finally:
        folder.chmod(0o755)


def test_temp_file_cannot_be_created(tmp_path, monkeypatch):
    """Creation failures (read-only media, permissions, a clashing name) surface as OutputError."""
    monkeypatch.setattr(temps.secrets, "token_hex", lambda n: "f1xed0f1xed0")
    (tmp_path / f".m.safetensors.mecha-tmp-{temps.HOST_TAG}-{os.getpid()}-f1xed0f1xed0").mkdir()  # in the way
    with pytest.raises(OutputError) as info:
        SafetensorsWriter(tmp_path / "m.safetensors", [])
    assert str(info.value) == f"cannot write in folder {tmp_path}: File exists"
    assert not (tmp_path / "m.safetensors").exists()


def test_not_enough_space(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10_000, 9_990, 10))
    with pytest.raises(OutputError) as info:
        SafetensorsWriter(tmp_path / "m.safetensors", [(W, torch.float32, (64,))])
    assert str(info.value).startswith(f"not enough free space in {tmp_path}: the output needs ")
    assert str(info.value).endswith(" bytes, 10 are free")
    assert leftovers(tmp_path) == []


def test_programming_errors(tmp_path):
    with pytest.raises(TypeError, match="metadata must map str to str; 'steps' maps to int"):
        SafetensorsWriter(tmp_path / "m.safetensors", [], {"steps": 20})
    with pytest.raises(ValueError, match="tensor key 'w' is declared twice"):
        SafetensorsWriter(tmp_path / "m.safetensors", [("w", torch.float32, (1,)), ("w", torch.float32, (1,))])
    with pytest.raises(ValueError, match="cannot be stored in safetensors"):
        SafetensorsWriter(tmp_path / "m.safetensors", [("w", torch.complex64, (1,))])
    with pytest.raises(ValueError, match="invalid tensor key '__metadata__'"):
        SafetensorsWriter(tmp_path / "m.safetensors", [("__metadata__", torch.float32, (1,))])
    with pytest.raises(ValueError, match="must hold non-negative ints"):
        SafetensorsWriter(tmp_path / "m.safetensors", [("w", torch.float32, (-1,))])
    assert list(tmp_path.iterdir()) == []

    with SafetensorsWriter(tmp_path / "m.safetensors", [(W, torch.float16, (2, 2))], fsync=False) as w:
        with pytest.raises(ValueError, match=r"was declared torch.float16 \[2, 2\], got torch.float32 \[2, 2\]"):
            w.write(W, torch.zeros(2, 2))
        with pytest.raises(ValueError, match=r"was declared torch.float16 \[2, 2\], got torch.float16 \[4\]"):
            w.write(W, torch.zeros(4, dtype=torch.float16))
        with pytest.raises(ValueError, match="'other' was not declared"):
            w.write("other", torch.zeros(1))
        with pytest.raises(ValueError, match=r"elements \[3, 3\+2\) are not inside"):
            w.write_range(W, 3, torch.zeros(2, dtype=torch.float16))
        with pytest.raises(ValueError, match="needs a 1-D torch.float16 tensor"):
            w.write_range(W, 0, torch.zeros(1, 2, dtype=torch.float16))
        w.write(W, torch.zeros(2, 2, dtype=torch.float16))
    with pytest.raises(ValueError, match="is closed"):
        w.write(W, torch.zeros(2, 2, dtype=torch.float16))


# --- commit and abort ---------------------------------------------------------------------

def test_exception_inside_with_aborts(tmp_path):
    path = tmp_path / "m.safetensors"
    with pytest.raises(RuntimeError, match="merge failed"):
        with SafetensorsWriter(path, [(W, torch.float32, (2,))]) as w:
            w.write(W, torch.ones(2))
            assert leftovers(tmp_path) == [w.temp_path.name]
            assert w.temp_path.name.startswith(".m.safetensors.mecha-tmp-")
            raise RuntimeError("merge failed")
    assert list(tmp_path.iterdir()) == []


def test_abort_is_idempotent(tmp_path):
    w = SafetensorsWriter(tmp_path / "m.safetensors", [(W, torch.float32, (2,))])
    w.abort()
    w.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="already closed"):
        w.commit()


def test_commit_with_a_missing_key_leaves_nothing(tmp_path):
    path = tmp_path / "m.safetensors"
    w = SafetensorsWriter(path, [(W, torch.float32, (2,)), (B, torch.float32, (2,))])
    w.write(W, torch.ones(2))
    with pytest.raises(OutputError) as info:
        w.commit()
    assert str(info.value) == f"{B!r} was not fully written (0 of 8 bytes); nothing was saved to {path}"
    assert list(tmp_path.iterdir()) == []


def test_commit_with_a_partial_key_leaves_nothing(tmp_path):
    path = tmp_path / "m.safetensors"
    w = SafetensorsWriter(path, [(W, torch.float32, (4,))])
    w.write_range(W, 0, torch.ones(2))
    w.write_range(W, 3, torch.ones(1))
    assert w.missing() == [W]
    with pytest.raises(OutputError, match=r"was not fully written \(12 of 16 bytes\)"):
        w.commit()
    assert list(tmp_path.iterdir()) == []


def test_empty_key_must_still_be_written(tmp_path):
    w = SafetensorsWriter(tmp_path / "m.safetensors", [(W, torch.float32, (0,))])
    assert w.missing() == [W]
    w.write(W, torch.zeros(0))
    assert w.missing() == []
    assert w.commit() == tmp_path / "m.safetensors"


@pytest.mark.parametrize("hard_links", [True, False], ids=["link", "no-hard-links"])
def test_file_appearing_before_commit_is_not_clobbered(tmp_path, monkeypatch, hard_links):
    if not hard_links:
        def no_link(src, dst):
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / "m.safetensors"
    w = SafetensorsWriter(path, [(W, torch.float32, (1,))])
    w.write(W, torch.ones(1))
    path.write_bytes(b"someone else's")
    with pytest.raises(OutputExists):
        w.commit()
    assert path.read_bytes() == b"someone else's" and leftovers(tmp_path) == []


def test_commit_without_hard_links(tmp_path, monkeypatch):
    def no_link(src, dst):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / "m.safetensors"
    with SafetensorsWriter(path, [(W, torch.float32, (1,))]) as w:
        w.write(W, torch.ones(1))
    assert safetensors.torch.load_file(path)[W].tolist() == [1.0]
    assert leftovers(tmp_path) == []


def test_overwriting_an_open_input_keeps_the_reader_valid(tmp_path):
    """Merging into one of the inputs: the open reader still sees the old data after the rename."""
    path = tmp_path / "m.safetensors"
    safetensors.torch.save_file({W: torch.ones(4)}, path)
    with SafetensorsFile(path) as old:
        with SafetensorsWriter(path, [(W, torch.float32, (4,))], overwrite=True) as w:
            w.write(W, old.read(W) * 3)
        assert old.read(W).tolist() == [1.0] * 4
    assert safetensors.torch.load_file(path)[W].tolist() == [3.0] * 4
