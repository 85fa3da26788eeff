"""The safetensors dtype codes and their torch dtypes, both ways.

The format knows more codes than some torch builds can represent (the fp8 family and the wide
unsigned integers arrived in different torch releases), so the torch side of the table only holds
the dtypes this torch has. ``ELEMENT_SIZES`` covers every code the format defines, so a header can
be checked even when its dtype cannot be loaded.
"""
from __future__ import annotations

from typing import Dict

import torch

# code -> (torch attribute name, bytes per element), in the order the format lists them.
_FORMAT_CODES = (
    ("BOOL", "bool", 1),
    ("U8", "uint8", 1),
    ("I8", "int8", 1),
    ("I16", "int16", 2),
    ("U16", "uint16", 2),
    ("I32", "int32", 4),
    ("U32", "uint32", 4),
    ("I64", "int64", 8),
    ("U64", "uint64", 8),
    ("F16", "float16", 2),
    ("BF16", "bfloat16", 2),
    ("F32", "float32", 4),
    ("F64", "float64", 8),
    ("F8_E4M3", "float8_e4m3fn", 1),
    ("F8_E5M2", "float8_e5m2", 1),
    ("F8_E4M3FNUZ", "float8_e4m3fnuz", 1),
    ("F8_E5M2FNUZ", "float8_e5m2fnuz", 1),
    ("F8_E8M0", "float8_e8m0fnu", 1),
)

#: bytes per element of every code the format defines (whether or not torch has the dtype)
ELEMENT_SIZES: Dict[str, int] = {code: size for code, _, size in _FORMAT_CODES}

#: code -> torch dtype, for the dtypes this torch build has
TORCH_DTYPES: Dict[str, torch.dtype] = {
    code: getattr(torch, name) for code, name, _ in _FORMAT_CODES if isinstance(getattr(torch, name, None), torch.dtype)
}

_CODES: Dict[torch.dtype, str] = {dtype: code for code, dtype in TORCH_DTYPES.items()}


def is_known(code: str) -> bool:
    """Whether ``code`` is a dtype code of the safetensors format (torch may still lack it)."""
    return code in ELEMENT_SIZES


def code_of(dtype: torch.dtype) -> str:
    """The safetensors code of a torch dtype, e.g. ``torch.bfloat16 -> "BF16"``.

    Raises:
        ValueError: the dtype has no safetensors code (complex, quantized, ...).
    """
    try:
        return _CODES[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"{dtype} cannot be stored in safetensors") from None


def torch_dtype_of(code: str) -> torch.dtype:
    """The torch dtype of a safetensors code, e.g. ``"F8_E4M3" -> torch.float8_e4m3fn``.

    Raises:
        KeyError: unknown code, or a code this torch build cannot represent. The reader checks
            codes itself and raises a SafetensorsError naming the tensor instead.
    """
    try:
        return TORCH_DTYPES[code]
    except (KeyError, TypeError):
        if is_known(code):
            raise KeyError(f"dtype {code} is not supported by torch {torch.__version__}") from None
        raise KeyError(f"unknown safetensors dtype {code!r}") from None


def element_size(code: str) -> int:
    """Bytes per element of a safetensors code (KeyError when unknown)."""
    return ELEMENT_SIZES[code]
