"""LoRA / LyCORIS algorithms: the weight change ΔW one module of a LoRA file makes, at strength 1.

Each algorithm reads the tensors of one module (names relative to the module, such as
``lora_up.weight`` or ``hada_w1_a``) and returns the change to the target weight, shaped like
that weight, with the file's own scaling applied (``alpha / rank``, or an explicit ``scale``).
What a strength does is left to the caller: the WebUI's built-in Lora extension adds
``strength · ΔW`` to the weight, where ΔW is what these functions compute (for DoRA, OFT, IA3 and
GLoRA too, whose ΔW depends on the weight it is applied to), and so does :mod:`.bake`.

Facts followed (from the WebUI's ``extensions-builtin/Lora/network_*.py`` and LyCORIS):

* LoRA/LoCon: ``ΔW = up @ down · alpha/rank`` (rank = rows of ``down``); a Tucker ``lora_mid``
  core is contracted with up and down; no alpha means scale 1; a ``scale`` tensor overrides it.
* LoHa: ``ΔW = (w1a @ w1b) ⊙ (w2a @ w2b) · alpha/rank`` (rank = rows of ``w1b``), each factor
  rebuilt through its Tucker core ``hada_t1``/``hada_t2`` when present.
* LoKr: ``ΔW = kron(W1, W2) · alpha/rank`` where W1, W2 are full or products of factors, W2
  possibly through the Tucker core ``lokr_t2``; rank = rows of ``lokr_w2_b`` (else of
  ``lokr_w1_b``); with neither factorised the scale is 1.
* DoRA (``dora_scale`` with LoRA, LoHa or LoKr): ``W' = (W + s·ΔW) · m / ‖W + s·ΔW‖``, the norm
  taken per input column when ``dora_scale`` has the shape ``(1, in, …)`` (kohya, the WebUI) and
  per output row when it has the shape ``(out, 1, …)`` (LyCORIS); peft's magnitude vector
  (``dora_magnitude`` here, ``(out,)`` or ``(1, out, 1, 1)``) is always per output row; ΔW = W' − W.
* IA3: ``ΔW = W ⊙ w`` broadcast along the output rows, or the input columns when ``on_input``.
* GLoRA: ``ΔW = (W @ A + B) · alpha/rank`` with A, B low-rank products (both the current LyCORIS
  factor layout and the older one the WebUI expects are recognised by their shapes).
* OFT: ``W' = blockdiag(R)ᵀ W`` with ``R = (I + Q)(I − Q)⁻¹``, ``Q = B − Bᵀ`` rescaled to norm
  at most ``alpha · out`` when alpha > 0; BOFT: the butterfly product of such rotations; an
  optional ``rescale`` multiplies the rows. ΔW = W' − W.
* Full: ``ΔW = diff`` (and ``diff_b`` for the bias); norm: ``ΔW = w_norm``, ``Δb = b_norm``.

Where the WebUI deviates from the algorithm's definition (it ignores GLoRA's alpha, and a LyCORIS
OFT whose constraint alpha is 0 has no effect there), these functions follow the definition, as
LyCORIS computes it; ``docs`` of :func:`describe` name the difference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Mapping, Optional, Tuple

import torch

Tensors = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Algorithm:
    """One LoRA family: how it is recognised in a module and how its ΔW is computed.

    ``delta(t, base, shape)`` returns ΔW shaped ``shape``; ``base`` is the target weight, needed
    only when ``needs_base`` (it may be None otherwise). ``bias_delta(t)`` returns the change to
    the target's bias, or None.
    """

    name: str
    label: str
    keys: FrozenSet[str]        # every tensor name the algorithm may use
    marker: FrozenSet[str]      # names that identify the algorithm (any one suffices)
    delta: Callable
    bias_delta: Optional[Callable] = None
    base_dependent: Optional[Callable] = None  # t -> bool: whether ΔW depends on the target weight


def _f(t: torch.Tensor) -> torch.Tensor:
    """Compute in at least float32: half-precision products lose the small ΔW."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) or not t.is_floating_point() else t


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _fit(delta: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    """Shape ΔW like its target. Equal element counts reshape (a linear LoRA on a 1×1 conv);
    a narrower input dimension is zero-padded (a 4-channel LoRA on a 9-channel inpainting
    conv_in, as the WebUI does)."""
    shape = tuple(shape)
    if tuple(delta.shape) == shape:
        return delta
    if delta.numel() == math.prod(shape):
        return delta.reshape(shape)
    if len(shape) == 4 and delta.dim() == 4 and delta.shape[0] == shape[0] and delta.shape[2:] == shape[2:] \
            and delta.shape[1] < shape[1]:
        return torch.nn.functional.pad(delta, (0, 0, 0, 0, 0, shape[1] - delta.shape[1]))
    raise ValueError(f"ΔW of shape {list(delta.shape)} does not fit a weight of shape {list(shape)}")


def scalar(t: Tensors, name: str) -> Optional[float]:
    v = t.get(name)
    return None if v is None else float(v.reshape(-1)[0].item())


def scale_of(t: Tensors, rank: Optional[int]) -> float:
    """alpha / rank, as the WebUI computes it: an explicit ``scale`` wins; no alpha (or no rank)
    means 1. An alpha of 0 gives 0, exactly as there (the module then does nothing)."""
    explicit = scalar(t, "scale")
    if explicit is not None:
        return explicit
    alpha = scalar(t, "alpha")
    if alpha is None or not rank:
        return 1.0
    return alpha / rank


def tucker(core: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rebuild ``(out, in, *k)`` from a Tucker core ``(r1, r2, *k)``, ``a`` ``(r1, out)`` and
    ``b`` ``(r2, in)``."""
    return torch.einsum("i j ..., i p, j q -> p q ...", core, _flat(a), _flat(b))


# --- DoRA --------------------------------------------------------------------------------

def dora(updated: torch.Tensor, base: torch.Tensor, magnitude: torch.Tensor,
         per_out: Optional[bool] = None) -> torch.Tensor:
    """ΔW of a weight-decomposed module: ``updated`` is ``W + s·ΔW``; ``magnitude`` is the file's
    ``dora_scale``. The norm is taken per output row when ``per_out``, else along the axis
    ``dora_scale`` spans (``per_out=None``: told by its shape)."""
    m = _f(magnitude)
    w = updated
    out_dim, in_dim = w.shape[0], w.shape[1]
    if per_out is None:
        per_out = _spans_rows(m, out_dim, in_dim)
    if per_out:
        norm = _flat(w).norm(dim=1).reshape(out_dim, *([1] * (w.dim() - 1)))
        m = m.reshape(out_dim, *([1] * (w.dim() - 1)))
    else:
        norm = w.transpose(0, 1).reshape(in_dim, -1).norm(dim=1)
        norm = norm.reshape(1, in_dim, *([1] * (w.dim() - 2)))
        m = m.reshape(1, in_dim, *([1] * (w.dim() - 2)))
    return w * (m / norm) - base


def _spans_rows(m: torch.Tensor, out_dim: int, in_dim: int) -> bool:
    if m.dim() >= 2:
        return m.shape[0] == out_dim and m.shape[1] == 1 and not (out_dim == 1 and m.shape[1] == in_dim)
    return m.numel() == out_dim  # a bare vector: per output row


def _with_dora(t: Tensors, delta: torch.Tensor, base: Optional[torch.Tensor]) -> torch.Tensor:
    if not _has_dora(t):
        return delta
    if base is None:
        raise ValueError("DoRA needs the target weight")
    b = _f(base)
    if "dora_magnitude" in t:
        return dora(b + delta, b, t["dora_magnitude"], per_out=True)
    return dora(b + delta, b, t["dora_scale"])


def _has_dora(t: Tensors) -> bool:
    return "dora_scale" in t or "dora_magnitude" in t


# --- LoRA / LoCon ------------------------------------------------------------------------

def lora_rank(t: Tensors) -> int:
    return int(t["lora_down.weight"].shape[0])


def lora_delta(t: Tensors, base, shape) -> torch.Tensor:
    up, down = _f(t["lora_up.weight"]), _f(t["lora_down.weight"])
    mid = t.get("lora_mid.weight")
    if mid is not None:
        delta = tucker(_f(mid), _flat(up).T, down)
    else:
        delta = _flat(up) @ _flat(down)
        if down.dim() == 4:
            delta = delta.reshape(up.shape[0], down.shape[1], *down.shape[2:])
    delta = _fit(delta, shape) * scale_of(t, lora_rank(t))
    return _with_dora(t, delta, base)


def lora_bias_delta(t: Tensors):
    b = t.get("lora_up.bias")
    return None if b is None else _f(b) * scale_of(t, lora_rank(t))


# --- LoHa --------------------------------------------------------------------------------

def _hada_factor(t: Tensors, i: int) -> torch.Tensor:
    a, b = _f(t[f"hada_w{i}_a"]), _f(t[f"hada_w{i}_b"])
    core = t.get(f"hada_t{i}")
    if core is not None:
        return tucker(_f(core), a, b)
    return _flat(a) @ _flat(b)


def loha_delta(t: Tensors, base, shape) -> torch.Tensor:
    w1, w2 = _hada_factor(t, 1), _hada_factor(t, 2)
    if w1.numel() != w2.numel():
        raise ValueError("the two Hadamard factors differ in size")
    delta = _fit(w1 * w2.reshape(w1.shape), shape) * scale_of(t, int(t["hada_w1_b"].shape[0]))
    return _with_dora(t, delta, base)


# --- LoKr --------------------------------------------------------------------------------

def lokr_rank(t: Tensors) -> Optional[int]:
    if "lokr_w2_b" in t:
        return int(t["lokr_w2_b"].shape[0])
    if "lokr_w1_b" in t:
        return int(t["lokr_w1_b"].shape[0])
    return None


def lokr_delta(t: Tensors, base, shape) -> torch.Tensor:
    w1 = _f(t["lokr_w1"]) if "lokr_w1" in t else _flat(_f(t["lokr_w1_a"])) @ _flat(_f(t["lokr_w1_b"]))
    if "lokr_w2" in t:
        w2 = _f(t["lokr_w2"])
    elif "lokr_t2" in t:
        w2 = tucker(_f(t["lokr_t2"]), _f(t["lokr_w2_a"]), _f(t["lokr_w2_b"]))
    else:
        w2 = _flat(_f(t["lokr_w2_a"])) @ _flat(_f(t["lokr_w2_b"]))
    w1 = w1.reshape(w1.shape[0], w1.shape[1], *([1] * (w2.dim() - 2)))
    # a factorised conv W2 keeps its kernel in its columns, (b, d·kh·kw): the Kronecker product
    # is then the conv weight flattened after its first dimension, which _fit reshapes
    delta = _fit(torch.kron(w1, w2.contiguous()), shape)
    delta = delta * scale_of(t, lokr_rank(t))
    return _with_dora(t, delta, base)


# --- IA3 ---------------------------------------------------------------------------------

def ia3_delta(t: Tensors, base, shape) -> torch.Tensor:
    w = _f(t["weight"]).reshape(-1)
    b = _f(base)
    on_input = bool(scalar(t, "on_input") or 0)
    if on_input:
        return b * w.reshape(1, -1, *([1] * (b.dim() - 2)))
    return b * w.reshape(-1, *([1] * (b.dim() - 1)))


# --- GLoRA -------------------------------------------------------------------------------

def _glora_parts(t: Tensors, out_dim: int, in_dim: int):
    """(A as (in, in), B as (out, in·k)) for either factor layout.

    Current LyCORIS: a1 (in, r), a2 (r, in), b1 (out, r), b2 (r, in·k): A = a1 @ a2, B = b1 @ b2.
    Older (the WebUI's): a1 (r, in), a2 (in, r), b1 (r, in·k), b2 (out, r): A = a2 @ a1, B = b2 @ b1.
    """
    a1, a2, b1, b2 = (_flat(_f(t[k])) for k in ("a1.weight", "a2.weight", "b1.weight", "b2.weight"))
    if b1.shape[0] == out_dim and a1.shape[0] == in_dim and b2.shape[0] == b1.shape[1]:
        return a1 @ a2, b1 @ b2, int(a2.shape[0])
    return a2 @ a1, b2 @ b1, int(a1.shape[0])


def glora_rank(t: Tensors, shape) -> int:
    return _glora_parts(t, shape[0], shape[1])[2]


def glora_delta(t: Tensors, base, shape) -> torch.Tensor:
    b = _f(base)
    a, bb, rank = _glora_parts(t, b.shape[0], b.shape[1])
    wa = torch.einsum("o i ..., i j -> o j ...", b, a)
    delta = wa + _fit(bb, b.shape)
    return _fit(delta, shape) * scale_of(t, rank)


# --- OFT / BOFT --------------------------------------------------------------------------

def _blocks(t: Tensors) -> torch.Tensor:
    return _f(t["oft_blocks"] if "oft_blocks" in t else t["oft_diag"])


def cayley(blocks: torch.Tensor, constraint: float) -> torch.Tensor:
    """Orthogonal blocks ``(I + Q)(I − Q)⁻¹`` from the skew part Q of ``blocks``; Q is scaled
    down to norm ``constraint`` (over all blocks together) when it is larger and constraint > 0."""
    q = blocks - blocks.transpose(-1, -2)
    if constraint > 0:
        norm = torch.linalg.vector_norm(q) + 1e-8
        if norm > constraint:
            q = q * (constraint / norm)
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
    return (eye + q) @ torch.linalg.inv(eye - q)


def _rescaled(t: Tensors, rotated: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    r = t.get("rescale")
    if r is not None:
        rotated = rotated * _f(r).reshape(-1, *([1] * (rotated.dim() - 1)))
    return rotated - base


def oft_delta(t: Tensors, base, shape) -> torch.Tensor:
    blocks = _blocks(t)
    if blocks.dim() == 4:
        return boft_delta(t, base, shape)
    b = _f(base)
    n, size, _ = blocks.shape
    constraint = (scalar(t, "alpha") or 0.0) * b.shape[0]
    r = cayley(blocks, constraint)
    w = b.reshape(n, size, *b.shape[1:])
    rotated = torch.einsum("k n m, k n ... -> k m ...", r, w).reshape(b.shape)
    return _fit(_rescaled(t, rotated, b), shape)


def boft_delta(t: Tensors, base, shape) -> torch.Tensor:
    blocks = _blocks(t)
    b = _f(base)
    stages, _, size, _ = blocks.shape
    constraint = (scalar(t, "alpha") or 0.0) * b.shape[0]
    r = cayley(blocks, constraint)
    half = size // 2
    x = b
    for i in range(stages):
        k = (2 ** i) * half
        # butterfly stage i: regroup the rows so that each block mixes rows 2^i·b/2 apart
        x = x.unflatten(0, (-1, 2, k)).transpose(1, 2).flatten(0, 2).unflatten(0, (-1, size))
        x = torch.einsum("b i j, b j ... -> b i ...", r[i], x)
        x = x.flatten(0, 1).unflatten(0, (-1, k, 2)).transpose(1, 2).flatten(0, 2)
    return _fit(_rescaled(t, x, b), shape)


# --- full and norm diffs -----------------------------------------------------------------

def full_delta(t: Tensors, base, shape) -> torch.Tensor:
    return _fit(_f(t["diff"]), shape) * scale_of(t, None)


def full_bias_delta(t: Tensors):
    b = t.get("diff_b")
    return None if b is None else _f(b)


def norm_delta(t: Tensors, base, shape) -> torch.Tensor:
    return _fit(_f(t["w_norm"]), shape) * scale_of(t, None)


def norm_bias_delta(t: Tensors):
    b = t.get("b_norm")
    return None if b is None else _f(b)


# --- the table ---------------------------------------------------------------------------

_COMMON = frozenset({"alpha", "scale", "dora_scale", "dora_magnitude"})

ALGORITHMS: Dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("lora", "LoRA / LoCon", _COMMON | {"lora_up.weight", "lora_down.weight", "lora_mid.weight",
                                                 "lora_up.bias"},
              frozenset({"lora_up.weight", "lora_down.weight", "lora_mid.weight"}),
              lora_delta, lora_bias_delta, _has_dora),
    Algorithm("loha", "LoHa", _COMMON | {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"},
              frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"}),
              loha_delta, None, _has_dora),
    Algorithm("lokr", "LoKr", _COMMON | {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a",
                                         "lokr_w2_b", "lokr_t2"},
              frozenset({"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"}),
              lokr_delta, None, _has_dora),
    Algorithm("ia3", "IA3", frozenset({"weight", "on_input"}), frozenset({"on_input"}),
              ia3_delta, None, lambda t: True),
    Algorithm("glora", "GLoRA", frozenset({"a1.weight", "a2.weight", "b1.weight", "b2.weight", "alpha", "scale"}),
              frozenset({"a1.weight", "a2.weight", "b1.weight", "b2.weight"}),
              glora_delta, None, lambda t: True),
    Algorithm("oft", "OFT / BOFT", frozenset({"oft_blocks", "oft_diag", "rescale", "alpha"}),
              frozenset({"oft_blocks", "oft_diag"}), oft_delta, None, lambda t: True),
    Algorithm("full", "Full diff", frozenset({"diff", "diff_b", "alpha", "scale"}), frozenset({"diff", "diff_b"}),
              full_delta, full_bias_delta),
    Algorithm("norm", "Norm diff", frozenset({"w_norm", "b_norm", "alpha", "scale"}), frozenset({"w_norm", "b_norm"}),
              norm_delta, norm_bias_delta),
)}


def needs_base(algo: Algorithm, t: Tensors) -> bool:
    """Whether the module's ΔW depends on the weight it is applied to."""
    return bool(algo.base_dependent and algo.base_dependent(t))
