"""Safetensors input and output: validated streaming reads, atomic streaming writes.

Pickled checkpoints are recognized and refused (``UnsafeFormat``); nothing here unpickles.
"""
from .dtypes import code_of as code_of, torch_dtype_of as torch_dtype_of
from .header import TensorInfo as TensorInfo, SafetensorsHeader as SafetensorsHeader
from .paths import safe_output_path as safe_output_path
from .reader import SafetensorsFile as SafetensorsFile, open_model as open_model, read_header as read_header
from .sharded import ShardedModel as ShardedModel
from .writer import SafetensorsWriter as SafetensorsWriter

__all__ = [
    "SafetensorsFile", "ShardedModel", "open_model", "read_header", "SafetensorsWriter", "safe_output_path",
    "code_of", "torch_dtype_of", "TensorInfo", "SafetensorsHeader",
]
