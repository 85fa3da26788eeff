"""The median and Gaussian filters of smooth_add_difference (lib_mecha/methods/filters.py and its parts):
the separable median against a brute-force reference, the exact median and the blur against
scipy.ndimage, the selection networks against kthvalue, and the blocks, chunks and threads
that must not change any result."""
import itertools

import pytest
import torch

import lib_mecha.methods._filter_steps as steps
import lib_mecha.methods.filters as filters
from lib_mecha.memory import Scratch
from lib_mecha.methods._filter_steps import select
from lib_mecha.methods._networks import selection_network
from lib_mecha.methods.filters import add_smoothed_difference, gaussian_filter, median_filter, separable_median_filter

# dims of length 1, 2, 3, 4 and longer ones; 1-D, 2-D, 3-D and 4-D
SHAPES = [(1,), (2,), (3,), (4,), (9,), (2, 3), (3, 4), (5, 1), (1, 6), (4, 3, 2), (6, 1, 4),
          (3, 4, 3, 3), (5, 2, 3, 3), (2, 3, 1, 4), (7, 5, 3, 3)]


def reflected(i: int, n: int) -> int:
    """Half-sample reflection, d c b a | a b c d | d c b a, repeating."""
    i %= 2 * n
    return 2 * n - 1 - i if i >= n else i


