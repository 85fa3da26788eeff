"""Inputs of every floating dtype merge (computed in fp32); integer and bool buffers are copied."""
from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import save_file

import lib_mecha as mecha
from lib_mecha.progress_bar import ProgressBar

FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64] + [
    getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_inputs_of_each_float_dtype(tmp_path, dtype):
    x = torch.tensor([0.5, -1.0, 2.0, 0.25]).to(dtype)
    y = torch.tensor([1.5, 1.0, -2.0, 0.75]).to(dtype)
    flags = torch.tensor([True, False, True])
    counts = torch.tensor([1, 2, 3], dtype=torch.int32)
    save_file({"w": x, "flags": flags, "counts": counts}, str(tmp_path / "x.safetensors"))
    save_file({"w": y, "flags": ~flags, "counts": counts * 7}, str(tmp_path / "y.safetensors"))
    result = mecha.merge(mecha.weighted_sum(mecha.model("x"), mecha.model("y"), alpha=0.5),
                         model_dirs=[tmp_path], output_dtype="keep")
    out = result.state_dict
    assert out["w"].dtype == dtype
    assert torch.equal(out["w"], torch.lerp(x.float(), y.float(), 0.5).to(dtype))
    assert torch.equal(out["flags"], flags) and torch.equal(out["counts"], counts)  # the first input's, unchanged


def test_progress_bar_draws_count_and_eta():
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10)
    bar.update(5, 10, 3 << 20)
    bar.update(10, 10, 6 << 20)
    bar.close()
    text = stream.getvalue()
    assert "[#####.....] 5/10 keys" in text and "[##########] 10/10 keys" in text
    assert "ETA" in text and text.endswith("\n")
