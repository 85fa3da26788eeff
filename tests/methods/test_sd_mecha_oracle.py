"""sd-mecha 1.1.8's raw functions as an oracle, on random tensors, wherever sd-mecha is correct.

Known differences, not compared here: rotate on wide matrices (sd-mecha's transform there is
neither orthogonal nor the best fit; test_spectral pins ours), similarities of all-zero columns
in add_cosine_* (NaN there), random draws (ours are seeded per key), and dropout with a
non-odd overlap (crashes in 1.1.8).
"""
import inspect

import pytest
import torch

from lib_mecha.methods import all_methods
from lib_mecha.methods.spec import REQUIRED
from method_calls import raw

sd_mecha = pytest.importorskip("sd_mecha", reason="sd-mecha 1.1.8 is the oracle; it is installed in both venvs")
from sd_mecha.extensions import merge_methods as sdm  # noqa: E402

SD_MECHA_METHODS = [
    "perpendicular_component", "geometric_sum", "multiply_quotient", "train_difference_mask", "add_opposite_mask",
    "add_strict_opposite_mask", "add_cosine_a", "add_cosine_b", "ties_sum", "ties_sum_extended",
    "ties_sum_with_dropout", "dropout", "model_stock", "geometric_median", "rotate", "truncate_rank", "crossover",
    "tensor_sum", "top_k_tensor_sum", "exchange_ema",
]
STATE_DICT_METHODS = {"rotate"}  # sd-mecha passes these a mapping and the key


def theirs(name, *args, **kwargs):
    fn = sdm.resolve(name).__wrapped__
    if name in STATE_DICT_METHODS:
        args = [{"k": a} for a in args]
        kwargs = {k: torch.as_tensor(v, dtype=args[0]["k"].dtype) if k == "alpha" else v for k, v in kwargs.items()}
        return fn(*args, key="k", **kwargs)
    return fn(*args, **kwargs)