def brute_separable_median(x: torch.Tensor, size: int) -> torch.Tensor:
    """Dimension by dimension: each element becomes the middle of its size neighbours' sorted values
    (for an even size the upper middle; the window starts size // 2 before the element)."""
    x = x.clone()
    for dim in range(x.dim()):
        n = x.shape[dim]
        before = x.clone()
        for index in itertools.product(*(range(m) for m in x.shape)):
            values = []
            for k in range(size):
                neighbour = list(index)
                neighbour[dim] = reflected(index[dim] + k - size // 2, n)
                values.append(float(before[tuple(neighbour)]))
            x[index] = sorted(values)[size // 2]
    return x


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_separable_median_is_the_median_along_each_dimension_in_turn(shape, size):
    g = torch.Generator().manual_seed(len(shape) * 10 + size)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    assert torch.equal(separable_median_filter(x, size), brute_separable_median(x, size))


def test_separable_median_with_ties_and_float32():
    x = torch.randint(0, 3, (6, 5, 3, 3)).float()
    assert torch.equal(separable_median_filter(x, 3), brute_separable_median(x, 3))


@pytest.fixture
def ndimage():
    return pytest.importorskip("scipy.ndimage", reason="scipy is the oracle for the filters")


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("shape", SHAPES + [(11, 9), (6, 17, 3, 3)], ids=str)
def test_exact_median_is_scipys(ndimage, shape, size):
    g = torch.Generator().manual_seed(size)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    expected = torch.from_numpy(ndimage.median_filter(x.numpy(), size=size))
    assert torch.equal(median_filter(x, size), expected)


def test_exact_median_with_ties_is_scipys(ndimage):
    x = torch.randint(0, 4, (6, 7, 3, 3)).double()
    expected = torch.from_numpy(ndimage.median_filter(x.numpy(), size=3))
    assert torch.equal(median_filter(x, 3), expected)


@pytest.mark.parametrize("sigma", [0.4, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("shape", [(1,), (2,), (3,), (40,), (2, 3), (3, 50), (1, 60), (2, 1, 70), (30, 3, 3),
                                   (5, 4, 3, 3), (100, 20), (20, 2, 40), (9, 30, 3, 3), (4, 3, 2, 1)], ids=str)
def test_gaussian_is_scipys(ndimage, shape, sigma):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    expected = torch.from_numpy(ndimage.gaussian_filter(x.numpy(), sigma))
    assert torch.allclose(gaussian_filter(x, sigma), expected, rtol=0, atol=1e-12)


def test_gaussian_truncate_and_float32_are_scipys(ndimage):
    x = torch.randn(40, 30)
    expected = torch.from_numpy(ndimage.gaussian_filter(x.numpy(), 1.5, truncate=2.0))
    assert torch.allclose(gaussian_filter(x, 1.5, truncate=2.0), expected, atol=1e-6)


def test_gaussian_weights_and_matrix_with_reflection():
    weights = steps.gaussian_weights(1.0)
    assert len(weights) == 9 and abs(sum(weights) - 1) < 1e-15 and weights == weights[::-1]
    # a length-2 axis: every tap lands on x0 or x1 (reflection repeats); each row sums to 1
    matrix, lo, hi = steps.blur_matrix(weights, 2, 0, 2, torch.float64)
    assert (lo, hi) == (0, 2) and torch.allclose(matrix.sum(1), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(matrix[0, 0], torch.tensor(sum(weights[k] for k in (0, 3, 4, 7, 8)), dtype=torch.float64))
    # an inner block reads exactly radius rows either side
    matrix, lo, hi = steps.blur_matrix(weights, 100, 10, 20, torch.float64)
    assert (lo, hi) == (6, 24) and torch.equal(matrix[0, :9], torch.tensor(weights, dtype=torch.float64))


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 9, 16, 25, 27, 81])
def test_selection_networks_pick_the_right_rank(count):
    g = torch.Generator().manual_seed(count)
    values = torch.randint(0, 5, (count, 400), generator=g).float()  # many ties
    values[:, :200] = torch.randn(count, 200, generator=g)
    scratch = Scratch(values)
    for rank in sorted({0, count // 2, count - 1, (count - 1) // 2}):
        expected = values.kthvalue(rank + 1, dim=0).values
        out = torch.empty(400)
        select(list(values), rank, out, scratch)
        assert torch.equal(out, expected), rank
        out = torch.empty(400)  # the way for hundreds of values
        steps.run(steps.sorted_select_steps(list(values), rank, out, scratch))
        assert torch.equal(out, expected), rank


def test_selection_network_of_81_is_pruned():
    network = selection_network(81, 40)
    assert 1000 < len(network.ops) < 1400  # far fewer than a full sort's 2 x 1471 min/max


def test_smoothing_keeps_steps_and_removes_spikes():
    step = torch.zeros(8, 8, 3, 3)
    step[4:] = 1.0
    spiked = step.clone()
    spiked[2, 3, 1, 1] = 50.0
    for smooth in (separable_median_filter, median_filter):
        assert torch.equal(smooth(spiked, 3), step)


def test_add_smoothed_difference_is_base_plus_scale_times_the_filters():
    g = torch.Generator().manual_seed(4)
    a, b, c = (torch.randn(9, 6, 3, 3, generator=g, dtype=torch.float64) for _ in range(3))
    scale = torch.rand(9, 6, 3, 3, generator=g, dtype=torch.float64)
    for exact, median in ((False, separable_median_filter), (True, median_filter)):
        smoothed = gaussian_filter(median(b - c, 3), 1.0)
        for s in (0.7, torch.tensor(0.7, dtype=torch.float64), scale, scale[0, 0]):
            result = add_smoothed_difference(a, s, b, c, 3, 1.0, exact_median=exact)
            assert torch.allclose(result, a + s * smoothed, atol=1e-12)
        assert torch.allclose(add_smoothed_difference(None, 2.0, b, c, 3, 1.0, exact), 2 * smoothed, atol=1e-12)


def use_tiny_blocks(patch):
    """Blocks of one row, chunks of one row, one output row per blur product."""
    for name, value in [("BLOCK_ELEMENTS", 1), ("EXACT_BLOCK_ELEMENTS", 1), ("BLUR_ROWS", 1),
                        ("BLUR_ELEMENTS", 1), ("CHUNK_ELEMENTS", 1), ("CHUNK_MIN_ROWS", 1), ("CHUNKS", 1000)]:
        patch.setattr(filters, name, value)


BLOCK_CASES = [(shape, size, exact) for shape in [(23, 5, 3, 3), (40, 7), (12, 30)] for size in (3, 4, 5)
               for exact in (False, True) if not (exact and size > 3 and len(shape) == 4)]  # 4^4, 5^4: slow


@pytest.mark.parametrize("shape, size, exact", BLOCK_CASES, ids=str)
def test_blocks_and_chunks_change_nothing(shape, size, exact, monkeypatch):
    g = torch.Generator().manual_seed(5)
    a, b, c = (torch.randn(shape, generator=g) for _ in range(3))
    median = median_filter if exact else separable_median_filter
    whole_median, whole = median(b, size), add_smoothed_difference(a, 0.5, b, c, size, 1.0, exact)
    use_tiny_blocks(monkeypatch)
    assert torch.equal(median(b, size), whole_median)
    assert torch.allclose(add_smoothed_difference(a, 0.5, b, c, size, 1.0, exact), whole, atol=1e-6)


def test_inputs_in_any_layout():
    g = torch.Generator().manual_seed(7)
    a, b, c = (torch.randn(6, 20, 3, 3, generator=g) for _ in range(3))
    expected = add_smoothed_difference(a, 0.5, b, c)
    swapped = [t.transpose(0, 1).contiguous().transpose(0, 1) for t in (a, b, c)]  # same values, other strides
    assert torch.equal(add_smoothed_difference(*swapped[:1], 0.5, *swapped[1:]), expected)
    assert add_smoothed_difference(a[:0], 0.5, b[:0], c[:0]).shape == (0, 20, 3, 3)
    assert torch.allclose(add_smoothed_difference(a[0, 0, 0, 0], 0.5, b[0, 0, 0, 0], c[0, 0, 0, 0]),
                          a[0, 0, 0, 0] + 0.5 * (b[0, 0, 0, 0] - c[0, 0, 0, 0]))
