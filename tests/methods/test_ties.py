"""TIES, Model Stock and the geometric median: hand-computed cases and properties."""
import math

import pytest
import torch

from method_calls import raw

T = torch.tensor


def test_ties_with_k_one_and_agreeing_signs_is_the_mean_of_the_deltas():
    d1, d2 = T([1.0, 2.0, -3.0]), T([3.0, 2.0, -1.0])
    assert torch.allclose(raw("ties_sum", d1, d2, k=1.0), T([2.0, 2.0, -2.0]))
    deltas = [torch.rand(4, 5) + 0.1 for _ in range(3)]
    assert torch.allclose(raw("ties_sum", *deltas), sum(deltas) / 3, atol=1e-6)


def test_ties_averages_only_the_deltas_that_agree_with_the_elected_sign():
    d1, d2, d3 = T([1.0, -2.0]), T([3.0, 1.0]), T([2.0, -1.0])
    assert torch.allclose(raw("ties_sum", d1, d2, d3), T([2.0, -1.5]))


def test_ties_vote_sgn_elects_by_the_sum_of_values():
    deltas = T([-1.0]), T([-1.0]), T([5.0])
    assert torch.allclose(raw("ties_sum", *deltas, vote_sgn=False), T([-1.0]))
    assert torch.allclose(raw("ties_sum", *deltas, vote_sgn=True), T([5.0]))


def test_ties_trims_by_magnitude_rank():
    # k = 0.5 over 4 entries: the threshold is the int(0.5·4) = 2nd smallest magnitude, so 3 entries stay
    assert torch.allclose(raw("ties_sum", T([1.0, -2.0, 3.0, 4.0]), k=0.5), T([0.0, -2.0, 3.0, 4.0]))
    # k = 0 keeps only the largest
    assert torch.allclose(raw("ties_sum", T([1.0, -2.0, 3.0, 4.0]), k=0.0), T([0.0, 0.0, 0.0, 4.0]))


def test_ties_of_opposite_deltas_is_zero_not_nan():
    assert torch.equal(raw("ties_sum", T([1.0, 2.0]), T([-1.0, -2.0])), T([0.0, 0.0]))


def test_ties_extended_apply_stock_true_is_plain_ties_as_in_sd_mecha():
    deltas = [torch.randn(6, 4) for _ in range(3)]
    extended = raw("ties_sum_extended", *deltas, k=0.5, apply_stock=True)
    assert torch.allclose(extended, raw("ties_sum", *deltas, k=0.5), atol=1e-6)


def test_ties_extended_default_applies_model_stock_scaling():
    base = torch.randn(6, 4)
    orthogonal_rows = [base, torch.linalg.qr(torch.randn(4, 4))[0][:, :1].T.expand(6, 4).contiguous()]
    plain = raw("ties_sum_extended", *orthogonal_rows, k=1.0, apply_stock=True)
    scaled = raw("ties_sum_extended", *orthogonal_rows, k=1.0, apply_stock=False)
    assert not torch.allclose(plain, scaled)
    same = raw("ties_sum_extended", base, base, k=1.0)
    assert torch.allclose(same, base, atol=1e-5)  # identical deltas: factor 1


def test_ties_extended_median_of_identical_deltas_is_that_delta():
    d = torch.randn(5, 3)
    assert torch.allclose(raw("ties_sum_extended", d, d, d, k=1.0, apply_median=True), d, atol=1e-5)


def test_model_stock_of_identical_deltas_is_that_delta():
    d = torch.randn(4, 6)
    assert torch.allclose(raw("model_stock", d, d, d), d, atol=1e-5)


def test_model_stock_hand_case():
    d1, d2 = T([1.0, 0.0]), T([1.0, 1.0])
    c = 1 / 2 ** 0.5
    t = 2 * c / (1 + c)
    assert torch.allclose(raw("model_stock", d1, d2), t * T([1.0, 0.5]), atol=1e-6)


def test_model_stock_factor_is_per_row_and_orthogonal_rows_vanish():
    d1 = T([[1.0, 0.0], [1.0, 0.0]])
    d2 = T([[0.0, 1.0], [2.0, 0.0]])  # row 0 orthogonal (t = 0), row 1 parallel (t = 1)
    result = raw("model_stock", d1, d2)
    assert torch.allclose(result, T([[0.0, 0.0], [1.5, 0.0]]), atol=1e-6)


def test_model_stock_of_one_delta_is_that_delta():
    d = torch.randn(3, 3)
    assert torch.allclose(raw("model_stock", d), d)


