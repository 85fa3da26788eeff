"""Whole-tensor methods spread their slice loops over the threads the engine grants them in their
workspace (lib_mecha.workspace), and the tensors they return do not change."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from lib_mecha.memory import BufferPool, Scratch
from lib_mecha.methods import _fft_passes, _trim, _values, dare, filters, seeding
from lib_mecha.workspace import Workspace
from method_calls import raw

# name -> (number of inputs, keyword arguments)
LOOPING_METHODS = {
    "ties_sum": (3, dict(k=0.3)),
    "ties_sum_extended": (3, dict(k=0.3)),
    "model_stock": (3, {}),
    "geometric_median": (3, {}),
    "ties_sum_with_dropout": (3, dict(probability=0.5, k=0.5, seed=2)),
    "dropout": (3, dict(probability=0.5, seed=2)),
    "perpendicular_component": (2, {}),
    "add_cosine_a": (2, dict(alpha=0.2)),
    "add_cosine_b": (2, dict(alpha=0.2)),
    "extract_features": (3, dict(alpha=0.3, beta=0.4)),
    "add_noise": (1, dict(alpha=0.01, seed=2, skip_out_and_norm=False)),
    "smooth_add_difference": (3, dict(alpha=0.7)),
    "crossover": (2, dict(alpha=0.4, tilt=0.3)),
}
VARIANTS = {
    "della": ("ties_sum_with_dropout", 3, dict(probability=0.5, della_eps=0.2, k=0.5, seed=2)),
    "ties_median": ("ties_sum_extended", 3, dict(k=0.5, apply_median=True)),
    "dropout_shared": ("dropout", 3, dict(probability=0.5, overlap=0.5, seed=2)),
    "smooth_exact_median": ("smooth_add_difference", 3, dict(alpha=0.7, exact_median=True)),
}
CASES = {**{name: (name, *spec) for name, spec in LOOPING_METHODS.items()}, **VARIANTS}


@pytest.fixture
def small_slices(monkeypatch):
    monkeypatch.setattr(_values, "SLICE_ELEMENTS", 1 << 10)
    monkeypatch.setattr(_trim, "SAMPLED_SELECTION_ABOVE", 1 << 11)
    monkeypatch.setattr(dare, "EXACT_RANKS_UP_TO", 1 << 11)  # DELLA's histogram ranks
    monkeypatch.setattr(seeding, "DRAW_BLOCK", 1 << 9)
    monkeypatch.setattr(filters, "CHUNK_MIN_ROWS", 8)  # smooth_add_difference: runs of rows
    monkeypatch.setattr(_fft_passes, "BLOCK_ELEMENTS", 1 << 10)  # crossover's passes


@pytest.mark.parametrize("case", sorted(CASES))
def test_granted_threads_change_nothing(case, small_slices, loop_threads):
    name, count, kwargs = CASES[case]
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(96, 40, 3, generator=g) for _ in range(count)]
    alone = raw(name, *inputs, **kwargs)
    helpers = loop_threads
    with ThreadPoolExecutor(1, thread_name_prefix="granted") as pool:
        work = Workspace(pool=BufferPool(), helpers=pool, helper_count=1)
        shared = raw(name, *inputs, workspace=work, **kwargs)
        shared = shared.clone()  # the workspace's memory goes back to its pool
        work.close()
    assert any(n.startswith("granted") for n in helpers), f"{name} never used the granted thread"
    assert torch.equal(shared, alone)


def test_draws_of_any_range_equal_the_whole_tensor_draws():
    draws = seeding.Draws(5, "key", "stream")
    whole = draws.uniform(torch.empty(3 * seeding.DRAW_BLOCK + 17), 0)
    for start, end in [(0, 10), (100, seeding.DRAW_BLOCK + 5), (seeding.DRAW_BLOCK, 2 * seeding.DRAW_BLOCK),
                       (2 * seeding.DRAW_BLOCK - 3, 3 * seeding.DRAW_BLOCK + 17)]:
        assert torch.equal(draws.uniform(torch.empty(end - start), start), whole[start:end])
    assert torch.equal(seeding.Draws(5, "key", "stream").uniform(torch.empty(50), 0), whole[:50])
    other_key = seeding.Draws(5, "other", "stream").uniform(torch.empty(50), 0)
    child = draws.child(0).uniform(torch.empty(50), 0)
    assert not torch.equal(other_key, whole[:50]) and not torch.equal(child, whole[:50])
    assert 0 <= float(whole.min()) and float(whole.max()) < 1
    assert abs(float(whole.mean()) - 0.5) < 0.01
    normal = draws.normal(torch.empty(100_000), 0)
    assert abs(float(normal.mean())) < 0.02 and abs(float(normal.std()) - 1) < 0.02


FIRST_STEPS = [417859, 7738641, 1164704]  # Draws(11, "key", "stream"): recorded once


def test_uniform_draws_are_23_bit_fractions_spread_evenly_and_one_below_the_shifted_ones():
    draws = seeding.Draws(11, "key", "stream")
    n = 2 * seeding.DRAW_BLOCK + 5
    shifted = draws.shifted_uniform(torch.empty(n), 0)
    u = draws.uniform(torch.empty(n), 0)
    assert torch.equal(shifted - 1, u)
    assert 1 <= float(shifted.min()) and float(shifted.max()) < 2
    steps = u * 2 ** 23
    assert torch.equal(steps, steps.round())  # multiples of 2^-23
    # every one of the 23 bits is set in about half the draws (a stuck or shared bit would not be)
    integers = steps.to(torch.int64)
    for bit in range(23):
        share = float(((integers >> bit) & 1).double().mean())
        assert abs(share - 0.5) < 0.01, (bit, share)
    # the two floats of one 64-bit word are not the same draw, nor are neighbouring blocks
    assert float((u[0::2][:1000] == u[1::2][:1000]).double().mean()) < 0.01
    block = seeding.DRAW_BLOCK
    assert not torch.equal(u[:1000], u[block:block + 1000])
    # the stream is SFC64's, seeded per block: fixed across numpy versions, so fixed here
    assert [round(float(x) * 2 ** 23) for x in u[:3]] == FIRST_STEPS


def test_della_histogram_ranks_by_range_equal_the_whole(small_slices):
    g = torch.Generator().manual_seed(3)
    delta = torch.randn(20_000, generator=g)
    ranks = dare.CenteredRanks(delta, Workspace())
    assert ranks.exact is None  # the histogram path
    scratch = Scratch(delta)
    whole = dare.centered_rank_fraction(delta.abs(), Workspace())
    assert torch.equal(ranks.range(5000, 9000, scratch), whole[5000:9000])
