"""Bad input is refused when the recipe is built, before any tensor is read."""
import pytest

import lib_mecha.methods as methods
from lib_mecha.errors import MergeSpaceError, ParameterError
from lib_mecha.recipe import literal, model

A, B, C = model("a"), model("b"), model("c")
DA, DB = methods.build("subtract", A, C), methods.build("subtract", B, C)


@pytest.mark.parametrize("name, args, kwargs, param", [
    ("ties_sum", (DA, DB), {"k": 1.5}, "k"),
    ("ties_sum", (DA, DB), {"k": -0.1}, "k"),
    ("ties_sum_extended", (DA,), {"k": 2.0}, "k"),
    ("ties_sum_with_dropout", (DA, DB), {"probability": 1.0}, "probability"),
    ("ties_sum_with_dropout", (DA, DB), {"probability": -0.5}, "probability"),
    ("dropout", (DA, DB), {"probability": 1.2}, "probability"),
    ("truncate_rank", (DA,), {"rank": -1}, "rank"),
    ("truncate_rank", (DA,), {"rank": 2.5}, "rank"),
    ("geometric_median", (A, B), {"eps": 0.0}, "eps"),
    ("geometric_median", (A, B), {"maxiter": -3}, "maxiter"),
    ("crossover", (A, B), {"alpha": 1.5}, "alpha"),
    ("extract_features", (A, B, C), {"beta": 2.0}, "beta"),
    ("extract_features", (A, B, C), {"gamma": -1.0}, "gamma"),
    ("smooth_add_difference", (A, B, C), {"sigma": -1.0}, "sigma"),
    ("add_noise", (A,), {"alpha": -0.1}, "alpha"),
    ("ties_sum", (DA,), {"vote_sgn": 1}, "vote_sgn"),
    ("dropout", (DA,), {"seed": 1.5}, "seed"),
    ("ties_sum", (DA,), {"k": literal({"IN00": 0.5, "OUT11": 1.5}, config="sd1-supermerger_blocks")}, "k"),
    ("rotate", (A, B), {"stiefel_max_iters": 0}, "stiefel_max_iters"),
])
def test_out_of_range_parameters(name, args, kwargs, param):
    with pytest.raises(ParameterError) as caught:
        methods.build(name, *args, **kwargs)
    assert caught.value.param == param and caught.value.method == name


@pytest.mark.parametrize("name", ["ties_sum", "ties_sum_extended", "ties_sum_with_dropout", "dropout",
                                  "model_stock", "geometric_median"])
def test_too_few_models(name):
    with pytest.raises(ParameterError, match="at least one model"):
        methods.build(name)


@pytest.mark.parametrize("name, args", [
    ("ties_sum", (A, B)),
    ("model_stock", (DA, B)),
    ("ties_sum_with_dropout", (A,)),
    ("dropout", (A, DB)),
    ("truncate_rank", (A,)),
])
def test_weights_where_deltas_are_expected(name, args):
    with pytest.raises(MergeSpaceError, match="subtract"):
        methods.build(name, *args)


@pytest.mark.parametrize("name, args", [
    ("add_cosine_a", (DA, DB)),
    ("add_cosine_b", (A, DB)),
    ("sum_twice", (A, B, DA)),
    ("geometric_median", (A, DB)),
])
def test_deltas_where_weights_are_expected(name, args):
    with pytest.raises(MergeSpaceError):
        methods.build(name, *args)


def test_masks_return_param_space_and_feed_alpha():
    mask = methods.build("train_difference_mask", A, B, C)
    assert methods.merge_space_of(mask) == "param"
    node = methods.build("add_difference", A, DB, alpha=mask)
    assert methods.merge_space_of(node) == "weight"


def test_valid_calls_build_with_every_default_filled_in():
    node = methods.build("ties_sum_with_dropout", DA, DB, seed=42)
    kwargs = dict(node.kwargs)
    assert kwargs["seed"] == literal(42) and kwargs["probability"] == literal(0.9)
    assert [name for name, _ in node.kwargs][-1] == "seed"  # the key parameter is not part of the recipe
