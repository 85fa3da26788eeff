"""modules/devices.py: device and dtypes (A1111: fp16 unless --no-half; Forge: a shim over backend)."""
import torch

cpu = torch.device("cpu")
device = torch.device("cpu")
dtype = torch.float16
dtype_vae = torch.float16
dtype_unet = torch.float16
fp8 = False
gc_calls = []


def get_optimal_device():
    return device


def torch_gc():
    gc_calls.append(1)
