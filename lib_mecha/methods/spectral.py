"""Spectral methods: orthogonal alignment (``rotate``) and low-rank truncation (``truncate_rank``).

Identifiers, parameters and defaults are sd-mecha's (reference §3.3).

``rotate`` solves the orthogonal Procrustes problem between A and B (as matrices; a 3×3
convolution is viewed as ``(out·in, 9)``, anything else as ``(out, rest)``) and moves A along
the rotation. For wide matrices (fewer rows than columns) the rotation is only determined on
the span of the two row spaces; there it is completed as the rotation closest to the
identity, so the transform stays exactly orthogonal and fractional alignments follow the
shortest path. Fractional powers come from an eigendecomposition, in closed form; sd-mecha's
iterative Stiefel-manifold solver parameters are accepted and ignored.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ._values import as_tensor_like, is_close, scalar
from .registry import merge_method
from .seeding import key_generator
from .spec import DELTA, SAME, Bool, CurrentKey, Float, Int, Tensor


# --- rotate --------------------------------------------------------------------------------------

def matrix_view_shape(shape: torch.Size) -> Tuple[int, int]:
    """How rotate sees a tensor as a matrix: spatial convolutions as (out·in, kh·kw)."""
    if len(shape) == 4 and shape[2:].numel() != 1:
        return shape[:2].numel(), shape[2:].numel()
    return shape[0], shape[1:].numel()


class Rotation:
    """An orthogonal map ``x ↦ x·Q`` with ``Q = I + E·(R - I)·Eᵀ``: R acts on the span of E's
    orthonormal columns, everything orthogonal to it is left alone (E is None: Q = R)."""

    def __init__(self, r: torch.Tensor, basis: Optional[torch.Tensor] = None):
        self.r = r
        self.basis = basis

    def apply(self, x: torch.Tensor, power: float) -> torch.Tensor:
        if is_close(power, 0.0):
            return x
        r_power = orthogonal_power(self.r, power)
        if self.basis is None:
            return x @ r_power
        coords = x @ self.basis
        return x + (coords @ r_power - coords) @ self.basis.mT


def orthogonal_power(q: torch.Tensor, power: float) -> torch.Tensor:
    """``Q^t`` for an orthogonal Q: exact for whole t, from an eigendecomposition otherwise."""
    if is_close(power, 1.0):
        return q
    if is_close(power, -1.0):
        return q.mT
    if is_close(power, round(power)):
        return torch.linalg.matrix_power(q, round(power))
    values, vectors = torch.linalg.eig(q)
    # V·Λ^t·V⁻¹ (a solve rather than Vᴴ: eigenvectors of repeated eigenvalues need not be orthogonal)
    powered = torch.linalg.solve(vectors, vectors * values.pow(power).unsqueeze(-2), left=False)
    return powered.real.to(q.dtype)


def _polar(m: torch.Tensor) -> torch.Tensor:
    """The orthogonal factor of m (closest orthogonal matrix)."""
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    return u @ vh


def procrustes(a: torch.Tensor, b: torch.Tensor, proper: bool) -> Rotation:
    """The orthogonal Q minimising ‖a·Q - b‖ (rows are samples). ``proper`` forces det(Q) = +1."""
    n, p = a.shape
    if n >= p:
        u, _, vh = torch.linalg.svd(a.mT @ b, full_matrices=False)
        if proper and torch.linalg.det(u @ vh) < 0:
            u[:, -1] = -u[:, -1]
        return Rotation(u @ vh)
    # wide: aᵀb = U·S·Vᵀ has rank ≤ n; Q must send U's columns to V's. Work in E = span(U, V).
    b_q, b_r = torch.linalg.qr(b.mT)
    u, _, wh = torch.linalg.svd(a.mT @ b_r.mT, full_matrices=False)
    v = b_q @ wh.mT
    basis, _ = torch.linalg.qr(torch.cat([u, v], dim=1))
    u_e, v_e = basis.mT @ u, basis.mT @ v
    m = basis.shape[1]
    r = u_e @ v_e.mT
    if m > n:
        # complete R on the complements of span(u_e) and span(v_e) as close to the identity as possible
        u_c = torch.linalg.qr(u_e, mode="complete")[0][:, n:]
        v_c = torch.linalg.qr(v_e, mode="complete")[0][:, n:]
        x, _, yh = torch.linalg.svd(u_c.mT @ v_c)
        if proper and torch.linalg.det(r + u_c @ x @ yh @ v_c.mT) < 0:
            x[:, -1] = -x[:, -1]
        r = r + u_c @ (x @ yh) @ v_c.mT
    elif proper and torch.linalg.det(r) < 0:
        u_e[:, -1] = -u_e[:, -1]
        r = u_e @ v_e.mT
    return Rotation(r, basis)


@merge_method(returns=SAME, label="Rotate (orthogonal alignment)", category="spectral",
              help="Rotates A toward B by the orthogonal transform that aligns them best "
                   "(Procrustes), optionally interpolating what rotation cannot explain.",
              notes=("stiefel_eps and stiefel_max_iters are accepted for sd-mecha compatibility and have no "
                     "effect: fractional rotations are computed in closed form.",
                     "Slow on large models: every matrix gets a singular value decomposition.",
                     "On wide matrices (fewer rows than columns) results differ from sd-mecha 1.1.8, whose transform "
                     "there is neither orthogonal nor the best fit; here it is the exact best-fit rotation."))
def rotate(a=Tensor(SAME), b=Tensor(SAME),
           alignment=Float(1.0, soft_minimum=0.0, soft_maximum=1.0, per_key=True,
                           help="How far A is rotated toward B: 0 none, 1 the full best-fit rotation."),
           alpha=Float(0.0, soft_minimum=0.0, soft_maximum=1.0, per_key=True,
                       help="Also interpolates A toward B rotated back into A's frame: 0 keeps A's own values."),
           centralization=Float(1.0, soft_minimum=0.0, soft_maximum=1.0,
                                help="How much of each column's mean is removed before aligning (1 = all)."),
           stiefel_eps=Float(1e-8, minimum=0.0, label="Stiefel epsilon (unused)",
                             help="Unused (sd-mecha compatibility)."),
           stiefel_max_iters=Int(100, minimum=1, label="Stiefel iterations (unused)",
                                 help="Unused (sd-mecha compatibility).")):
    alignment = scalar("rotate", "alignment", alignment)
    if is_close(alignment, 0.0) and is_close(alpha, 0.0):
        return a
    if is_close(alignment, 1.0) and is_close(alpha, 1.0):
        return b
    if (a.dim() <= 1 or a.numel() == 0 or not (torch.isfinite(a).all() and torch.isfinite(b).all())
            or torch.allclose(a.half(), b.half())):
        return torch.lerp(a, b, as_tensor_like(alpha, a))
    shape_2d = matrix_view_shape(a.shape)
    a_2d, b_2d = a.reshape(shape_2d), b.reshape(shape_2d)
    a_mean = a_2d.mean(0) * centralization
    b_mean = b_2d.mean(0) * centralization
    a_2d, b_2d = a_2d - a_mean, b_2d - b_mean
    rotation = procrustes(a_2d, b_2d, proper=not is_close(alignment, round(alignment)))
    if not is_close(alpha, 0.0):
        weight = as_tensor_like(alpha, a_2d)
        if weight.numel() == a_2d.numel():  # a mask shaped like the key
            weight = weight.reshape(a_2d.shape)
        a_2d = torch.lerp(a_2d, rotation.apply(b_2d, -1.0), weight)
    result = rotation.apply(a_2d, alignment) + torch.lerp(a_mean, b_mean, alignment)
    return result.reshape(a.shape)


# --- truncate_rank -------------------------------------------------------------------------------

def randomized_svd(a: torch.Tensor, rank: int, iters: int, generator: torch.Generator):
    """Rank-``rank`` SVD by a randomized range finder with ``iters`` power iterations (Halko et al.)."""
    transposed = a.shape[0] < a.shape[1]
    if transposed:
        a = a.mT
    probe = torch.randn(a.shape[1], rank, generator=generator, dtype=torch.float32).to(a)
    q = torch.linalg.qr(a @ probe)[0]
    for _ in range(iters):
        q = torch.linalg.qr(a.mT @ q)[0]
        q = torch.linalg.qr(a @ q)[0]
    u, s, vh = torch.linalg.svd(q.mT @ a, full_matrices=False)
    u = q @ u
    if transposed:
        u, vh = vh.mT, u.mT
    return u, s, vh


@merge_method(returns=DELTA, label="Truncate rank", category="spectral", stochastic=True,
              help="Keeps only the strongest directions of a difference (low-rank SVD), like extracting a LoRA.",
              notes=("approximate_basis_seed null uses one fixed default seed, so the result is reproducible.",))
def truncate_rank(a=Tensor(DELTA),
                  rank=Int(8, minimum=0, soft_minimum=1, soft_maximum=256, per_key=True,
                           help="How many directions to keep per matrix; 0 gives zeros."),
                  use_approximate_basis=Bool(True, label="Randomized SVD",
                                             help="Use a fast randomized SVD instead of the exact one."),
                  approximate_basis_iters=Int(2, minimum=0, soft_maximum=8, label="Randomized SVD iterations",
                                              help="Power iterations of the randomized SVD: more is more exact."),
                  approximate_basis_seed=Int(None, nullable=True, label="Randomized SVD seed",
                                             help="Seed of the randomized SVD."),
                  *, key=CurrentKey()):
    if a.dim() < 2 or a.numel() == 0 or not torch.isfinite(a).all():
        return a  # nothing to truncate, or no SVD of non-finite values
    a_2d = a.flatten(start_dim=1)
    max_rank = min(a_2d.shape)
    target = min(max(round(scalar("truncate_rank", "rank", rank)), 0), max_rank)
    if target == max_rank:
        return a
    if target == 0:
        return torch.zeros_like(a)
    if use_approximate_basis:
        generator = key_generator(approximate_basis_seed, key, "svd", fresh_when_none=False)
        u, s, vh = randomized_svd(a_2d, target, approximate_basis_iters, generator)
    else:
        u, s, vh = torch.linalg.svd(a_2d, full_matrices=False)
    return ((u[:, :target] * s[:target]) @ vh[:target]).reshape(a.shape)

