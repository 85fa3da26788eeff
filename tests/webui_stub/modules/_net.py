"""Tiny SD1-shaped networks for the stand-in: real key names, toy shapes.

``LAYOUT`` is the stand-in's "SD1 config" (what A1111's ``find_checkpoint_config`` would pick and
Forge's ``huggingface_guess`` would detect). Integer keys are buffers; the rest are parameters.
"""
from __future__ import annotations

import hashlib
from typing import Dict, Tuple

import torch

LAYOUT: Dict[str, Tuple[Tuple[int, ...], torch.dtype]] = {
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": ((16, 8), torch.float32),
    "cond_stage_model.transformer.text_model.embeddings.position_ids": ((1, 16), torch.int64),
    "cond_stage_model.transformer.text_model.final_layer_norm.weight": ((8,), torch.float32),
    "cond_stage_model.transformer.text_model.final_layer_norm.bias": ((8,), torch.float32),
    "first_stage_model.encoder.conv_in.weight": ((4, 3, 3, 3), torch.float32),
    "first_stage_model.decoder.conv_out.weight": ((3, 4, 3, 3), torch.float32),
    "first_stage_model.decoder.conv_out.bias": ((3,), torch.float32),
    "model.diffusion_model.input_blocks.0.0.weight": ((4, 4, 3, 3), torch.float32),
    "model.diffusion_model.input_blocks.0.0.bias": ((4,), torch.float32),
    "model.diffusion_model.out.2.weight": ((4, 4, 3, 3), torch.float32),
    "model.diffusion_model.out.2.bias": ((4,), torch.float32),
}


def random_checkpoint(seed: int, dtype=torch.float16) -> Dict[str, torch.Tensor]:
    """A complete stand-in SD1 checkpoint with seeded weights."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, (shape, dt) in LAYOUT.items():
        if dt.is_floating_point:
            out[key] = torch.randn(shape, generator=g).to(dtype)
        else:
            out[key] = torch.arange(shape[-1], dtype=dt).reshape(shape)
    return out


class ParamTree(torch.nn.Module):
    """A module whose parameters/buffers have exactly the given dotted names."""

    def __init__(self, tensors: Dict[str, torch.Tensor], persistent_ints: bool = True):
        super().__init__()
        for key, value in tensors.items():
            *path, leaf = key.split(".")
            node = self
            for part in path:
                if part not in node._modules:
                    node.add_module(part, torch.nn.Module())
                node = node._modules[part]
            if value.dtype.is_floating_point:
                node.register_parameter(leaf, torch.nn.Parameter(value, requires_grad=False))
            else:
                node.register_buffer(leaf, value, persistent=persistent_ints)


def layout_part(prefix: str, strip: str = "") -> Dict[str, Tuple[Tuple[int, ...], torch.dtype]]:
    return {k[len(strip):]: v for k, v in LAYOUT.items() if k.startswith(prefix)}


def fingerprint(*tensors_or_values) -> int:
    """A deterministic integer from tensors and plain values (what the fake sampler 'renders')."""
    h = hashlib.sha256()
    for t in tensors_or_values:
        if isinstance(t, torch.Tensor):
            if t.is_meta:
                raise NotImplementedError("Cannot copy out of meta tensor; no data!")
            h.update(t.detach().to(torch.float32).contiguous().numpy().tobytes())
        else:
            h.update(repr(t).encode())
    return int.from_bytes(h.digest()[:8], "little")


def render(width: int, height: int, value: int):
    """The 'image' of a generation: seeded noise from ``value``."""
    from PIL import Image
    g = torch.Generator().manual_seed(value % (2 ** 63))
    pixels = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")
