"""SuperMerger's modes: sum twice, triple sum, smooth add difference, extract, add noise, self."""
import pytest
import torch

from lib_mecha.methods.filters import gaussian_filter, median_filter
from method_calls import raw

T = torch.tensor


def test_sum_twice_and_triple_sum_hand_cases():
    a, b, c = T([0.0]), T([10.0]), T([100.0])
    assert torch.allclose(raw("sum_twice", a, b, c, alpha=0.5, beta=0.1), T([0.9 * 5 + 0.1 * 100]))
    assert torch.allclose(raw("triple_sum", a, b, c, alpha=0.2, beta=0.3), T([0.2 * 10 + 0.3 * 100]))
    x, y, z = torch.randn(5), torch.randn(5), torch.randn(5)
    assert torch.allclose(raw("triple_sum", x, y, z), (x + y + z) / 3, atol=1e-6)
    assert torch.allclose(raw("sum_twice", x, x, x, alpha=0.3, beta=0.8), x)


def test_smooth_add_difference_of_a_constant_difference_adds_it_unchanged():
    a = torch.randn(4, 3, 3, 3)
    b, c = a + 0.5, a.clone()
    assert torch.allclose(raw("smooth_add_difference", a, b, c, alpha=2.0), a + 1.0, atol=1e-5)


def test_smooth_add_difference_removes_an_isolated_spike():
    diff = torch.zeros(7, 7)
    diff[3, 3] = 10.0
    result = raw("smooth_add_difference", torch.zeros(7, 7), diff, torch.zeros(7, 7))
    assert torch.allclose(result, torch.zeros(7, 7))  # the median removes it before the blur spreads it


def test_filters_match_scipy_ndimage():
    ndimage = pytest.importorskip("scipy.ndimage", reason="scipy is the oracle for the filters")
    g = torch.Generator().manual_seed(0)
    for shape in [(9,), (5, 6), (4, 3, 3, 3), (2, 1, 5)]:
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        assert torch.allclose(median_filter(x, 3), torch.from_numpy(ndimage.median_filter(x.numpy(), size=3)))
        assert torch.allclose(gaussian_filter(x, 1.0), torch.from_numpy(ndimage.gaussian_filter(x.numpy(), 1.0)))
        assert torch.allclose(gaussian_filter(x, 0.6), torch.from_numpy(ndimage.gaussian_filter(x.numpy(), 0.6)))


def test_median_filter_works_in_blocks(monkeypatch):
    import lib_mecha.methods.filters as filters
    x = torch.randn(10, 4, 3)
    whole = median_filter(x)
    monkeypatch.setattr(filters, "MEDIAN_BLOCK_ELEMENTS", 50)
    assert torch.equal(median_filter(x), whole)


def test_extract_features_similar_and_dissimilar():
    a = torch.zeros(2, 3)
    d = torch.randn(2, 3)
    # identical changes: fully similar
    assert torch.allclose(raw("extract_features", a, a + d, a + d, beta=0.0), a + d, atol=1e-6)
    assert torch.allclose(raw("extract_features", a, a + d, a + d, beta=1.0), a, atol=1e-6)
    # opposite changes: fully dissimilar; alpha 0 takes B's
    assert torch.allclose(raw("extract_features", a, a + d, a - d, alpha=0.0, beta=1.0), a + d, atol=1e-6)
    assert torch.allclose(raw("extract_features", a, a + d, a - d, alpha=0.0, beta=0.0), a, atol=1e-6)


def test_extract_features_gamma_sharpens_similarity():
    a, b, c = T([0.0, 0.0]), T([1.0, 0.0]), T([1.0, 1.0])  # cosine 1/√2
    similar = (1 + 2 ** -0.5) / 2
    for gamma in (1.0, 4.0):
        expected = torch.lerp(b - a, c - a, 0.5) * similar ** gamma
        assert torch.allclose(raw("extract_features", a, b, c, gamma=gamma), expected, atol=1e-6)


def test_add_noise_is_seeded_and_sized_by_alpha():
    a = torch.zeros(200, 200)
    noisy = raw("add_noise", a, alpha=0.01, seed=7)
    assert abs(float(noisy.std()) - 0.01) < 0.0005
    assert torch.equal(noisy, raw("add_noise", a, alpha=0.01, seed=7))
    assert not torch.equal(noisy, raw("add_noise", a, alpha=0.01, seed=8))
    assert raw("add_noise", a, alpha=0.0, seed=7) is a


def test_add_noise_and_self_scale_skip_supermerger_keys():
    a = torch.ones(3)
    key = "model.diffusion_model.middle_block.1.proj_out.weight"
    assert raw("add_noise", a, alpha=0.5, seed=1, key=key) is a
    assert raw("self_scale", a, alpha=2.0, key=key) is a
    assert torch.equal(raw("self_scale", a, alpha=2.0, key=key, skip_out_and_norm=False), 2 * a)
    assert torch.equal(raw("self_scale", a, alpha=0.5), 0.5 * a)
