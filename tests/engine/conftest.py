"""Tiny but real SD1 checkpoints shared by the engine tests."""
from __future__ import annotations

import pytest
from engine_fixtures import make_sd1
from safetensors.torch import load_file, save_file


@pytest.fixture(scope="session")
def sd1_dir(tmp_path_factory):
    """A folder with a.safetensors, b.safetensors, c.safetensors (SD1 keys, different seeds)."""
    folder = tmp_path_factory.mktemp("sd1")
    for seed, name in enumerate("abc"):
        save_file(make_sd1(seed), str(folder / f"{name}.safetensors"))
    return folder


@pytest.fixture(scope="session")
def sd1_tensors(sd1_dir):
    return {name: load_file(str(sd1_dir / f"{name}.safetensors")) for name in "abc"}
