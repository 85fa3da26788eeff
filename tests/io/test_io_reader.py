"""SafetensorsFile against the reference implementation, per dtype, plus ranges, buffers and threads."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import safetensors.torch
import torch

from lib_mecha.io import SafetensorsFile, SafetensorsWriter, read_header
from lib_mecha.io.dtypes import ELEMENT_SIZES, TORCH_DTYPES
from lib_mecha.io.positional import PORTABLE_IO

mapped_reads_only = pytest.mark.skipif(PORTABLE_IO, reason="about reads of mapped file pages, which the "
                                       "Windows paths (LIB_MECHA_PORTABLE_IO=1) never make")

# key names as they appear in real SD1 checkpoints
KEYS = (
    "model.diffusion_model.input_blocks.0.0.weight",
    "model.diffusion_model.input_blocks.0.0.bias",
    "first_stage_model.decoder.conv_in.weight",
    "cond_stage_model.transformer.text_model.embeddings.position_ids",
)
ALL_CODES = list(ELEMENT_SIZES)
NUMPY_TYPES = {"U16": np.uint16, "U32": np.uint32, "U64": np.uint64}


def torch_dtype_or_skip(code):
    if code not in TORCH_DTYPES:
        pytest.skip(f"torch {torch.__version__} has no dtype for {code}")
    return TORCH_DTYPES[code]


def reference_can_store(dtype) -> bool:
    try:
        safetensors.torch.save({"t": torch.zeros(1, dtype=dtype)})
        return True
    except Exception:
        return False


def samples(make, dtype):
    """Real key names; a matrix, a 0-dim tensor, an empty one and one with a zero inside its shape."""
    return {KEYS[0]: make(dtype, (4, 3), seed=1), KEYS[1]: make(dtype, (), seed=2),
            KEYS[2]: make(dtype, (0,)), KEYS[3]: make(dtype, (3, 0, 2))}


def write_ours(path, tensors, metadata=None):
    with SafetensorsWriter(path, [(k, v.dtype, v.shape) for k, v in tensors.items()], metadata) as w:
        for k, v in tensors.items():
            w.write(k, v)
    return path


@pytest.mark.parametrize("code", ALL_CODES)
def test_reader_matches_reference_loader(tmp_path, code, sample, assert_same):
    dtype = torch_dtype_or_skip(code)
    tensors = samples(sample, dtype)
    path = tmp_path / "ref.safetensors"
    if reference_can_store(dtype):
        safetensors.torch.save_file(tensors, path, metadata={"format": "pt"})
        expected = safetensors.torch.load_file(path)
    elif code in NUMPY_TYPES:  # safetensors.torch of this version lacks the wide unsigned ints
        safetensors.numpy.save_file({k: v.numpy() for k, v in tensors.items()}, path, metadata={"format": "pt"})
        expected = {k: torch.from_numpy(v) for k, v in safetensors.numpy.load_file(path).items()}
    else:
        pytest.skip(f"safetensors {safetensors.__version__} cannot write {code}, so there is no reference file")
    with SafetensorsFile(path) as f:
        assert f.metadata == {"format": "pt"}
        assert set(f.tensors) == set(tensors)
        for key, value in expected.items():
            info = f.tensors[key]
            assert (info.code, info.dtype, info.shape) == (code, dtype, tuple(value.shape))
            assert_same(f.read(key), value, key)
            assert_same(f.read(key), tensors[key], key)


@pytest.mark.parametrize("code", ALL_CODES)
def test_writer_output_opens_in_reference_loader(tmp_path, code, sample, assert_same):
    dtype = torch_dtype_or_skip(code)
    tensors = samples(sample, dtype)
    path = write_ours(tmp_path / "ours.safetensors", tensors, {"recipe": "weighted_sum ü", "format": "pt"})
    if reference_can_store(dtype):
        loaded = safetensors.torch.load_file(path)
        with safetensors.safe_open(str(path), framework="pt") as f:
            assert f.metadata() == {"recipe": "weighted_sum ü", "format": "pt"}
            assert list(f.keys()) == sorted(tensors)
            assert_same(f.get_tensor(KEYS[1]), tensors[KEYS[1]])
    elif code in NUMPY_TYPES:
        loaded = {k: torch.from_numpy(v) for k, v in safetensors.numpy.load_file(path).items()}
    else:
        pytest.skip(f"safetensors {safetensors.__version__} cannot read {code}")
    assert set(loaded) == set(tensors)
    for key, value in tensors.items():
        assert_same(loaded[key], value, key)


@pytest.mark.parametrize("code", ALL_CODES)
def test_round_trip_and_bytes_on_disk(tmp_path, code, sample, assert_same, raw_bytes):
    """Every dtype torch has (the reference cannot check all fp8 kinds): our writer, our reader, and
    the bytes in the file read independently of both."""
    dtype = torch_dtype_or_skip(code)
    tensors = samples(sample, dtype)
    path = write_ours(tmp_path / "rt.safetensors", tensors, {"k": "v"})
    blob = path.read_bytes()
    length = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + length])
    with SafetensorsFile(path) as f:
        for key, value in tensors.items():
            begin, end = header[key]["data_offsets"]
            assert header[key]["dtype"] == code
            assert blob[8 + length + begin:8 + length + end] == raw_bytes(value)
            assert (f.tensors[key].start, f.tensors[key].end) == (8 + length + begin, 8 + length + end)
            assert f.tensors[key].nbytes == value.numel() * ELEMENT_SIZES[code]
            assert_same(f.read(key), value, key)


def test_header_attributes(tmp_path):
    tensors = {"b": torch.arange(6, dtype=torch.float16).reshape(2, 3), "a": torch.tensor(True)}
    path = write_ours(tmp_path / "m.safetensors", tensors, {"x": "1"})
    header = read_header(path)
    assert header.metadata == {"x": "1"}
    assert list(header.tensors) == ["b", "a"]  # header order is kept
    assert header.size == path.stat().st_size
    assert header.data_start % 8 == 0
    b = header.tensors["b"]
    assert (b.code, b.shape, b.numel, b.nbytes, b.itemsize) == ("F16", (2, 3), 6, 12, 2)
    assert (b.start, b.end) == (header.data_start, header.data_start + 12)
    with SafetensorsFile(path) as f:
        assert len(f) == 2 and "a" in f and list(f) == ["b", "a"] and f.size == header.size
        assert repr(f).endswith("2 tensors)")
    assert repr(f).endswith("closed)")


def test_read_range_slices(tmp_path):
    full = torch.arange(24, dtype=torch.float32).reshape(4, 6) * 1.5
    path = write_ours(tmp_path / "r.safetensors", {"w": full, "i": torch.arange(10, dtype=torch.int16)})
    flat = full.reshape(-1)
    with SafetensorsFile(path) as f:
        for start, end in [(0, 24), (0, 1), (5, 13), (23, 24), (7, 7), (24, 24)]:
            part = f.read_range("w", start, end)
            assert part.dtype == torch.float32 and part.shape == (end - start,)
            assert torch.equal(part, flat[start:end])
        assert torch.equal(f.read_range("i", 3, 9), torch.arange(3, 9, dtype=torch.int16))
        for bad in [(-1, 2), (3, 2), (0, 25), (0.0, 2)]:
            with pytest.raises(ValueError, match=r"is not inside 'w' \(24 elements\)"):
                f.read_range("w", *bad)


def test_out_buffers_are_reused(tmp_path):
    w = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    path = write_ours(tmp_path / "o.safetensors", {"w": w})
    with SafetensorsFile(path) as f:
        raw = torch.zeros(100, dtype=torch.uint8)
        got = f.read("w", out=raw)
        assert torch.equal(got, w) and got.data_ptr() == raw.data_ptr()
        typed = torch.zeros(8, dtype=torch.bfloat16)
        part = f.read_range("w", 2, 8, out=typed)
        assert torch.equal(part, w.reshape(-1)[2:8]) and part.data_ptr() == typed.data_ptr()
        with pytest.raises(ValueError, match="out holds 4 bytes, 24 are needed"):
            f.read("w", out=torch.zeros(4, dtype=torch.uint8))
        with pytest.raises(ValueError, match="out must be a contiguous CPU tensor of uint8 or torch.bfloat16"):
            f.read("w", out=torch.zeros(12, dtype=torch.float32))
        with pytest.raises(ValueError, match="out must be a contiguous"):
            f.read("w", out=torch.zeros(4, 12, dtype=torch.uint8).t())


def test_missing_key_and_closed_file(tmp_path):
    path = write_ours(tmp_path / "k.safetensors", {"w": torch.ones(2)})
    f = SafetensorsFile(path)
    with pytest.raises(KeyError, match="'nope' is not in"):
        f.read("nope")
    f.close()
    f.close()  # idempotent
    with pytest.raises(ValueError, match="is closed"):
        f.read("w")


@pytest.mark.parametrize("positional", [True, False], ids=["pread", "seek-fallback"])
def test_concurrent_reads(tmp_path, positional):
    tensors = {f"model.diffusion_model.output_blocks.{i}.0.in_layers.2.weight": torch.full((64,), float(i))
               for i in range(16)}
    path = write_ours(tmp_path / "t.safetensors", tensors)
    errors = []
    with SafetensorsFile(path, positional=positional) as f:
        def worker(offset):
            try:
                for n in range(50):
                    key = list(tensors)[(n + offset) % 16]
                    if not torch.equal(f.read(key), tensors[key]):
                        errors.append(key)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(repr(e))
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


@mapped_reads_only
def test_view_range_gives_the_file_values_without_a_copy(tmp_path):
    full = torch.arange(5000, dtype=torch.float32).reshape(50, 100) / 7
    halves = torch.arange(3000, dtype=torch.float16)
    path = write_ours(tmp_path / "v.safetensors", {"w": full, "h": halves})
    flat = full.reshape(-1)
    with SafetensorsFile(path) as f:
        whole = f.view_range("w")
        assert whole.dtype == torch.float32 and torch.equal(whole, flat)
        for start, end in [(0, 1), (1021, 4097), (4999, 5000)]:
            assert torch.equal(f.view_range("w", start, end), flat[start:end])
        assert torch.equal(f.view_range("h", 1, 2999), halves[1:2999])
        assert f.view_range("w", 7, 7) is None  # nothing to map: callers read instead
        with pytest.raises(ValueError, match=r"is not inside 'w' \(5000 elements\)"):
            f.view_range("w", 10, 5001)
    with pytest.raises(ValueError, match="is closed"):
        f.view_range("w")


def test_view_range_of_an_unaligned_tensor_falls_back_to_reading(tmp_path):
    # one byte of padding puts the fp16 tensor at an odd offset: not viewable as fp16, still readable
    header = {"pad": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
              "w": {"dtype": "F16", "shape": [4], "data_offsets": [1, 9]}}
    text = json.dumps(header).encode()
    text += b" " * ((8 + len(text)) % 2)  # data starts at an even offset, so the fp16 tensor's is odd
    values = torch.tensor([1.0, -2.0, 3.5, 0.25], dtype=torch.float16)
    path = tmp_path / "odd.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"\x07" + values.numpy().tobytes())
    with SafetensorsFile(path) as f:
        assert f.tensors["w"].start % 2 == 1
        assert f.view_range("w") is None
        assert torch.equal(f.read("w"), values)
