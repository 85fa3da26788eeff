"""perpendicular_component, geometric_sum, multiply_quotient and the three difference masks:
hand-computed cases and properties."""
import math

import pytest
import torch

from method_calls import raw

T = torch.tensor


def test_perpendicular_component_removes_the_part_along_a():
    assert torch.equal(raw("perpendicular_component", T([1.0, 0.0]), T([1.0, 1.0])), T([0.0, 1.0]))
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    perp = raw("perpendicular_component", a, b)
    assert abs(float((perp * a).sum())) < 1e-4
    # b = projection + perpendicular part
    assert torch.allclose(b - perp, a * (a * b).sum() / (a * a).sum(), atol=1e-5)


def test_perpendicular_component_of_a_zero_reference_is_zero_like_sd_mecha():
    assert torch.equal(raw("perpendicular_component", torch.zeros(3), T([1.0, 2.0, 3.0])), torch.zeros(3))


def test_geometric_sum_hand_cases():
    assert torch.allclose(raw("geometric_sum", T([4.0, 1.0]), T([1.0, 4.0])), T([2.0, 2.0]))
    # negative bases: (-4)^½·(-1)^½ = (2i)(i) = -2, and (-4)^½·1^½ = 2i has real part 0
    assert torch.allclose(raw("geometric_sum", T([-4.0, -4.0]), T([-1.0, 1.0])), T([-2.0, 0.0]), atol=1e-6)


@pytest.mark.parametrize("alpha, expected", [(0.0, "a"), (1.0, "b")])
def test_geometric_sum_ends(alpha, expected):
    a, b = torch.randn(6), torch.randn(6)
    result = raw("geometric_sum", a, b, alpha=alpha)
    assert torch.allclose(result, a if expected == "a" else b, atol=1e-6)


def test_geometric_sum_of_a_model_with_itself_is_that_model_where_positive():
    a = torch.rand(10) + 0.1
    assert torch.allclose(raw("geometric_sum", a, a, alpha=0.3), a, atol=1e-6)


def test_multiply_quotient_hand_cases():
    # log(a/c) = -ln 2, log(b/c) = ln 2: opposite directions, weight 1, so a·(b/c) = 2·2
    assert torch.allclose(raw("multiply_quotient", T([2.0]), T([8.0]), T([4.0])), T([4.0]))
    # same direction: weight 0, a is kept
    assert torch.allclose(raw("multiply_quotient", T([8.0]), T([8.0]), T([4.0])), T([8.0]))
    # c = 0: a is kept rather than inf/NaN
    assert torch.equal(raw("multiply_quotient", T([3.0]), T([5.0]), T([0.0])), T([3.0]))


def test_multiply_quotient_alpha_zero_keeps_a():
    a, b, c = torch.randn(8), torch.randn(8), torch.randn(8)
    assert torch.allclose(raw("multiply_quotient", a, b, c, alpha=0.0), a)


def test_train_difference_mask_hand_case():
    mask = raw("train_difference_mask", T([0.0, 1.0]), T([1.0, 1.0]), T([3.0, 1.0]))
    assert torch.allclose(mask, T([1.8 * 1 / 3, 0.0]))  # |b-a| / (|b-a| + |b-c|), and 0/0 -> 0
    assert torch.allclose(raw("train_difference_mask", T([0.0]), T([1.0]), T([3.0]), alpha=0.5), T([0.3]))


def test_add_opposite_mask_hand_case():
    mask = raw("add_opposite_mask", T([1.0, 2.0]), T([3.0, 2.0]), T([0.0, 2.0]))
    assert torch.allclose(mask, T([2 * 2 / (2 + 4), 0.0]))


def test_add_strict_opposite_mask_is_zero_unless_a_and_b_straddle_c():
    mask = raw("add_strict_opposite_mask", T([1.0, 1.0, 0.5]), T([-1.0, 2.0, -1.0]), T([0.0, 0.0, 0.0]))
    # (c-a)(b-c) / max(|a-c|, |b-c|)^2, times 2, clipped at 0
    assert torch.allclose(mask, T([2.0, 0.0, 2 * 0.5 / 1.0]))


@pytest.mark.parametrize("name", ["train_difference_mask", "add_opposite_mask", "add_strict_opposite_mask"])
def test_masks_scale_linearly_with_alpha(name):
    a, b, c = torch.randn(20), torch.randn(20), torch.randn(20)
    assert torch.allclose(raw(name, a, b, c, alpha=0.25) * 4, raw(name, a, b, c, alpha=1.0), atol=1e-6)
    assert not math.isnan(float(raw(name, a, a, a).sum()))


def test_multiply_quotient_of_a_tensor_of_many_blocks_is_that_of_its_pieces():
    """The work runs in cache-sized blocks: every element must still get its own inputs, alpha
    and place in the output (the pieces are smaller than a block, the whole is several)."""
    g = torch.Generator().manual_seed(3)
    a, b, c = (torch.randn(200_003, generator=g) * 0.02 for _ in range(3))
    b[::5] = -b[::5]
    whole = raw("multiply_quotient", a, b, c, alpha=0.7)
    cuts = [0, 1, 40_000, 123_456, 200_003]
    pieces = [raw("multiply_quotient", a[s:e], b[s:e], c[s:e], alpha=0.7) for s, e in zip(cuts, cuts[1:])]
    assert torch.equal(whole, torch.cat(pieces))
    assert not torch.equal(whole, a)  # the quotient changed something
