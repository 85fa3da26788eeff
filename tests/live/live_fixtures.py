"""Helpers of the live-merging tests: a torch module standing in for a WebUI's running model."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
from safetensors.torch import load_file

import lib_mecha
from lib_mecha.host.base import MergeIdentity
from lib_mecha.live import LiveState, LiveTarget, Original
from lib_mecha.live.module import ModuleModel


class Tree(torch.nn.Module):
    """A module whose parameters (floats) and buffers (integers) carry exactly the given names."""

    def __init__(self, tensors: Dict[str, torch.Tensor], dtype=torch.float32):
        super().__init__()
        for key, value in tensors.items():
            *path, leaf = key.split(".")
            node = self
            for part in path:
                if part not in node._modules:
                    node.add_module(part, torch.nn.Module())
                node = node._modules[part]
            if value.is_floating_point():
                node.register_parameter(leaf, torch.nn.Parameter(value.to(dtype), requires_grad=False))
            else:
                node.register_buffer(leaf, value.clone())


class Live:
    """A running 'model' loaded from ``folder/<name>.safetensors``, with its target and state."""

    def __init__(self, folder: Path, name: str = "a", dtype=torch.float32, model_class=ModuleModel):
        self.folder = folder
        self.path = folder / f"{name}.safetensors"
        self.module = Tree(load_file(str(self.path)), dtype)
        self.target = LiveTarget(model_class(self.module, name))
        self.state = LiveState()
        self.state.attach(self.module, Original.of(self.path, name))

    def options(self, **changes):
        return lib_mecha.MergeOptions(model_dirs=(str(self.folder),), **changes)

    def snapshot(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}


def ident(text: str = "recipe") -> MergeIdentity:
    return MergeIdentity.from_recipe(text)


def same(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