def _rand(*shape, seed, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# sd-mecha's TIES trims with a float32 threshold even for float64 inputs, so compare in float32
F32 = torch.float32


@pytest.mark.parametrize("name", SD_MECHA_METHODS)
def test_same_parameters_defaults_and_calling_convention(name):
    fn = sdm.resolve(name).__wrapped__
    ours = all_methods()[name]
    their_params = [p for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]
    our_params = [p for p in ours.params if p.kind != "key"]
    assert [p.name for p in our_params] == [p.name for p in their_params]
    for mine, other in zip(our_params, their_params):
        assert mine.variadic == (other.kind is other.VAR_POSITIONAL), mine.name
        assert mine.keyword_only == (other.kind is other.KEYWORD_ONLY), mine.name
        if other.default is not inspect.Parameter.empty:
            assert mine.default == other.default and type(mine.default) is type(other.default), mine.name
        else:
            assert mine.default is REQUIRED or mine.is_tensor, mine.name


ELEMENTWISE_CASES = [
    ("geometric_sum", 2, {"alpha": 0.3}),
    ("multiply_quotient", 3, {"alpha": 0.7}),
    ("train_difference_mask", 3, {"alpha": 1.0}),
    ("add_opposite_mask", 3, {"alpha": 0.5}),
    ("add_strict_opposite_mask", 3, {"alpha": 1.0}),
    ("perpendicular_component", 2, {}),
    ("add_cosine_a", 2, {"alpha": 0.2}),
    ("add_cosine_b", 2, {"alpha": 0.2}),
]


@pytest.mark.parametrize("name, arity, kwargs", ELEMENTWISE_CASES, ids=[c[0] for c in ELEMENTWISE_CASES])
@pytest.mark.parametrize("shape", [(7,), (6, 5), (4, 3, 3, 3)])
def test_agrees_with_sd_mecha(name, arity, kwargs, shape):
    inputs = [_rand(*shape, seed=i) for i in range(arity)]
    inputs[0].view(-1)[0] = 0.0  # include a zero base
    expected = theirs(name, *inputs, **kwargs)
    assert torch.allclose(raw(name, *inputs, **kwargs), expected, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("kwargs", [{"k": 1.0}, {"k": 0.3}, {"k": 0.3, "vote_sgn": True}])
def test_ties_sum_agrees(kwargs):
    deltas = [_rand(8, 6, seed=i, dtype=F32) for i in range(3)]
    assert torch.allclose(raw("ties_sum", *deltas, **kwargs), theirs("ties_sum", *deltas, **kwargs), atol=1e-6)


@pytest.mark.parametrize("kwargs", [{}, {"apply_stock": True}, {"apply_median": True}, {"k": 0.6, "vote_sgn": True}])
@pytest.mark.parametrize("shape", [(9,), (8, 6)])
def test_ties_sum_extended_agrees(kwargs, shape):
    deltas = [_rand(*shape, seed=i, dtype=F32) for i in range(3)]
    expected = theirs("ties_sum_extended", *deltas, **kwargs)
    assert torch.allclose(raw("ties_sum_extended", *deltas, **kwargs), expected, atol=1e-5)


def test_ties_sum_with_dropout_agrees_without_dropout():
    deltas = [_rand(8, 6, seed=i, dtype=F32) for i in range(3)]
    kwargs = dict(probability=0.0, k=0.5, seed=1)
    expected = theirs("ties_sum_with_dropout", *deltas, **{**kwargs, "probability": torch.tensor(0.0)})
    assert torch.allclose(raw("ties_sum_with_dropout", *deltas, **kwargs), expected, atol=1e-5)


def test_dropout_agrees_without_dropout():
    deltas = [_rand(5, 4, seed=i) for i in range(3)]
    expected = theirs("dropout", *deltas, probability=0.0, seed=3)
    assert torch.allclose(raw("dropout", *deltas, probability=0.0, seed=3), expected, atol=1e-12)


@pytest.mark.parametrize("shape", [(9,), (8, 6), (4, 3, 3, 3)])
def test_model_stock_and_geometric_median_agree(shape):
    deltas = [_rand(*shape, seed=i) for i in range(3)]
    assert torch.allclose(raw("model_stock", *deltas), theirs("model_stock", *deltas), atol=1e-12)
    # rounding decides the iteration at which ftol=1e-20 stops; the iterates agree to 1e-15
    assert torch.allclose(raw("geometric_median", *deltas, maxiter=5), theirs("geometric_median", *deltas, maxiter=5),
                          atol=1e-12)
    assert torch.allclose(raw("geometric_median", *deltas), theirs("geometric_median", *deltas), atol=1e-6)


@pytest.mark.parametrize("shape", [(8, 5), (5, 5), (6, 4, 3, 3), (4, 4, 1, 1)])
@pytest.mark.parametrize("alignment, alpha", [(1.0, 0.0), (0.5, 0.0), (1.0, 0.5), (0.3, 0.7)])
def test_rotate_agrees_on_tall_and_square_matrices(shape, alignment, alpha):
    a, b = _rand(*shape, seed=1), _rand(*shape, seed=2)
    expected = theirs("rotate", a, b, alignment=alignment, alpha=alpha)
    assert torch.allclose(raw("rotate", a, b, alignment=alignment, alpha=alpha), expected, atol=1e-8)


@pytest.mark.parametrize("rank", [0, 1, 3, 6])
def test_truncate_rank_agrees_with_the_exact_svd(rank):
    d = _rand(6, 4, 3, 3, seed=5)
    expected = theirs("truncate_rank", d, rank=rank, use_approximate_basis=False)
    assert torch.allclose(raw("truncate_rank", d, rank=rank, use_approximate_basis=False), expected, atol=1e-9)


@pytest.mark.parametrize("shape", [(8,), (7,), (6, 5), (5, 4, 3, 3), (4, 1)])
@pytest.mark.parametrize("alpha, tilt", [(0.5, 0.0), (0.3, 0.25), (0.7, 0.8), (0.4, 2.0), (0.6, 3.3), (0.2, 5.5)])
def test_crossover_agrees(shape, alpha, tilt):
    a, b = _rand(*shape, seed=1), _rand(*shape, seed=2)
    expected = theirs("crossover", a, b, alpha=alpha, tilt=tilt)
    assert torch.allclose(raw("crossover", a, b, alpha=alpha, tilt=tilt), expected, atol=1e-9)


# crossover's CPU passes see a tensor as (leading dims, last dim outside a small trailing block,
# that block): every arrangement of size-1, size-3 and longer dimensions takes another route
@pytest.mark.parametrize("shape", [(7, 6, 3, 3), (3, 3, 7, 6), (3, 7, 3, 6), (6, 7, 1, 1), (1, 1, 6, 7), (1, 6, 1, 7),
                                   (5, 1, 3), (3, 1, 5), (6, 3), (3, 6), (1, 7), (7, 1), (1, 1), (4, 5, 4, 2),
                                   (9, 10, 12), (12, 10, 9), (2, 3, 4, 5)])
@pytest.mark.parametrize("alpha, tilt", [(0.5, 0.0), (0.3, 0.25), (0.6, 3.3)])
def test_crossover_agrees_on_every_layout(shape, alpha, tilt):
    a, b = _rand(*shape, seed=1), _rand(*shape, seed=2)
    expected = theirs("crossover", a, b, alpha=alpha, tilt=tilt)
    assert torch.allclose(raw("crossover", a, b, alpha=alpha, tilt=tilt), expected, atol=1e-9)


@pytest.mark.parametrize("name", ["tensor_sum", "top_k_tensor_sum"])
@pytest.mark.parametrize("width, offset", [(0.5, 0.0), (0.3, 0.8), (-0.25, 0.5), (1.0, 0.0), (0.6, -0.3)])
def test_slicing_agrees(name, width, offset):
    a, b = _rand(10, 3, seed=1), _rand(10, 3, seed=2)
    expected = theirs(name, a.clone(), b.clone(), width=width, offset=offset)  # sd-mecha writes into its inputs
    assert torch.allclose(raw(name, a, b, width=width, offset=offset), expected)


def test_exchange_ema_uses_sd_mechas_ema_names():
    from sd_mecha.extensions.builtin.merge_methods.ema import to_ema_key_fns

    from lib_mecha.arch.base import resolve_architecture
    from lib_mecha.methods.ema import EMA_LAYOUTS
    arch = resolve_architecture("sd1-ldm")
    unet = [k for k in arch.keys if k.startswith("model.diffusion_model.")]
    assert unet and all(EMA_LAYOUTS["sd1-ldm"](k) == to_ema_key_fns["sd1-ldm"](k) for k in unet)
    assert all(EMA_LAYOUTS["sd1-ldm"](k) in arch.keys for k in unet)
