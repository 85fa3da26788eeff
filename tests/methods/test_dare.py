"""ties_sum_with_dropout (DARE / DELLA) and dropout (n-supermario): exact cases at probability 0,
statistics at other probabilities, and seeding."""
import pytest
import torch

from method_calls import raw


def test_dare_without_dropout_is_ties():
    deltas = [torch.randn(6, 5) for _ in range(3)]
    result = raw("ties_sum_with_dropout", *deltas, probability=0.0, k=0.5, apply_stock=True, seed=3)
    assert torch.allclose(result, raw("ties_sum", *deltas, k=0.5), atol=1e-6)


@pytest.mark.parametrize("rescale, expected_mean", [(False, 0.3), (True, 1.0)])
def test_dare_keeps_about_one_minus_p_and_rescales(rescale, expected_mean):
    ones = torch.ones(200, 200)
    result = raw("ties_sum_with_dropout", ones, probability=0.7, k=1.0, apply_stock=True, rescale=rescale, seed=1)
    kept = (result != 0).float().mean()
    assert abs(float(kept) - 0.3) < 0.01
    assert abs(float(result.mean()) - expected_mean) < 0.03


def test_della_keeps_large_entries_more_often():
    delta = torch.arange(1, 40_001, dtype=torch.float32)
    result = raw("ties_sum_with_dropout", delta, probability=0.5, della_eps=0.8, k=1.0, apply_stock=True,
                 rescale=False, seed=5)
    kept = result != 0
    small, large = kept[:10_000].float().mean(), kept[-10_000:].float().mean()
    assert float(large) > float(small) + 0.4  # keep rates ~0.15 vs ~0.85


def test_dare_is_seeded_per_seed_and_key():
    d = torch.randn(50, 50)
    run = lambda **kw: raw("ties_sum_with_dropout", d, d * 0.5, probability=0.5, k=1.0, **kw)
    assert torch.equal(run(seed=1), run(seed=1))
    assert not torch.equal(run(seed=1), run(seed=2))
    assert not torch.equal(run(seed=1, key="a.weight"), run(seed=1, key="b.weight"))
    # unseeded is sd-mecha's fixed default stream: reproducible too, and negative seeds mean the same
    assert torch.equal(run(seed=None), run(seed=None))
    assert torch.equal(run(seed=None), run(seed=-1))


def test_dropout_without_dropout_averages_the_deltas():
    deltas = [torch.randn(5, 4) for _ in range(3)]
    result = raw("dropout", *deltas, probability=0.0, seed=0)
    assert torch.allclose(result, sum(deltas) / 3, atol=1e-6)


def test_dropout_independent_masks_rescale_to_the_expected_size():
    ones = torch.ones(300, 300)
    result = raw("dropout", ones, probability=0.5, seed=2)
    assert set(result.unique().tolist()) <= {0.0, 2.0}
    assert abs(float(result.mean()) - 1.0) < 0.02


def test_dropout_even_overlap_gives_each_entry_to_exactly_one_delta():
    d1, d2 = torch.ones(100, 100), torch.full((100, 100), 2.0)
    result = raw("dropout", d1, d2, probability=0.0, overlap=2.0, seed=4)
    assert set(result.unique().tolist()) == {1.0, 2.0}
    assert abs(float((result == 1.0).float().mean()) - 0.5) < 0.03


def test_dropout_fractional_overlap_runs_and_respects_the_drop_rate():
    deltas = [torch.ones(100, 100) for _ in range(3)]
    result = raw("dropout", *deltas, probability=0.6, overlap=0.7, overlap_emphasis=0.5, rescale=0.0, seed=4)
    assert abs(float((result == 0).float().mean()) - 0.6) < 0.03


def test_dropout_unseeded_draws_fresh_randomness_like_sd_mecha():
    d = torch.randn(64, 64)
    assert not torch.equal(raw("dropout", d, probability=0.5), raw("dropout", d, probability=0.5))
    assert torch.equal(raw("dropout", d, probability=0.5, seed=9), raw("dropout", d, probability=0.5, seed=9))


