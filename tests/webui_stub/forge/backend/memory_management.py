"""backend/memory_management.py: what the stand-in needs of Forge's memory manager."""
import torch

calls = []


def unload_all_models():
    calls.append("unload_all_models")


def soft_empty_cache(force=False):
    calls.append("soft_empty_cache")


def get_torch_device():
    return torch.device("cpu")
