"""Swapping a checkpoint's weights with its EMA copy (sd-mecha's ``exchange_ema``).

Resolved by key routing, never computed: every UNet key is read from its EMA twin and every
EMA key from its UNet twin, so the output has the same keys with the two sets exchanged. Keys
without a twin (text encoder, VAE, or a checkpoint that has no EMA) pass through unchanged.

The EMA naming is per architecture; sd1-ldm (the only one sd-mecha implements) keeps the EMA
UNet under ``model_ema.`` with the key's ``model.`` prefix dropped and its dots removed.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

from ..errors import ParameterError
from .registry import merge_method
from .spec import SAME, Tensor

# architecture id -> the EMA name of a key (None for keys without an EMA copy)
EMA_LAYOUTS: Dict[str, Callable[[str], Optional[str]]] = {}


def _sd1_ema_name(key: str) -> Optional[str]:
    if not key.startswith("model.diffusion_model."):
        return None
    return "model_ema." + key[len("model."):].replace(".", "")


EMA_LAYOUTS["sd1-ldm"] = _sd1_ema_name


_reverse_cache: Dict[str, tuple] = {}


def _reverse_index(arch) -> Dict[str, str]:
    """EMA key -> weight key, for one architecture table (built once per table)."""
    cached = _reverse_cache.get(arch.identifier)
    if cached is not None and cached[0] is arch:
        return cached[1]
    to_ema = EMA_LAYOUTS[arch.identifier]
    index = {}
    for key in arch.keys:
        ema = to_ema(key)
        if ema is not None:
            index[ema] = key
    _reverse_cache[arch.identifier] = (arch, index)
    return index


def twin_key(arch, key: str) -> Optional[str]:
    """The key ``key`` is exchanged with, or None when it has no twin."""
    to_ema = EMA_LAYOUTS[arch.identifier]
    ema = to_ema(key)
    if ema is not None:
        return arch.canonical(ema) or ema
    canonical = arch.canonical(key) or key
    return _reverse_index(arch).get(canonical)


def _route_exchange_ema(node, key, ctx):
    (model,) = node.args
    arch = ctx.architecture(model)
    if arch is None or arch.identifier not in EMA_LAYOUTS:
        known = ", ".join(sorted(EMA_LAYOUTS))
        found = "an unknown architecture" if arch is None else arch.identifier
        raise ParameterError("exchange_ema", "model", f"knows the EMA layout of {known} only, not of {found}")
    twin = twin_key(arch, key)
    if twin is not None:
        expr = ctx.compile(model, twin)
        if expr is not None:
            return expr
    return ctx.compile(model, key)


@merge_method(returns=SAME, label="Exchange EMA", category="logistics", route=_route_exchange_ema,
              help="Swaps the UNet weights with the EMA copy stored in training checkpoints (sd1-ldm).")
def exchange_ema(model=Tensor(SAME)):
    raise AssertionError("exchange_ema is resolved by its route; it never computes")
