"""Helpers shared by the engine tests (imported by name: pytest puts this folder on sys.path)."""
from __future__ import annotations

import torch

from lib_mecha.arch.demo import random_state_dict

POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"


def make_sd1(seed: int, **kw):
    """A tiny SD1 state dict: real key names, shapes divided by 16, int64 position ids."""
    sd = random_state_dict("sd1-ldm", seed, shape_divisor=16, **kw)
    sd[POSITION_IDS] = torch.arange(77, dtype=torch.int64).reshape(1, 77)
    return sd


def float_keys(sd):
    return [k for k, t in sd.items() if t.is_floating_point()]
