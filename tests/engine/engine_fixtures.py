"""Helpers shared by the engine tests (imported by name: pytest puts this folder on sys.path)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from lib_mecha.arch.demo import random_state_dict

POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"


def make_sd1(seed: int, **kw):
    """A tiny SD1 state dict: real key names, shapes divided by 16, int64 position ids."""
    sd = random_state_dict("sd1-ldm", seed, shape_divisor=16, **kw)
    sd[POSITION_IDS] = torch.arange(77, dtype=torch.int64).reshape(1, 77)
    return sd


def float_keys(sd):
    return [k for k, t in sd.items() if t.is_floating_point()]


def save_layer_models(folder: Path, count: int, shape, layers: int, small_bias: bool = True) -> Path:
    """``m0.safetensors`` ... in ``folder``: ``layers`` fp16 keys ``layer{j}.weight`` of ``shape``
    (plus a 100-element ``small.bias``), seeded by the model's number."""
    for i in range(count):
        g = torch.Generator().manual_seed(i)
        sd = {f"layer{j}.weight": torch.randn(shape, generator=g).to(torch.float16) for j in range(layers)}
        if small_bias:
            sd["small.bias"] = torch.randn(100, generator=g).to(torch.float16)
        save_file(sd, str(folder / f"m{i}.safetensors"))
    return folder
