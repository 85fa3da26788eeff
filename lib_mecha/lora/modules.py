"""One module of a LoRA file: which algorithm it uses, and whether its tensors are consistent.

Checks run on shapes (and on the scalar ``alpha``), so a whole file is validated before any
large tensor is read. Every problem names the file and the module.
"""
from __future__ import annotations

import math
from typing import Mapping, Tuple, Union

import torch

from ..errors import SafetensorsError
from .algorithms import ALGORITHMS, Algorithm

ShapeOrTensor = Union[torch.Tensor, Tuple[int, ...]]


def _shape(v: ShapeOrTensor) -> Tuple[int, ...]:
    return tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v)


def _rows(v) -> int:
    s = _shape(v)
    return s[0] if s else 1


def _cols(v) -> int:
    s = _shape(v)
    return math.prod(s[1:]) if len(s) > 1 else 1


def detect_algorithm(module: str, tensors: Mapping[str, ShapeOrTensor], where: str) -> Algorithm:
    """The algorithm of one module, from the names of its tensors; checks that they fit together.

    Args:
        module: the module's name in the file (``lora_unet_down_blocks_0_attentions_0_proj_in``).
        tensors: tensor name within the module (``lora_up.weight``) → tensor or shape.
        where: the file, for messages.

    Raises:
        SafetensorsError: keys of two algorithms in one module, a missing factor, ranks that
            disagree, or a malformed alpha, with the module named.
    """
    names = set(tensors)
    found = [a for a in ALGORITHMS.values() if names & a.marker]
    if "weight" in names and "on_input" not in names and not found:
        found = [ALGORITHMS["ia3"]]
    if not found:
        raise SafetensorsError(where, f"LoRA module {module!r}: no known algorithm uses the tensors "
                                      f"{sorted(names)}")
    if len(found) > 1:
        labels = " and ".join(a.label for a in found)
        raise SafetensorsError(where, f"LoRA module {module!r} has keys of both {labels}; "
                                      "a module must use one algorithm")
    algo = found[0]
    _check(algo, module, tensors, where)
    return algo


def _fail(where, module, problem):
    raise SafetensorsError(where, f"LoRA module {module!r}: {problem}")


def _need(module, tensors, where, *names):
    missing = [n for n in names if n not in tensors]
    if missing:
        _fail(where, module, f"missing {', '.join(missing)}")


def _check(algo: Algorithm, module: str, t, where: str) -> None:
    if "alpha" in t:
        check_alpha(module, t["alpha"], where)
    if algo.name == "lora":
        _need(module, t, where, "lora_up.weight", "lora_down.weight")
        up, down = t["lora_up.weight"], t["lora_down.weight"]
        mid = t.get("lora_mid.weight")
        up_rank, down_rank = _cols(up), _rows(down)
        if mid is not None:
            ms = _shape(mid)
            if len(ms) < 2 or ms[0] != up_rank or ms[1] != down_rank:
                _fail(where, module, f"lora_mid {list(ms)} does not join up (rank {up_rank}) "
                                     f"and down (rank {down_rank})")
        elif up_rank != down_rank:
            _fail(where, module, f"up/down ranks disagree: lora_up {list(_shape(up))} has rank {up_rank}, "
                                 f"lora_down {list(_shape(down))} has rank {down_rank}")
    elif algo.name == "loha":
        _need(module, t, where, "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
        for i in (1, 2):
            a, b, core = t[f"hada_w{i}_a"], t[f"hada_w{i}_b"], t.get(f"hada_t{i}")
            if core is None and _cols(a) != _rows(b):
                _fail(where, module, f"hada_w{i}_a {list(_shape(a))} and hada_w{i}_b {list(_shape(b))} "
                                     "ranks disagree")
            if core is not None and (_rows(a), _rows(b)) != _shape(core)[:2]:
                _fail(where, module, f"hada_t{i} {list(_shape(core))} does not join its factors")
    elif algo.name == "lokr":
        if "lokr_w1" not in t:
            _need(module, t, where, "lokr_w1_a", "lokr_w1_b")
            if _cols(t["lokr_w1_a"]) != _rows(t["lokr_w1_b"]):
                _fail(where, module, "lokr_w1_a and lokr_w1_b ranks disagree")
        if "lokr_w2" not in t:
            _need(module, t, where, "lokr_w2_a", "lokr_w2_b")
            if "lokr_t2" in t:
                if (_rows(t["lokr_w2_a"]), _rows(t["lokr_w2_b"])) != _shape(t["lokr_t2"])[:2]:
                    _fail(where, module, "lokr_t2 does not join lokr_w2_a and lokr_w2_b")
            elif _cols(t["lokr_w2_a"]) != _rows(t["lokr_w2_b"]):
                _fail(where, module, "lokr_w2_a and lokr_w2_b ranks disagree")
    elif algo.name == "glora":
        _need(module, t, where, "a1.weight", "a2.weight", "b1.weight", "b2.weight")
    elif algo.name == "ia3":
        _need(module, t, where, "weight")
    elif algo.name == "full":
        _need(module, t, where, "diff")
    elif algo.name == "norm":
        _need(module, t, where, "w_norm")


def check_alpha(module: str, alpha, where: str) -> None:
    """alpha must be one finite number (a tensor holding one element)."""
    if isinstance(alpha, torch.Tensor):
        if alpha.numel() != 1 or alpha.dtype == torch.bool or alpha.is_complex():
            _fail(where, module, f"alpha is not a number (a {alpha.dtype} tensor of shape {list(alpha.shape)})")
        value = float(alpha.reshape(-1)[0].item())
        if not math.isfinite(value):
            _fail(where, module, f"alpha is not a number ({value})")
    elif _shape(alpha) not in ((), (1,)):
        _fail(where, module, f"alpha is not a number (shape {list(_shape(alpha))})")
