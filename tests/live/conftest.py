"""Tiny SD1 checkpoints (real key names) for the live-merging tests."""
from __future__ import annotations

import pytest
from safetensors.torch import save_file

from lib_mecha.arch.demo import random_state_dict

import torch

POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"


def make_sd1(seed: int):
    sd = {k: v.half() if v.is_floating_point() else v
          for k, v in random_state_dict("sd1-ldm", seed, shape_divisor=16).items()}
    sd[POSITION_IDS] = torch.arange(77, dtype=torch.int64).reshape(1, 77)
    return sd


@pytest.fixture
def sd1_dir(tmp_path):
    """a, b and c.safetensors: tiny SD1 checkpoints (fp16) with different seeds."""
    for seed, name in enumerate("abc"):
        save_file(make_sd1(seed), str(tmp_path / f"{name}.safetensors"))
    return tmp_path