def test_della_ranks_are_estimated_from_a_histogram_for_large_deltas(monkeypatch):
    import lib_mecha.methods.dare as dare
    from lib_mecha.workspace import Workspace
    g = torch.Generator().manual_seed(3)
    magnitudes = torch.randn(50_000, generator=g).abs()
    exact = dare.centered_rank_fraction(magnitudes, Workspace())
    monkeypatch.setattr(dare, "EXACT_RANKS_UP_TO", 1000)
    estimated = dare.centered_rank_fraction(magnitudes, Workspace())
    assert not torch.equal(estimated, exact) and float((estimated - exact).abs().max()) < 1e-3
    assert float(exact.min()) == pytest.approx(-0.5, abs=1e-4) and float(exact.max()) == pytest.approx(0.5, abs=1e-4)
    crowded = torch.cat([torch.zeros(49_990), torch.full((10,), 1e6)])  # one bin would hold everything
    assert torch.equal(dare.centered_rank_fraction(crowded, Workspace()), dare._exact_rank_fraction(crowded))


def test_della_keep_probabilities_by_bin_are_those_computed_per_element(monkeypatch):
    """With one drop probability, DELLA's keep-probabilities come from a table per rank bin; a
    per-element probability (a one-element tensor takes that path) must give the same bits."""
    import lib_mecha.methods.dare as dare
    from lib_mecha.methods.seeding import Draws
    from lib_mecha.workspace import Workspace
    monkeypatch.setattr(dare, "EXACT_RANKS_UP_TO", 1000)
    g = torch.Generator().manual_seed(8)
    delta = torch.randn(20_000, generator=g)
    by_bin = dare.drop(delta, 0.7, 0.15, Draws(4, "k"), Workspace())
    per_element = dare.drop(delta, torch.tensor(0.7), 0.15, Draws(4, "k"), Workspace())
    assert torch.equal(by_bin, per_element)
    assert 0.2 < float(torch.count_nonzero(by_bin)) / delta.numel() < 0.4


@pytest.mark.parametrize("della_eps", [0.0, 0.2])
def test_dare_draws_do_not_depend_on_the_slice_size(della_eps, monkeypatch):
    import lib_mecha.methods._values as values
    g = torch.Generator().manual_seed(3)
    deltas = [torch.randn(41, 13, generator=g) for _ in range(3)]
    run = lambda: raw("ties_sum_with_dropout", *deltas, probability=0.6, della_eps=della_eps, k=0.7, seed=5)
    whole = run()
    monkeypatch.setattr(values, "SLICE_ELEMENTS", 16)
    assert torch.equal(run(), whole)
    kept = torch.count_nonzero(whole) / whole.numel()
    assert 0.2 < float(kept) < 0.9  # something was dropped, something kept


@pytest.mark.parametrize("apply_stock, apply_median", [(True, False), (False, False), (True, True)])
def test_rescaling_divides_by_the_keep_rate_per_element_in_every_mode(apply_stock, apply_median, monkeypatch):
    """The keep rate may be a per-key mask: the rescaled result is the plain one divided by it
    (in slices of two rows, so each slice must divide by its own part of the mask)."""
    from lib_mecha.methods import _values
    monkeypatch.setattr(_values, "SLICE_ELEMENTS", 10)
    g = torch.Generator().manual_seed(4)
    deltas = [torch.randn(6, 5, generator=g) for _ in range(3)]
    probability = torch.rand(6, 5, generator=g) * 0.8
    common = dict(probability=probability, k=0.7, apply_stock=apply_stock, apply_median=apply_median, seed=9)
    plain = raw("ties_sum_with_dropout", *deltas, rescale=False, **common)
    rescaled = raw("ties_sum_with_dropout", *deltas, rescale=True, **common)
    assert plain.abs().sum() > 0
    assert torch.equal(rescaled, plain / (1 - probability))
