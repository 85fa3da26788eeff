"""top_k_tensor_sum without whole-tensor float sorts (lib_mecha/methods/_rank_transfer.py) gives
what the whole-tensor sorts gave: compared with a copy of that code, kept here as the reference,
and with sd-mecha 1.1.8 where its arithmetic allows (finite values)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from lib_mecha.methods import _rank_transfer as rt
from lib_mecha.methods import slicing
from lib_mecha.methods.slicing import region
from lib_mecha.workspace import Workspace
from method_calls import raw

NAN, INF = float("nan"), float("inf")
# (width, offset): plain bands from the smallest magnitudes, bands in the middle (two runs of
# ranks: negative and positive values), wrapped (inverted) bands, negative widths, empty and full
BANDS = [(1.0, 0.0), (0.5, 0.0), (0.0, 0.0), (0.0, 0.4), (0.25, 0.5), (0.5, 0.5), (0.3, 0.8), (0.6, -0.3),
         (-0.25, 0.5), (0.999, 0.0), (0.001, 0.999), (1.0, 0.5), (0.2, 0.9), (0.9, 0.05)]


def reference(a: torch.Tensor, b: torch.Tensor, width: float, offset: float) -> torch.Tensor:
    """top_k_tensor_sum as it was computed before: whole-tensor float sorts and gathers."""
    a_flat = a.flatten()
    a_sorted = torch.sort(a_flat).values
    b_order = torch.argsort(b.flatten(), stable=True)
    b_rank = torch.empty_like(b_order)
    b_rank[b_order] = torch.arange(b_order.numel())
    start, end, inverted = region(width, offset, a_flat.numel())

    def kth(k):
        return torch.tensor(-1.0) if k <= 0 else torch.kthvalue(a_sorted.abs().float(), k).values

    low, high = kth(start), kth(end)
    magnitude = a_sorted.abs()
    in_band = (low <= magnitude) & (magnitude <= high)
    if inverted:
        in_band = ~in_band
    take = torch.gather(in_band, 0, b_rank)
    return torch.where(take, torch.gather(a_sorted, 0, b_rank), a_flat).reshape(a.shape)


def same(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Equal values (a NaN equals a NaN; -0.0 equals +0.0), shapes and dtypes."""
    return x.shape == y.shape and x.dtype == y.dtype and torch.allclose(x, y, rtol=0, atol=0, equal_nan=True)


def ours(a, b, width, offset, workspace=None):
    return raw("top_k_tensor_sum", a, b, width=width, offset=offset, workspace=workspace)


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    """As on a merge's threads (engine/threads.py): many small ops, no OpenMP team to wake."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 32 entries, spans of 96, and no tensor too small for the fp16 keys: small
    tensors cross several chunks and spans."""
    monkeypatch.setattr(rt, "SMALL", 0)
    monkeypatch.setattr(rt, "CHUNK", 32)
    monkeypatch.setattr(rt, "PIECE", 16)
    monkeypatch.setattr(rt, "SPAN", 96)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def half_values(n, seed, scale=0.02):
    """Float32 holding fp16 numbers, as the engine hands over checkpoint weights."""
    return (torch.randn(n, generator=_gen(seed)) * scale).half().float()


def heavy_ties(n, seed, levels=12):
    """Few distinct fp16 numbers, each held by many entries."""
    return torch.randint(-levels, levels + 1, (n,), generator=_gen(seed)).float() / 8


def with_specials(x, seed, specials):
    """``x`` with a tenth of its entries replaced by each of ``specials``."""
    x = x.clone()
    g = _gen(seed)
    for value in specials:
        x[torch.rand(x.numel(), generator=g) < 0.1] = value
    return x


def signed_zeros(n, seed):
    """Heavy ties with many zeros, half of them -0.0."""
    x = heavy_ties(n, seed, levels=2)
    flip = torch.rand(n, generator=_gen(seed + 1)) < 0.5
    return torch.where(flip, -x, x)


KINDS = {
    "fp16 values": lambda n, s: half_values(n, s),
    "fp16 heavy ties": lambda n, s: heavy_ties(n, s),
    "float32 values": lambda n, s: torch.randn(n, generator=_gen(s)),
    "signed zeros": signed_zeros,
    "fp16 with inf": lambda n, s: with_specials(heavy_ties(n, s), s, [INF, -INF]),
    "NaN, inf, -0.0": lambda n, s: with_specials(heavy_ties(n, s), s, [NAN, -NAN, INF, -INF, -0.0, 0.0]),
    "beyond fp16": lambda n, s: with_specials(heavy_ties(n, s), s, [1e5, -7e4, 1e-40]),
    "fp16 subnormals": lambda n, s: heavy_ties(n, s) * 2.0 ** -20,
}
PAIRS = [(k, k) for k in KINDS] + [("fp16 heavy ties", "float32 values"), ("float32 values", "fp16 heavy ties"),
                                   ("NaN, inf, -0.0", "fp16 values"), ("fp16 values", "NaN, inf, -0.0"),
                                   ("signed zeros", "fp16 heavy ties"), ("fp16 heavy ties", "signed zeros")]


