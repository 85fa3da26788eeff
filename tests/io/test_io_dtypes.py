"""The dtype table: both directions, element sizes against torch, refusals."""
from __future__ import annotations

import pytest
import torch

from lib_mecha.io import code_of, torch_dtype_of
from lib_mecha.io.dtypes import ELEMENT_SIZES, TORCH_DTYPES

EXPECTED = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "I32": "int32",
    "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16", "BF16": "bfloat16",
    "F32": "float32", "F64": "float64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu",
}


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_both_directions(code):
    dtype = getattr(torch, EXPECTED[code], None)
    if dtype is None:
        pytest.skip(f"torch {torch.__version__} has no torch.{EXPECTED[code]}")
    assert torch_dtype_of(code) is dtype
    assert code_of(dtype) == code
    assert ELEMENT_SIZES[code] == dtype.itemsize


def test_table_holds_only_what_torch_has():
    assert set(ELEMENT_SIZES) == set(EXPECTED)
    assert set(TORCH_DTYPES) == {c for c, name in EXPECTED.items() if hasattr(torch, name)}


def test_refusals():
    with pytest.raises(KeyError, match="unknown safetensors dtype 'F7'"):
        torch_dtype_of("F7")
    with pytest.raises(ValueError, match="torch.complex64 cannot be stored in safetensors"):
        code_of(torch.complex64)
