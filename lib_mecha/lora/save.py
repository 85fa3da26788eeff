"""Low-rank factorisation of weight changes and writing them as a kohya LoRA file.

A ΔW of shape ``(out, in[, kh, kw])`` is factorised by SVD of its ``(out, in·kh·kw)`` matrix:
``up = U_r·√S_r`` (``(out, r[, 1, 1])``) and ``down = √S_r·V_rᵀ`` (``(r, in[, kh, kw])``), with
``alpha = r`` so the WebUI's scale ``alpha / r`` is 1. The rank is fixed, or the smallest that
keeps a fraction ``energy`` of the spectrum's energy (Σ s²), capped by ``rank``. It is never more
than the change's own rank: a rank-5 change saved at rank 8 stays rank 5.

Saved files use kohya's module names for the architecture (what the WebUI and Forge load):
``lora_unet_…`` in diffusers naming for SD1/SD2, in the network's own naming for SDXL, SD3 and
FLUX, and ``lora_te…`` for text encoders; a fused OpenCLIP ``in_proj_weight`` is written as its
q, k and v modules. The ``ss_*`` metadata kohya's tools write is filled in where it applies.
"""
from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..arch.base import Architecture
from ..errors import ParameterError
from ..io import SafetensorsWriter
from .matching import names_of
from .naming import Part, text_prefixes

SKIP_WORDS = ("token_embedding", "position_embedding", "positional_embedding")


@dataclass
class Factors:
    up: torch.Tensor
    down: torch.Tensor
    rank: int
    energy: float  # fraction of Σ s² kept


def factorise(delta: torch.Tensor, rank: Optional[int], energy: Optional[float] = None) -> Optional[Factors]:
    """SVD of ΔW to ``rank`` (or to the fraction ``energy`` of its energy, at most ``rank``; None:
    no cap); None for ΔW = 0."""
    d = delta.float()
    out = d.shape[0]
    m = d.reshape(out, -1)
    if not torch.any(m):
        return None
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    spectrum = s.square()
    total = float(spectrum.sum())
    # never keep directions that are numerically zero: a rank-5 change saved at rank 8 stays rank 5
    tol = float(s[0]) * max(m.shape) * torch.finfo(torch.float32).eps
    r = int((s > tol).sum()) if rank is None else min(rank, int((s > tol).sum()))
    if energy is not None:
        kept = torch.cumsum(spectrum, 0) / total
        r = min(r, int(torch.searchsorted(kept, torch.tensor(energy, dtype=kept.dtype)).item()) + 1)
    r = max(r, 1)
    root = s[:r].sqrt()
    up = u[:, :r] * root
    down = root[:, None] * vh[:r]
    if d.dim() == 4:
        up = up.reshape(out, r, 1, 1)
        down = down.reshape(r, *d.shape[1:])
    return Factors(up.contiguous(), down.contiguous(), r, float(spectrum[:r].sum()) / total)


def extractable(key: str, shape: Tuple[int, ...]) -> bool:
    """Weights a LoRA can hold: Linear and Conv weights, not embeddings or norms."""
    return len(shape) in (2, 4) and not any(w in key for w in SKIP_WORDS)


def is_conv(shape: Sequence[int]) -> bool:
    """A convolution with a kernel larger than 1×1 (a 1×1 convolution is a linear layer)."""
    return len(shape) == 4 and math.prod(shape[2:]) > 1


def rank_limit(shape: Sequence[int]) -> int:
    """The largest rank a weight's change can have: min(out, in·kernel)."""
    return min(shape[0], math.prod(shape[1:]))


def kohya_names(arch: Architecture) -> Dict[str, List[Tuple[str, Part]]]:
    """For each checkpoint key, the kohya module name(s) to save its ΔW under, with their rows."""
    native_unet = not arch.identifier.startswith(("sd1", "sd2"))
    by_key: Dict[str, List[Tuple[str, Part]]] = {}
    for name, parts in names_of(arch).items():
        for part in parts:
            by_key.setdefault(part.key, []).append((name, part))
    chosen: Dict[str, List[Tuple[str, Part]]] = {}
    for key, options in by_key.items():
        spec = arch.keys[key]
        if key.startswith("model.diffusion_model."):
            native = "lora_unet_" + key[len("model.diffusion_model."):].rsplit(".", 1)[0].replace(".", "_")
            whole = [(n, p) for n, p in options if p.rows is None]
            pick = [(n, p) for n, p in whole if (n == native) == native_unet]
            chosen[key] = pick[:1] or whole[:1] or options
        else:
            prefix = text_prefixes(arch, spec.component)[0] + "_"
            mine = [(n, p) for n, p in options if n.startswith(prefix)]
            whole = [(n, p) for n, p in mine if p.rows is None]
            chosen[key] = whole[:1] or sorted(mine, key=lambda np_: np_[1].rows or (0, 0, 0))
    return chosen