@pytest.mark.parametrize("kind_a, kind_b", PAIRS)
@pytest.mark.parametrize("n", [1, 2, 7, 97, 1000])
def test_equals_the_whole_tensor_sorts(kind_a, kind_b, n, small_chunks):
    a, b = KINDS[kind_a](n, 1), KINDS[kind_b](n, 2)
    for width, offset in BANDS:
        assert same(ours(a, b, width, offset), reference(a, b, width, offset)), (width, offset)


@pytest.mark.parametrize("kind_a, kind_b", [("fp16 heavy ties", "fp16 heavy ties"), ("fp16 values", "fp16 values"),
                                            ("float32 values", "fp16 heavy ties"),
                                            ("NaN, inf, -0.0", "NaN, inf, -0.0")])
def test_equals_the_whole_tensor_sorts_at_full_size(kind_a, kind_b, monkeypatch):
    """Chunks big enough for torch's radix sort (it takes over from 32 K entries), several spans."""
    monkeypatch.setattr(rt, "SPAN", 2 * rt.CHUNK)
    n = 7 * (5 * rt.CHUNK // 7 + 19)
    a, b = KINDS[kind_a](n, 3).reshape(-1, 7), KINDS[kind_b](n, 4).reshape(-1, 7)
    for width, offset in [(1.0, 0.0), (0.5, 0.0), (0.25, 0.5), (0.3, 0.8)]:
        assert same(ours(a, b, width, offset), reference(a, b, width, offset)), (width, offset)


@pytest.mark.parametrize("shape", [(), (1,), (0,), (0, 3), (3, 1), (5, 4, 3, 3)])
def test_shapes(shape, small_chunks):
    n = torch.Size(shape).numel()
    a, b = heavy_ties(n, 5).reshape(shape), heavy_ties(n, 6).reshape(shape)
    for width, offset in BANDS:
        result = ours(a, b, width, offset)
        assert result.shape == a.shape and same(result, reference(a, b, width, offset)), (width, offset)


def test_ties_keep_index_order(small_chunks):
    """B of one repeated value: its stable order is the index order, so A comes out sorted."""
    a = heavy_ties(200, 7)
    assert torch.equal(ours(a, torch.full((200,), 0.5), 1.0, 0.0), torch.sort(a).values)
    b = torch.tensor([0.0, -0.0] * 100)  # -0.0 ties with +0.0
    assert torch.equal(ours(a, b, 1.0, 0.0), torch.sort(a).values)


def test_values_outside_the_band_keep_their_bits(small_chunks):
    a = torch.tensor([1.0, -0.0, 2.0, -0.0, 3.0, -0.0])
    b = torch.tensor([9.0, 1.0, 8.0, 2.0, 7.0, 3.0])
    result = ours(a, b, 1 / 3, 2 / 3)  # the band: the 4th to 6th smallest magnitudes, 1 to 3
    assert torch.equal(result, torch.tensor([3.0, 0.0, 2.0, 0.0, 1.0, 0.0]))
    assert torch.equal(torch.signbit(result), torch.tensor([False, True] * 3))


@pytest.mark.parametrize("kind_a, kind_b", [("fp16 heavy ties", "fp16 heavy ties"), ("signed zeros", "fp16 values"),
                                            ("NaN, inf, -0.0", "NaN, inf, -0.0")])
def test_small_tensors_are_sorted_whole(kind_a, kind_b, monkeypatch):
    """Below ``SMALL`` entries both tensors get 32-bit keys and one sort each, whatever they hold."""
    def no_chunks(*args, **kwargs):
        raise AssertionError("used 16-bit keys")

    monkeypatch.setattr(rt, "_HalfScan", no_chunks)
    for n in [0, 1, 5, 300]:
        a, b = KINDS[kind_a](n, 18), KINDS[kind_b](n, 19)
        for width, offset in BANDS:
            assert same(ours(a, b, width, offset), reference(a, b, width, offset)), (n, width, offset)


def test_other_dtypes_and_devices_keep_the_whole_tensor_sorts():
    a, b = heavy_ties(300, 8).double(), heavy_ties(300, 9).double()
    for width, offset in BANDS:
        assert same(ours(a, b, width, offset), reference(a, b, width, offset))
    a16, b16 = a.half(), b.half()
    assert same(ours(a16, b16, 0.5, 0.2), reference(a16, b16, 0.5, 0.2))


def test_fp16_values_take_the_chunked_ranks(small_chunks, monkeypatch):
    """No whole-tensor sort at all when both hold fp16 numbers."""
    def no_sort(*args, **kwargs):
        raise AssertionError("sorted a whole tensor")

    monkeypatch.setattr(rt, "_b_order", no_sort)
    monkeypatch.setattr(rt, "_FloatSortedA", no_sort)
    monkeypatch.setattr(slicing, "_rearranged_by_sorting", no_sort)
    a, b = half_values(500, 10), heavy_ties(500, 11)
    assert same(ours(a, b, 0.5, 0.2), reference(a, b, 0.5, 0.2))


@pytest.mark.parametrize("spoiler", [1e-40, 70000.0, 1.0 + 2.0 ** -20, NAN])
def test_one_value_that_is_no_fp16_number_takes_the_32_bit_keys(spoiler, small_chunks, monkeypatch):
    def no_chunks(*args, **kwargs):
        raise AssertionError("used 16-bit keys")

    monkeypatch.setattr(rt, "_place_by_half_keys", no_chunks)
    a, b = heavy_ties(300, 12), heavy_ties(300, 13)
    b[177] = spoiler
    a[33] = spoiler
    assert same(ours(a, b, 0.7, 0.1), reference(a, b, 0.7, 0.1))


@pytest.mark.parametrize("kind", ["fp16 heavy ties", "float32 values", "NaN, inf, -0.0"])
def test_granted_threads_change_nothing(kind, small_chunks, loop_threads):
    a, b = KINDS[kind](500, 14), KINDS[kind](500, 15)
    alone = [ours(a, b, w, o) for w, o in BANDS]
    helpers = loop_threads
    with ThreadPoolExecutor(1, thread_name_prefix="granted") as pool:
        work = Workspace(helpers=pool, helper_count=1)
        shared = [ours(a, b, w, o, work) for w, o in BANDS]
    assert any(name.startswith("granted") for name in helpers)
    assert all(same(x, y) for x, y in zip(shared, alone))


@pytest.mark.parametrize("kind", ["fp16 heavy ties", "fp16 values", "float32 values", "signed zeros"])
@pytest.mark.parametrize("width, offset", BANDS)
def test_agrees_with_sd_mecha(kind, width, offset, small_chunks):
    sd_mecha = pytest.importorskip("sd_mecha", reason="sd-mecha 1.1.8 is the oracle")  # noqa: F841
    from sd_mecha.extensions import merge_methods as sdm
    a, b = KINDS[kind](300, 16).reshape(30, 10), KINDS[kind](300, 17).reshape(30, 10)
    theirs = sdm.resolve("top_k_tensor_sum").__wrapped__(a.clone(), b.clone(), width=width, offset=offset)
    assert torch.equal(ours(a, b, width, offset), theirs)


SIXTEEN_BIT_KINDS = ["fp16 values", "fp16 heavy ties", "signed zeros", "fp16 with inf", "fp16 subnormals"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", SIXTEEN_BIT_KINDS)
def test_16_bit_inputs_give_the_float32_result_in_their_dtype_without_sorting(dtype, kind, small_chunks,
                                                                            monkeypatch):
    """Stored float16/bfloat16 weights (the engine hands them over as they are: stored_dtype) are
    ranked by their own bits: no whole-tensor sort, and no conversion to float32."""
    a, b = KINDS[kind](500, 18).to(dtype), KINDS[kind](500, 19).to(dtype)
    expected = [reference(a.float(), b.float(), w, o).to(dtype) for w, o in BANDS]

    def no_sort(*args, **kwargs):
        raise AssertionError("sorted a whole tensor")

    monkeypatch.setattr(rt, "_b_order", no_sort)
    monkeypatch.setattr(rt, "_FloatSortedA", no_sort)
    monkeypatch.setattr(slicing, "_rearranged_by_sorting", no_sort)
    monkeypatch.setattr(rt, "_half_bits", no_sort)  # the float32 check of being fp16 numbers
    for (width, offset), want in zip(BANDS, expected):
        assert same(ours(a, b, width, offset), want), (width, offset)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_inputs_with_nan_or_few_entries_are_ranked_as_float32(dtype, small_chunks, monkeypatch):
    a, b = KINDS["NaN, inf, -0.0"](400, 20).to(dtype), KINDS["fp16 heavy ties"](400, 21).to(dtype)
    for width, offset in BANDS:
        assert same(ours(a, b, width, offset), reference(a.float(), b.float(), width, offset).to(dtype))
        assert same(ours(b, a, width, offset), reference(b.float(), a.float(), width, offset).to(dtype))
    monkeypatch.setattr(rt, "SMALL", 1000)  # too few for the 16-bit keys
    a = KINDS["fp16 values"](400, 22).to(dtype)
    assert same(ours(a, b, 0.5, 0.2), reference(a.float(), b.float(), 0.5, 0.2).to(dtype))


def test_one_input_stored_and_one_computed_are_ranked_in_the_wider_dtype(small_chunks):
    a, b = half_values(300, 23), torch.randn(300, generator=_gen(24))
    assert same(ours(a.half(), b, 0.4, 0.3), reference(a, b, 0.4, 0.3))
    assert same(ours(b, a.half(), 0.4, 0.3), reference(b, a, 0.4, 0.3))
