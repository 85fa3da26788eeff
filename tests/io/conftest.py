"""Fixtures for the safetensors I/O tests: sample tensors per dtype and hand-made raw files."""
from __future__ import annotations

import json

import pytest
import torch

def make_sample(dtype: torch.dtype, shape=(2, 3), seed: int = 0) -> torch.Tensor:
    """Deterministic values of any safetensors dtype (fp8 through a float32 cast)."""
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g) * 4).to(dtype)
    high = 200 if dtype == torch.uint8 else 30000
    low = 0 if dtype in (torch.uint8, getattr(torch, "uint16", None), getattr(torch, "uint32", None),
                         getattr(torch, "uint64", None)) else -high // 2
    return torch.randint(low, high, shape, generator=g, dtype=torch.int64).to(dtype)


def bits(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor: exact comparison that treats NaN payloads and -0.0 as data."""
    if t.numel() == 0:
        return b""
    dense = torch.empty(t.numel(), dtype=t.dtype).copy_(t.reshape(-1))  # stride 1 even for expanded tensors
    return dense.view(torch.uint8).numpy().tobytes()


@pytest.fixture
def sample():
    return make_sample


@pytest.fixture
def assert_same():
    def check(a, b, what=""):
        assert a.dtype == b.dtype, what
        assert tuple(a.shape) == tuple(b.shape), what
        assert bits(a) == bits(b), what
    return check


@pytest.fixture
def raw_file(tmp_path):
    """make(header, data=b"", name="x.safetensors", length=None) -> path of a hand-built file.

    ``header`` is a dict (dumped as JSON) or raw bytes; ``length`` overrides the 8-byte prefix.
    """
    def make(header, data: bytes = b"", name: str = "x.safetensors", length=None):
        text = header if isinstance(header, bytes) else json.dumps(header).encode()
        prefix = (len(text) if length is None else length).to_bytes(8, "little")
        path = tmp_path / name
        path.write_bytes(prefix + text + data)
        return path
    return make


@pytest.fixture
def raw_bytes():
    return bits
