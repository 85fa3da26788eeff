"""Whole keys are written to a file on a writer thread while the workers go on (engine.writer.WriteBehind)."""
from __future__ import annotations

import threading
import time

import pytest
import torch
from engine_fixtures import save_layer_models
from safetensors.torch import load_file

import lib_mecha as mecha
import lib_mecha.compose as compose
from lib_mecha.engine import sinks
from lib_mecha.errors import OutputError

SHAPE = (2048, 640)  # over a million elements: key-sized memory is lent and reused between keys


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return save_layer_models(tmp_path_factory.mktemp("write-behind"), 3, SHAPE, layers=4)


def _recipe():
    a, b, c = (mecha.model(f"m{i}") for i in range(3))
    return compose.add_difference_ties(a, b, c, k=0.5, alpha=0.7)  # whole keys, not slices


@pytest.fixture
def slow_writes(monkeypatch):
    """FileSink.write sleeps first and records its thread: a buffer given back before its key is
    written would be overwritten by the next key meanwhile."""
    threads = []
    original = sinks.FileSink.write

    def slow(self, key, tensor):
        threads.append(threading.current_thread().name)
        time.sleep(0.05)
        return original(self, key, tensor)

    monkeypatch.setattr(sinks.FileSink, "write", slow)
    return threads


def test_whole_keys_are_written_on_the_writer_thread_with_the_sequential_result(models_dir, tmp_path, slow_writes):
    mecha.merge(_recipe(), tmp_path / "sequential.safetensors", threads=0, model_dirs=[models_dir])
    assert not any(name.startswith("mecha-write") for name in slow_writes)  # threads=0: written at once
    slow_writes.clear()
    mecha.merge(_recipe(), tmp_path / "pooled.safetensors", threads=2, model_dirs=[models_dir])
    assert slow_writes and all(name.startswith("mecha-write") for name in slow_writes), slow_writes
    expected = load_file(str(tmp_path / "sequential.safetensors"))
    got = load_file(str(tmp_path / "pooled.safetensors"))
    assert set(got) == set(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_a_failed_write_on_the_writer_thread_fails_the_merge_and_leaves_no_file(models_dir, tmp_path, monkeypatch):
    def failing(self, key, tensor):
        raise OutputError(f"cannot write {key!r}: No space left on device")

    monkeypatch.setattr(sinks.FileSink, "write", failing)
    output = tmp_path / "out.safetensors"
    with pytest.raises(OutputError, match="No space left"):
        mecha.merge(_recipe(), output, threads=2, model_dirs=[models_dir])
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file


def test_a_state_dict_is_filled_by_the_workers_themselves(models_dir, monkeypatch):
    """The in-memory sink keeps the tensors it is given: nothing to write behind."""
    threads = []
    original = sinks.DictSink.write

    def recording(self, key, tensor):
        threads.append(threading.current_thread().name)
        return original(self, key, tensor)

    monkeypatch.setattr(sinks.DictSink, "write", recording)
    got = mecha.merge(_recipe(), threads=2, model_dirs=[models_dir]).state_dict
    assert sorted(got) == ["layer0.weight", "layer1.weight", "layer2.weight", "layer3.weight", "small.bias"]
    assert threads and not any(name.startswith("mecha-write") for name in threads), threads
