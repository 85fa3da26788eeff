"""A :class:`~.target.LiveModel` over a torch module whose state-dict names are checkpoint keys.

This is A1111's case (its ``LatentDiffusion`` carries the checkpoint's own names) and any
Python user's own module. Wrapper modules that hosts put around submodules (A1111's hijack:
``cond_stage_model.wrapped.``, ``token_embedding.wrapped.``) are seen through: each tensor is
also known by its name without the ``.wrapped`` parts.
"""
from __future__ import annotations

from typing import Collection, Dict, Mapping

import torch

WRAPPED = ".wrapped."


def unwrapped(name: str) -> str:
    while WRAPPED in name:
        name = name.replace(WRAPPED, ".")
    return name


class ModuleModel:
    """Parameters and persistent buffers of ``module``, by name; a key lands on the tensor of
    the same name. Every parameter must be covered by a merge; buffers (schedules, position ids)
    are written when the merge has them and kept otherwise, as a checkpoint loader keeps them."""

    def __init__(self, module: torch.nn.Module, label: str):
        self.module = module
        self.label = label

    def tensors(self) -> Mapping[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        for name, tensor in self.module.state_dict(keep_vars=True).items():
            out.setdefault(name, tensor)
            out.setdefault(unwrapped(name), tensor)
        return out

    def convert(self, key: str, value: torch.Tensor) -> Mapping[str, torch.Tensor]:
        return {key: value}

    def required(self, name: str, tensor: torch.Tensor) -> bool:
        return isinstance(tensor, torch.nn.Parameter)

    def before_write(self, names: Collection[str]) -> None:
        """Nothing to detach from a plain module."""

    def after_write(self) -> None:
        """Nothing to refresh for a plain module."""