BASE_MODEL_VERSION = {"sd1-ldm": "sd_v1", "sd2-ldm": "sd_v2", "sdxl-sgm": "sdxl_base_v1-0", "flux-flux": "flux1",
                      "sd3-comfyui": "sd3", "sd3.5_large-comfyui": "sd3", "sd3.5_medium-comfyui": "sd3"}


@dataclass(frozen=True)
class Module:
    rank: int
    energy: float   # fraction of its ΔW's Σ s² kept
    conv: bool      # a convolution larger than 1×1


@dataclass
class LoraWriter:
    """Collects factorised modules, then writes one kohya LoRA file. ``add`` may be called from
    several threads at once (the factorisations run in parallel)."""

    architecture: Architecture
    dtype: torch.dtype = torch.float16
    tensors: Dict[str, torch.Tensor] = field(default_factory=dict)
    modules: List[Module] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, key: str, delta: torch.Tensor, rank: Optional[int], energy: Optional[float], names) -> None:
        """Factorise ``delta`` (the whole key's ΔW) under the module names chosen for ``key``."""
        found = []
        for name, part in names:
            span = part.row_range(delta.shape[0])
            piece = delta if span is None else delta[span[0]:span[1]]
            if part.swap_halves:
                a, b = piece.chunk(2, dim=0)
                piece = torch.cat((b, a), dim=0)
            f = factorise(piece, rank, energy)
            if f is not None:
                found.append((name, f, Module(f.rank, f.energy, is_conv(piece.shape))))
        with self._lock:
            for name, f, module in found:
                self.tensors[f"{name}.lora_up.weight"] = f.up.to(self.dtype)
                self.tensors[f"{name}.lora_down.weight"] = f.down.to(self.dtype)
                self.tensors[f"{name}.alpha"] = torch.tensor(float(f.rank), dtype=self.dtype)
                self.modules.append(module)

    @property
    def max_rank(self) -> int:
        return max((m.rank for m in self.modules), default=0)

    @property
    def min_energy(self) -> float:
        return min((m.energy for m in self.modules), default=1.0)

    def metadata(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        rank = max((m.rank for m in self.modules if not m.conv), default=0)
        conv = max((m.rank for m in self.modules if m.conv), default=0)
        te = any(k.startswith("lora_te") for k in self.tensors)
        unet = any(k.startswith("lora_unet") for k in self.tensors)
        meta = {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(rank),
            "ss_network_alpha": str(float(rank)),
            "ss_network_args": json.dumps({"conv_dim": str(conv), "conv_alpha": str(float(conv))}),
            "ss_v2": str(self.architecture.identifier.startswith("sd2")),
            "ss_base_model_version": BASE_MODEL_VERSION.get(self.architecture.identifier,
                                                            self.architecture.identifier),
            "ss_text_encoder_lr": "1" if te else "0",
            "ss_unet_lr": "1" if unet else "0",
            "mecha_architecture": self.architecture.identifier,
            "mecha_min_energy": f"{self.min_energy:.6f}",
        }
        meta.update(extra or {})
        return meta

    def write(self, path, overwrite: bool = False, metadata: Optional[Dict[str, str]] = None):
        if not self.tensors:
            raise ParameterError("save LoRA", None, "every change is zero: there is nothing to save")
        entries = [(k, t.dtype, tuple(t.shape)) for k, t in self.tensors.items()]
        with SafetensorsWriter(path, entries, self.metadata(metadata), overwrite=overwrite) as w:
            for k, t in self.tensors.items():
                w.write(k, t)
        return path


def parse_dtype(name: str) -> torch.dtype:
    table = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if name not in table:
        raise ParameterError("save LoRA", "dtype", f"{name!r} is not one of {sorted(table)}")
    return table[name]
