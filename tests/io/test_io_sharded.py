"""Sharded models (index json + shards) and open_model's dispatch to them."""
from __future__ import annotations

import json

import pytest
import torch

from lib_mecha.errors import SafetensorsError
from lib_mecha.io import SafetensorsFile, SafetensorsWriter, ShardedModel, open_model

INDEX = "diffusion_pytorch_model.safetensors.index.json"
SHARD1 = "diffusion_pytorch_model-00001-of-00002.safetensors"
SHARD2 = "diffusion_pytorch_model-00002-of-00002.safetensors"
TENSORS = {
    "conv_in.weight": torch.arange(24, dtype=torch.float16).reshape(2, 3, 2, 2),
    "conv_in.bias": torch.tensor([1.0, 2.0], dtype=torch.float16),
    "time_embedding.linear_1.weight": torch.arange(8, dtype=torch.bfloat16).reshape(2, 4),
    "up_blocks.0.resnets.0.norm1.weight": torch.tensor([True, False]),
}
PLACEMENT = {"conv_in.weight": SHARD1, "conv_in.bias": SHARD1,
             "time_embedding.linear_1.weight": SHARD2, "up_blocks.0.resnets.0.norm1.weight": SHARD2}


def write_shard(path, tensors, metadata):
    with SafetensorsWriter(path, [(k, v.dtype, v.shape) for k, v in tensors.items()], metadata) as w:
        for k, v in tensors.items():
            w.write(k, v)


@pytest.fixture
def sharded(tmp_path):
    folder = tmp_path / "unet"
    folder.mkdir()
    for shard, meta in ((SHARD1, {"format": "pt", "part": "1"}), (SHARD2, {"part": "2"})):
        write_shard(folder / shard, {k: v for k, v in TENSORS.items() if PLACEMENT[k] == shard}, meta)
    index = {"metadata": {"total_size": 68}, "weight_map": dict(sorted(PLACEMENT.items()))}
    (folder / INDEX).write_text(json.dumps(index))
    return folder


def write_index(folder, weight_map):
    (folder / INDEX).write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize("via", ["folder", "index"])
def test_read_every_key(sharded, via):
    with open_model(sharded if via == "folder" else sharded / INDEX) as model:
        assert isinstance(model, ShardedModel)
        assert model.path == sharded / INDEX
        assert list(model.tensors) == sorted(PLACEMENT)
        assert [s.path.name for s in model.shards] == [SHARD1, SHARD2]
        assert model.metadata == {"format": "pt", "part": "1"}
        assert model.index_metadata == {"total_size": 68}
        assert model.size == sum(s.size for s in model.shards)
        for key, value in TENSORS.items():
            assert model.shard_of(key).path.name == PLACEMENT[key]
            got = model.read(key)
            assert got.dtype == value.dtype and torch.equal(got, value)
        assert torch.equal(model.read_range("conv_in.weight", 5, 9), torch.arange(5, 9, dtype=torch.float16))
        shards = model.shards
    assert all("closed" in repr(s) for s in shards)


def test_single_file_still_opens(sharded):
    with open_model(sharded / SHARD1) as f:
        assert isinstance(f, SafetensorsFile) and set(f.tensors) == {"conv_in.weight", "conv_in.bias"}


def expect(path, problem):
    with pytest.raises(SafetensorsError) as info:
        open_model(path)
    assert info.value.problem == problem
    return info.value


def test_missing_shard(sharded):
    (sharded / SHARD2).unlink()
    err = expect(sharded, f"shard {SHARD2!r} (holding 'time_embedding.linear_1.weight') does not exist")
    assert err.path == str(sharded / INDEX)


def test_key_not_in_its_shard(sharded):
    write_index(sharded, {"conv_in.weight": SHARD2})
    expect(sharded, f"weight_map puts 'conv_in.weight' in {SHARD2!r}, but that shard has no such tensor")


@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd"])
def test_shard_outside_the_folder(sharded, name):
    write_index(sharded, {"conv_in.weight": name})
    expect(sharded, f"weight_map puts 'conv_in.weight' in {name!r}, which is outside the model folder")


def test_every_shard_is_validated(sharded):
    (sharded / SHARD2).write_bytes(b"\x01\x00")
    err = expect(sharded, "not a safetensors file: it has 2 bytes, fewer than the 8-byte header length")
    assert err.path == str(sharded / SHARD2)


def test_bad_index(sharded):
    (sharded / INDEX).write_text("{not json")
    expect(sharded, "index is not valid JSON (Expecting property name enclosed in double quotes at byte 1)")
    (sharded / INDEX).write_text('{"metadata": {}}')
    expect(sharded, 'index has no "weight_map" object mapping tensor names to shard files')
    (sharded / INDEX).write_text('{"weight_map": {"conv_in.weight": 3}}')
    expect(sharded, "weight_map value of 'conv_in.weight' is not a shard file name")


def test_folder_without_or_with_several_indexes(sharded, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    expect(empty, "folder holds no *.safetensors.index.json, so it is not a sharded safetensors model")
    (sharded / "other.safetensors.index.json").write_text("{}")
    expect(sharded, f"folder holds several index files ({INDEX}, other.safetensors.index.json)")
