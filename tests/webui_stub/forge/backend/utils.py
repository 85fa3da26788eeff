"""backend/utils.py: ``load_torch_file(ckpt)`` starts with ``ckpt.lower()``, so a dict fails
(forge backend/utils.py:22-47)."""
import safetensors.torch
import torch


def load_torch_file(ckpt, safe_load=False, device=None):
    if ckpt.lower().endswith(".safetensors"):
        return safetensors.torch.load_file(ckpt, device=str(device or "cpu"))
    return torch.load(ckpt, map_location=device or "cpu", weights_only=True)


def set_attr_raw(obj, attr, value):
    *path, leaf = attr.split(".")
    for name in path:
        obj = getattr(obj, name)
    setattr(obj, leaf, value)


def get_attr(obj, attr):
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj
