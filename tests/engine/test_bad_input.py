"""Every bad input of the core issue: a one-line message naming the problem, and no output file."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

import lib_mecha as mecha
from lib_mecha.errors import (ArchitectureMismatch, MechaError, ModelNotFound, OutputError, OutputExists,
                              SafetensorsError, ShapeMismatch, UnsafeFormat)



def ws(*names, **kw):
    return mecha.weighted_sum(*(mecha.model(n) for n in names), **kw)


def assert_nothing_written(folder, name="out.safetensors"):
    leftovers = [p.name for p in folder.iterdir() if p.name == name or ".mecha-tmp-" in p.name]
    assert leftovers == []


def one_line(err: MechaError) -> str:
    text = err.format_message()
    assert "\n" not in text
    return text


@pytest.fixture()
def out_dir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def test_missing_input(sd1_dir, out_dir):
    with pytest.raises(ModelNotFound) as e:
        mecha.merge(ws("a", "nope"), out_dir / "out.safetensors", model_dirs=[sd1_dir])
    assert "model not found: nope" in one_line(e.value) and str(sd1_dir) in one_line(e.value)
    assert_nothing_written(out_dir)


def _write_raw(path, header: bytes, data: bytes = b"", length=None):
    length = len(header) if length is None else length
    path.write_bytes(struct.pack("<Q", length) + header + data)


@pytest.mark.parametrize("case,needle", [
    ("not_safetensors", "not a safetensors file"),
    ("truncated", "truncated"),
    ("header_too_long", "header length"),
    ("offsets_outside", "ends at data byte 16"),
    ("overlapping", "overlap"),
    ("unknown_dtype", "unknown dtype"),
])
def test_broken_files(sd1_dir, tmp_path, out_dir, case, needle):
    bad = tmp_path / "bad.safetensors"
    if case == "not_safetensors":
        bad.write_bytes(b"this is just text, not a model at all")
    elif case == "truncated":
        save_file({"x": torch.zeros(64)}, str(bad))
        bad.write_bytes(bad.read_bytes()[:-10])
    elif case == "header_too_long":
        _write_raw(bad, b'{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4, length=10**6)
    elif case == "offsets_outside":
        _write_raw(bad, b'{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', b"\0" * 8)
    elif case == "overlapping":
        header = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                  "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
        _write_raw(bad, json.dumps(header).encode(), b"\0" * 12)
    elif case == "unknown_dtype":
        _write_raw(bad, b'{"x":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}', b"\0")
    with pytest.raises(SafetensorsError) as e:
        mecha.merge(mecha.weighted_sum(mecha.model(str(bad)), mecha.model("a")), out_dir / "out.safetensors",
                    model_dirs=[sd1_dir])
    assert needle in one_line(e.value).lower()
    assert "bad.safetensors" in one_line(e.value)
    assert_nothing_written(out_dir)


def test_pickled_checkpoint_is_refused(sd1_dir, tmp_path, out_dir):
    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(2)}}, str(ckpt))
    with pytest.raises(UnsafeFormat) as e:
        mecha.merge(mecha.weighted_sum(mecha.model(str(ckpt)), mecha.model("a")), out_dir / "out.safetensors",
                    model_dirs=[sd1_dir])
    assert "pickle" in one_line(e.value).lower()
    assert_nothing_written(out_dir)


def test_inputs_of_different_architectures(sd1_dir, tmp_path, out_dir):
    other = tmp_path / "llm.safetensors"
    save_file({"model.layers.0.mlp.up_proj.weight": torch.zeros(4, 4)}, str(other))
    with pytest.raises(ArchitectureMismatch) as e:
        mecha.merge(mecha.weighted_sum(mecha.model("a"), mecha.model(str(other))), out_dir / "out.safetensors",
                    model_dirs=[sd1_dir])
    assert "a.safetensors is sd1-ldm" in one_line(e.value) and "llm.safetensors" in one_line(e.value)
    assert_nothing_written(out_dir)


def test_shapes_that_disagree_name_key_and_shapes(tmp_path, out_dir):
    save_file({"w": torch.zeros(2, 3), "v": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    save_file({"w": torch.zeros(3, 2), "v": torch.zeros(1)}, str(tmp_path / "y.safetensors"))
    with pytest.raises(ShapeMismatch) as e:
        mecha.merge(ws("x", "y"), out_dir / "out.safetensors", model_dirs=[tmp_path])
    text = one_line(e.value)
    assert "'w'" in text and "[2, 3]" in text and "[3, 2]" in text and "x.safetensors" in text
    assert_nothing_written(out_dir)


def test_existing_output_refused_unless_overwrite(sd1_dir, out_dir):
    target = out_dir / "out.safetensors"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExists) as e:
        mecha.merge(ws("a", "b"), target, model_dirs=[sd1_dir])
    assert "already exists" in one_line(e.value)
    assert target.read_bytes() == b"precious"
    mecha.merge(ws("a", "b"), target, model_dirs=[sd1_dir], overwrite=True)
    assert target.read_bytes() != b"precious"


def test_output_folder_missing_or_not_a_folder(sd1_dir, tmp_path):
    with pytest.raises(OutputError) as e:
        mecha.merge(ws("a", "b"), tmp_path / "nowhere" / "out.safetensors", model_dirs=[sd1_dir])
    assert "nowhere" in one_line(e.value)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        mecha.merge(ws("a", "b"), blocker / "out.safetensors", model_dirs=[sd1_dir])
    assert not (tmp_path / "nowhere").exists()


def test_generic_models_merge_by_common_keys(tmp_path):
    save_file({"shared": torch.ones(3), "only_x": torch.ones(2)}, str(tmp_path / "x.safetensors"))
    save_file({"shared": torch.zeros(3), "only_y": torch.ones(2)}, str(tmp_path / "y.safetensors"))
    result = mecha.merge(ws("x", "y", alpha=0.5), model_dirs=[tmp_path], output_dtype="fp32")
    assert list(result.state_dict) == ["shared"]
    assert torch.equal(result.state_dict["shared"], torch.full((3,), 0.5))
    assert sorted(s.key for s in result.skipped) == ["only_x", "only_y"]
    assert "missing in y.safetensors" in result.skipped_summary()


def test_failure_midway_leaves_no_file(sd1_dir, out_dir):
    from lib_mecha.methods import merge_method, unregister
    from lib_mecha.methods.spec import SAME, CurrentKey, Tensor

    @merge_method(name="test_explode_on_out", returns=SAME)
    def explode(a=Tensor(SAME), key=CurrentKey()):
        if key.startswith("model.diffusion_model.out"):
            raise RuntimeError("boom")
        return a
    try:
        with pytest.raises(MechaError) as e:
            mecha.merge(explode(mecha.model("a")), out_dir / "out.safetensors", model_dirs=[sd1_dir])
        assert "test_explode_on_out failed on key 'model.diffusion_model.out" in one_line(e.value)
        assert_nothing_written(out_dir)
    finally:
        unregister("test_explode_on_out")


def test_cancel_leaves_no_file(sd1_dir, out_dir):
    import threading
    from lib_mecha.errors import MergeCancelled
    cancel = threading.Event()

    def progress(done, total, nbytes):
        if done == 10:
            cancel.set()
    seen = []
    with pytest.raises(MergeCancelled):
        mecha.merge(ws("a", "b"), out_dir / "out.safetensors", model_dirs=[sd1_dir], threads=0,
                    progress=lambda *a: (seen.append(a), progress(*a)), cancel=cancel)
    assert len(seen) == 10  # stopped within one key of the request
    assert_nothing_written(out_dir)
