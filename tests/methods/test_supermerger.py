"""SuperMerger's modes: sum twice, triple sum, smooth add difference, extract, add noise, self."""
import pytest
import torch

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


@pytest.mark.parametrize("exact_median", [False, True])
def test_smooth_add_difference_removes_an_isolated_spike(exact_median):
    diff = torch.zeros(7, 7)
    diff[3, 3] = 10.0
    result = raw("smooth_add_difference", torch.zeros(7, 7), diff, torch.zeros(7, 7), exact_median=exact_median)
    assert torch.allclose(result, torch.zeros(7, 7))  # the median removes it before the blur spreads it


def _scipy_smoothing(ndimage, diff, separable):
    array = diff.numpy()
    if separable:  # the median of 3 along each dimension in turn
        for dim in range(array.ndim):
            array = ndimage.median_filter(array, size=[3 if d == dim else 1 for d in range(array.ndim)])
    else:
        array = ndimage.median_filter(array, size=3)
    return torch.from_numpy(ndimage.gaussian_filter(array, 1.0))


@pytest.mark.parametrize("shape", [(12, 10, 3, 3), (20, 16), (30,)], ids=str)
def test_smooth_add_difference_matches_scipy_with_either_median(shape):
    ndimage = pytest.importorskip("scipy.ndimage", reason="scipy is the oracle for SuperMerger's filters")
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(shape, generator=g) for _ in range(3))
    exact = raw("smooth_add_difference", a, b, c, alpha=0.7, exact_median=True)
    separable = raw("smooth_add_difference", a, b, c, alpha=0.7)
    assert torch.allclose(exact, a + 0.7 * _scipy_smoothing(ndimage, b - c, separable=False), atol=1e-5)
    assert torch.allclose(separable, a + 0.7 * _scipy_smoothing(ndimage, b - c, separable=True), atol=1e-5)
    if len(shape) > 1:
        assert not torch.allclose(separable, exact, atol=1e-3)  # the setting is used


def test_smooth_add_difference_without_filters_is_add_difference():
    g = torch.Generator().manual_seed(1)
    a, b, c = (torch.randn(5, 4, 3, 3, generator=g) for _ in range(3))
    plain = raw("smooth_add_difference", a, b, c, alpha=0.3, median_size=1, sigma=0.0)
    assert torch.allclose(plain, a + 0.3 * (b - c), atol=1e-6)
    alpha = torch.rand(5, 4, 3, 3, generator=g)  # a mask-valued alpha scales element by element
    masked = raw("smooth_add_difference", a, b, c, alpha=alpha, median_size=1, sigma=0.0)
    assert torch.allclose(masked, a + alpha * (b - c), atol=1e-6)


def test_smooth_add_difference_help_says_which_median_is_exact():
    import lib_mecha.methods as methods
    spec = methods.resolve("smooth_add_difference")
    assert not spec.param("exact_median").default and spec.param("exact_median").keyword_only
    assert "SuperMerger" in spec.param("exact_median").help and "slower" in spec.param("exact_median").help
    assert any("separable" in note for note in spec.notes)


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