def test_geometric_median_of_identical_models_is_that_model():
    m = torch.randn(7, 3)
    assert torch.allclose(raw("geometric_median", m, m, m), m, atol=1e-6)


def test_geometric_median_resists_an_outlier():
    models = [T([0.0]), T([1.0]), T([1000.0])]
    median = raw("geometric_median", *models, maxiter=500)
    assert abs(float(median) - 1.0) < 1e-2  # the mean would be ~333.7


def test_geometric_median_with_no_iterations_is_the_mean():
    models = [torch.randn(4) for _ in range(3)]
    assert torch.allclose(raw("geometric_median", *models, maxiter=0), sum(models) / 3, atol=1e-6)


@pytest.mark.parametrize("name", ["ties_sum", "ties_sum_extended", "model_stock", "geometric_median"])
def test_single_model_calls_return_the_model_itself(name):
    d = torch.rand(5, 4) + 0.5
    kwargs = {"k": 1.0} if name.startswith("ties") else {}
    assert torch.allclose(raw(name, d, **kwargs), d, atol=1e-5)


def test_trim_threshold_is_exact_on_large_and_sparse_deltas(monkeypatch):
    import lib_mecha.methods._trim as trim
    from lib_mecha.workspace import Workspace
    g = torch.Generator().manual_seed(4)
    dense = torch.randn(300_000, generator=g)
    sparse = dense * (torch.rand(300_000, generator=g) < 0.1)  # 90% zeros, like a DARE-dropped delta
    sparse[::1000] = math.nan  # NaN is neither below nor at the 0 bracket
    sparse[1::1000] = 1.0
    sparse[2::1000] = -0.0  # at the 0 bracket (its sign bit is set)
    monkeypatch.setattr(trim, "SAMPLED_SELECTION_ABOVE", 1000)
    work = Workspace()
    for delta in (dense, sparse, sparse.double()):
        for k in (0.05, 0.2, 0.5, 0.85, 0.95):
            rank = max(int((1 - k) * delta.numel()), 1)
            expected = delta.abs().kthvalue(rank).values
            assert trim.kth_smallest_magnitude(delta, rank, work) == expected
            # a threshold of 0 keeps everything, as no threshold does (k = 1)
            assert trim.trim_threshold(delta, k, work) == (None if expected == 0 else expected)
    assert trim.trim_threshold(sparse, 0.5, work) is None and trim.trim_threshold(sparse, 0.05, work) is not None


SLICED_CASES = [
    ("ties_sum", {"k": 0.3}), ("ties_sum", {"k": 1.0, "vote_sgn": True}),
    ("ties_sum_extended", {}), ("ties_sum_extended", {"apply_stock": True, "k": 0.5}),
    ("ties_sum_extended", {"apply_median": True}), ("model_stock", {}), ("geometric_median", {}),
]


@pytest.mark.parametrize("name, kwargs", SLICED_CASES, ids=[f"{n}-{k}" for n, k in SLICED_CASES])
@pytest.mark.parametrize("shape", [(37, 11), (301,), (5, 4, 3, 3)])
def test_slice_by_slice_work_gives_the_whole_tensor_result(name, kwargs, shape, monkeypatch):
    import lib_mecha.methods._values as values
    g = torch.Generator().manual_seed(9)
    inputs = [torch.randn(shape, generator=g) for _ in range(3)]
    inputs[1].view(-1)[:5] = -inputs[0].view(-1)[:5]  # some ties in the vote
    whole = raw(name, *inputs, **kwargs)
    monkeypatch.setattr(values, "SLICE_ELEMENTS", 20)  # many slices, rows kept whole
    sliced = raw(name, *inputs, **kwargs)
    assert sliced.shape == whole.shape
    assert torch.allclose(sliced, whole, atol=1e-6, rtol=1e-6)
    assert not torch.equal(whole, torch.zeros_like(whole))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_ties_element_with_a_non_finite_difference_is_zero_and_others_are_untouched(bad):
    g = torch.Generator().manual_seed(2)
    deltas = [torch.randn(6, 5, generator=g) for _ in range(3)]
    clean = raw("ties_sum", *deltas, k=1.0)
    deltas[1][2, 3] = bad
    result = raw("ties_sum", *deltas, k=1.0)
    assert result[2, 3] == 0
    mask = torch.ones_like(result, dtype=torch.bool)
    mask[2, 3] = False
    assert torch.equal(result[mask], clean[mask])


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_ties_with_model_stock_gives_zero_where_a_difference_is_not_finite(bad, count):
    """The mean is zeroed after the Model Stock factor's product when there is one, before
    otherwise (one difference: no factor)."""
    g = torch.Generator().manual_seed(4)
    deltas = [torch.randn(6, 5, generator=g) for _ in range(count)]
    deltas[0][2, 3] = bad
    result = raw("ties_sum_extended", *deltas, k=1.0)  # apply_stock=False: Model Stock applied
    assert result[2, 3] == 0
    assert torch.isfinite(result).all()


