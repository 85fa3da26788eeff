"""crossover (frequency split), tensor_sum and top_k_tensor_sum."""
import torch

from lib_mecha.methods.crossover import crossover_filter
from lib_mecha.methods.slicing import region
from method_calls import raw

T = torch.tensor


def test_crossover_takes_low_frequencies_from_a_and_high_from_b():
    a = T([1.0, 1.0, 1.0, 1.0])     # only the zero frequency
    b = T([1.0, -1.0, 1.0, -1.0])   # only the highest frequency
    assert torch.allclose(raw("crossover", a, b, alpha=0.5), T([2.0, 0.0, 2.0, 0.0]), atol=1e-6)
    assert torch.allclose(raw("crossover", b, a, alpha=0.5), T([0.0, 0.0, 0.0, 0.0]), atol=1e-6)


def test_crossover_ends_and_tilt_one():
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    assert raw("crossover", a, b, alpha=0.0) is a
    assert raw("crossover", a, b, alpha=1.0) is b
    assert torch.allclose(raw("crossover", a, b, alpha=0.3, tilt=1.0), torch.lerp(a, b, 0.3))
    assert torch.allclose(raw("crossover", a, a, alpha=0.3), a)


def test_crossover_filter_is_a_step_at_tilt_zero_and_swaps_beyond_two():
    step = crossover_filter((5,), 0.5, 0.0)
    assert torch.equal(step, T([0.0, 0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(crossover_filter((5,), 0.5, 2.0), T([1.0, 1.0, 0.0, 0.0, 0.0]))
    ramp = crossover_filter((9,), 0.5, 0.5)
    assert torch.all(ramp[1:] >= ramp[:-1]) and 0 < float(ramp[4]) < 1


def test_crossover_preserves_shape_and_mean_of_inputs_for_odd_sizes():
    a, b = torch.randn(3, 5, 7), torch.randn(3, 5, 7)
    result = raw("crossover", a, b, alpha=0.4, tilt=0.25)
    assert result.shape == a.shape
    assert torch.allclose(result.mean(), a.mean(), atol=1e-5)  # the zero frequency comes from A


def test_region_wraps_around():
    assert region(0.5, 0.0, 4) == (0, 2, False)
    assert region(0.5, 0.75, 4) == (1, 3, True)
    assert region(-0.25, 0.5, 4) == (1, 2, False)


def test_tensor_sum_copies_rows_and_leaves_inputs_alone():
    a, b = torch.zeros(4, 2), torch.ones(4, 2)
    result = raw("tensor_sum", a, b, width=0.5, offset=0.0)
    assert torch.equal(result[:, 0], T([1.0, 1.0, 0.0, 0.0]))
    wrapped = raw("tensor_sum", a, b, width=0.5, offset=0.75)
    assert torch.equal(wrapped[:, 0], T([1.0, 0.0, 0.0, 1.0]))
    assert torch.equal(a, torch.zeros(4, 2)) and torch.equal(b, torch.ones(4, 2))


def test_tensor_sum_of_scalars_picks_by_width():
    a, b = T(1.0), T(2.0)
    assert raw("tensor_sum", a, b, width=0.7) is b
    assert raw("tensor_sum", a, b, width=0.3) is a


def test_top_k_tensor_sum_puts_a_values_in_b_order():
    a, b = T([3.0, 1.0, 2.0]), T([10.0, 30.0, 20.0])
    assert torch.equal(raw("top_k_tensor_sum", a, b, width=1.0), T([1.0, 3.0, 2.0]))
    assert torch.equal(raw("top_k_tensor_sum", a, b, width=0.0), a)
    result = raw("top_k_tensor_sum", torch.randn(50), torch.randn(50), width=0.6, offset=0.2)
    assert result.shape == (50,)
