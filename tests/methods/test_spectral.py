"""rotate and truncate_rank: exact recoveries and properties of orthogonal transforms."""
import pytest
import torch

from lib_mecha.methods.spectral import procrustes
from method_calls import raw


def _random_rotation(p, generator):
    q, _ = torch.linalg.qr(torch.randn(p, p, dtype=torch.float64, generator=generator))
    return q


def _centered(n, p, generator):
    x = torch.randn(n, p, dtype=torch.float64, generator=generator)
    return x - x.mean(0)


@pytest.mark.parametrize("shape", [(12, 4), (4, 4), (3, 10)], ids=["tall", "square", "wide"])
def test_rotate_recovers_an_exact_rotation(shape):
    g = torch.Generator().manual_seed(0)
    a = _centered(*shape, g)
    b = a @ _random_rotation(shape[1], g)
    assert torch.allclose(raw("rotate", a, b), b, atol=1e-9)


@pytest.mark.parametrize("shape", [(12, 4), (3, 10)], ids=["tall", "wide"])
def test_rotate_is_orthogonal_and_fractional_halves_compose(shape):
    g = torch.Generator().manual_seed(1)
    a, b = _centered(*shape, g), _centered(*shape, g)
    rotation = procrustes(a, b, proper=True)
    half = rotation.apply(rotation.apply(a, 0.5), 0.5)
    assert torch.allclose(half, rotation.apply(a, 1.0), atol=1e-8)
    for power in (0.3, 1.0):
        assert torch.allclose(rotation.apply(a, power).norm(), a.norm())
    assert torch.allclose(rotation.apply(rotation.apply(b, -1.0), 1.0), b, atol=1e-9)


def test_rotate_is_the_best_orthogonal_fit_for_wide_matrices():
    # Procrustes optimum: ‖aQ - b‖² = ‖a‖² + ‖b‖² - 2·(sum of singular values of aᵀb)
    g = torch.Generator().manual_seed(2)
    a, b = _centered(3, 9, g), _centered(3, 9, g)
    best = a.norm() ** 2 + b.norm() ** 2 - 2 * torch.linalg.svdvals(a.T @ b).sum()
    assert torch.allclose((raw("rotate", a, b) - b).norm() ** 2, best, atol=1e-9)


def test_rotate_ends_and_small_tensors():
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    assert raw("rotate", a, b, alignment=0.0, alpha=0.0) is a
    assert raw("rotate", a, b, alignment=1.0, alpha=1.0) is b
    v, w = torch.randn(7), torch.randn(7)
    assert torch.allclose(raw("rotate", v, w, alpha=0.25), torch.lerp(v, w, 0.25))


def test_rotate_convolutions_keep_their_shape_and_column_means():
    a, b = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    result = raw("rotate", a, b)
    assert result.shape == a.shape
    # with centralization 1 and alignment 1 the (out·in, 9) view takes B's column means
    assert torch.allclose(result.reshape(12, 9).mean(0), b.reshape(12, 9).mean(0), atol=1e-9)


def test_truncate_rank_recovers_a_low_rank_delta():
    u, v = torch.randn(30, 2, dtype=torch.float64), torch.randn(2, 20, dtype=torch.float64)
    delta = u @ v
    for approximate in (True, False):
        result = raw("truncate_rank", delta, rank=2, use_approximate_basis=approximate)
        assert torch.allclose(result, delta, atol=1e-8)


def test_truncate_rank_keeps_the_strongest_directions():
    d = torch.diag(torch.tensor([5.0, 3.0, 1.0])).double()
    assert torch.allclose(raw("truncate_rank", d, rank=1, use_approximate_basis=False),
                          torch.diag(torch.tensor([5.0, 0.0, 0.0])).double())
    assert torch.equal(raw("truncate_rank", d, rank=0), torch.zeros(3, 3, dtype=torch.float64))
    assert raw("truncate_rank", d, rank=3) is d
    bias = torch.randn(5)
    assert raw("truncate_rank", bias, rank=1) is bias


def test_truncate_rank_of_a_convolution_works_on_the_flattened_matrix():
    d = torch.randn(8, 4, 3, 3)
    result = raw("truncate_rank", d, rank=2, use_approximate_basis=False)
    assert result.shape == d.shape
    assert torch.linalg.matrix_rank(result.flatten(1)) == 2


def test_truncate_rank_approximation_is_seeded():
    d = torch.randn(40, 30)
    first = raw("truncate_rank", d, rank=4, approximate_basis_iters=0, approximate_basis_seed=1)
    assert torch.equal(first, raw("truncate_rank", d, rank=4, approximate_basis_iters=0, approximate_basis_seed=1))
    assert torch.equal(raw("truncate_rank", d, rank=4), raw("truncate_rank", d, rank=4))