@pytest.mark.parametrize("width", [1, 2, 3, 16, 17, 300])
def test_row_cosine_is_torchs_cosine_similarity_for_short_and_long_rows(width):
    from lib_mecha.methods._rows import row_cosine
    g = torch.Generator().manual_seed(width)
    x, y = torch.randn(50, 4, width, generator=g), torch.randn(50, 4, width, generator=g)
    x[0, 0] = 0  # a zero row: eps keeps it finite
    expected = torch.nn.functional.cosine_similarity(x, y, dim=-1, eps=1e-6)
    assert torch.allclose(row_cosine(x, y, 1e-6), expected, atol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 1e-30, 1e-6, 0.5])
def test_short_row_norms_are_the_clamped_root_of_the_sum_of_squares_also_for_zero_and_tiny_rows(eps):
    """Sums below the smallest normal float are raised to it before the root (MKL's root is slow on
    zeros): the norm must still be max(sqrt(sum), eps), exactly."""
    from lib_mecha.methods._rows import _row_norms, _RowBuffers
    rows = torch.tensor([[0.0, 0.0, 0.0], [1e-30, 0.0, 0.0], [1e-20, -1e-20, 0.0], [3e-19, 0.0, 4e-19],
                         [1e-10, 0.0, 0.0], [3.0, 4.0, 0.0], [float("nan"), 0.0, 0.0]])
    sums = (rows * rows).sum(dim=-1)
    assert (sums[1:3] < torch.finfo(torch.float32).tiny).all() and sums[0] == 0  # the cases the clamp touches
    expected = sums.sqrt().clamp(min=eps)
    norms = _row_norms(rows, eps, _RowBuffers(rows, None))
    assert torch.equal(norms.isnan(), expected.isnan())
    assert torch.equal(norms.nan_to_num(), expected.nan_to_num())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_ties_median_counts_a_non_finite_entry_as_zero_in_its_slice_only(bad, monkeypatch):
    """Slices are filtered first without zeroing non-finite entries, and again with it when they
    have some: without trimming (k = 1, whose threshold a non-finite entry would move), the
    result must be that of zeroing the entry beforehand."""
    import lib_mecha.methods._values as values
    monkeypatch.setattr(values, "SLICE_ELEMENTS", 20)
    g = torch.Generator().manual_seed(4)
    deltas = [torch.randn(12, 10, generator=g) for _ in range(3)]
    zeroed = [d.clone() for d in deltas]
    deltas[1][7, 2], zeroed[1][7, 2] = bad, 0.0
    result = raw("ties_sum_extended", *deltas, k=1.0, apply_median=True)
    assert torch.isfinite(result).all()
    assert torch.equal(result, raw("ties_sum_extended", *zeroed, k=1.0, apply_median=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_zero_brackets_count_of_nonzero_entries_is_count_nonzero(dtype):
    """The count that confirms a [0, 0] bracket (sparse deltas) must be exact: NaN, ±inf and
    subnormals count, +0 and -0 do not."""
    from lib_mecha.memory import Scratch
    from lib_mecha.methods._trim import _count_nonzero
    g = torch.Generator().manual_seed(6)
    x = torch.randn(5000, generator=g, dtype=dtype) * (torch.rand(5000, generator=g) < 0.2)
    x[:6] = torch.tensor([math.nan, math.inf, -math.inf, -0.0, 1e-310 if dtype == torch.float64 else 1e-40, -2.0])
    assert _count_nonzero(x, Scratch(x)) == int(torch.count_nonzero(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_selected_entries_are_torchs_boolean_indexing_in_every_dtype(dtype):
    from lib_mecha.methods._trim import _selected
    g = torch.Generator().manual_seed(6)
    values = torch.randn(1000, generator=g).to(dtype)
    mask = torch.rand(1000, generator=g) < 0.1
    picked = _selected(values, mask)
    assert picked.dtype == dtype and torch.equal(picked, values[mask])
