"""Recipe helpers expand to registered methods only (so sd-mecha reads the .mecha back)."""
import pytest

import lib_mecha.compose as compose
import lib_mecha.methods as methods
from lib_mecha.errors import MergeSpaceError
from lib_mecha.recipe import MergeNode, model, walk

A, B, C, BASE = model("a"), model("b"), model("c"), model("base")


def _methods_used(node):
    return {n.method for n in walk(node) if isinstance(n, MergeNode)}


def test_add_perpendicular_expansion():
    node = compose.add_perpendicular(A, B, C, alpha=0.5)
    assert node == methods.build("add_difference", A, methods.build(
        "perpendicular_component", methods.build("subtract", A, C), methods.build("subtract", B, C)), alpha=0.5)


def test_ties_helpers_turn_weights_into_deltas_and_keep_deltas():
    delta = methods.build("subtract", C, BASE)
    node = compose.add_difference_ties(BASE, A, delta, k=0.3)
    ties = next(n for n in walk(node) if isinstance(n, MergeNode) and n.method == "ties_sum")
    assert ties.args == (methods.build("subtract", A, BASE), delta)
    assert node.method == "fallback" and methods.merge_space_of(node) == "weight"
    extended = compose.add_difference_ties_extended(BASE, A, B, apply_stock=True)
    assert "ties_sum_extended" in _methods_used(extended)


def test_add_ties_with_dare_passes_every_option():
    node = compose.add_ties_with_dare(BASE, A, B, probability=0.5, della_eps=0.1, seed=7, alpha=0.8)
    dare = node.args[1]
    assert dare.method == "ties_sum_with_dropout"
    kwargs = dict(dare.kwargs)
    assert (kwargs["probability"].value, kwargs["della_eps"].value, kwargs["seed"].value, kwargs["k"].value) == \
        (0.5, 0.1, 7, 1.0)


def test_dropout_n_model_stock_copy_region_rotate():
    assert compose.dropout(A, B, C).args[1].method == "dropout"
    assert compose.n_model_stock(BASE, A, B).args[1].method == "model_stock"
    assert compose.copy_region(A, B).method == "tensor_sum"
    assert compose.copy_region(A, B, C, top_k=True).args[1].method == "top_k_tensor_sum"
    assert compose.tensor_sum is compose.copy_region
    assert compose.rotate(A, B, C, alignment=0.5).args[1].method == "rotate"


@pytest.mark.parametrize("helper, mask", [(compose.train_difference, "train_difference_mask"),
                                          (compose.add_opposite, "add_opposite_mask"),
                                          (compose.clamped_add_opposite, "add_strict_opposite_mask")])
def test_masked_differences_feed_the_mask_into_alpha(helper, mask):
    node = helper(A, B, C, alpha=0.7)
    add = node.args[0]
    assert node.method == "fallback" and add.method == "add_difference"
    assert add.args[2] == methods.build(mask, A, B, C, alpha=0.7)
    assert add.args[1] == methods.build("subtract", B, C)


def test_helpers_check_spaces_when_built():
    with pytest.raises(MergeSpaceError):
        compose.dropout(methods.build("subtract", A, B), C)
