"""lib_mecha.recipe_edit: steps numbered as the Mecha tab numbers them, one step changed."""
from __future__ import annotations

import pytest

import lib_mecha
from lib_mecha import recipe_edit as edit
from lib_mecha.errors import MergeSpaceError, ParameterError, RecipeError
from lib_mecha.methods import build
from lib_mecha.recipe import model

A, B, C = model("a.safetensors"), model("b.safetensors"), model("c.safetensors")
SD1 = "sd1-supermerger_blocks"


def recipes():
    first = lib_mecha.weighted_sum(A, B, alpha=0.3)
    with_lora = build("apply_lora", first, model("style.safetensors"), 0.6)
    return {
        "one step": lib_mecha.weighted_sum(A, B, alpha=0.5),
        "add difference (3 steps)": lib_mecha.add_difference(first, B, C, alpha=0.5),
        "shared step": lib_mecha.weighted_sum(first, build("add_difference", first, build("subtract", B, C)),
                                              alpha=0.2),
        "lora on step 1": lib_mecha.weighted_sum(with_lora, C, alpha=0.3),
        "n_average": build("n_average", first, B, C),
        "block weights": lib_mecha.weighted_sum(A, B, alpha=lib_mecha.blocks(SD1, {"IN04": 0.9}, default=0.4)),
    }


@pytest.mark.parametrize("name", list(recipes()))
def test_steps_are_numbered_as_the_tab_reads_the_recipe(name):
    from lib_mecha.ui import lora_support
    from lib_mecha.ui.reading import from_node
    root = recipes()[name]
    draft = from_node(root, lora_support.reader(), lora_support.builder())
    assert [s.method for s in edit.steps_of(root)] == [s.method for s in draft]


def test_a_parameter_of_one_step_and_the_steps_that_use_it():
    root = recipes()["shared step"]
    changed = edit.with_parameter(root, 1, "alpha", 0.7)
    first = lib_mecha.weighted_sum(A, B, alpha=0.7)
    assert changed == lib_mecha.weighted_sum(first, build("add_difference", first, build("subtract", B, C)),
                                             alpha=0.2)
    assert edit.with_parameter(root, 4, "alpha", 0.9).argument("alpha").value == 0.9


def test_a_lora_stays_on_its_step():
    root = recipes()["lora on step 1"]
    changed = edit.with_parameter(root, 1, "alpha", 0.1)
    lora = changed.args[0]
    assert lora.method == "apply_lora" and lora.args[0] == lib_mecha.weighted_sum(A, B, alpha=0.1)


def test_what_a_step_or_parameter_edit_refuses():
    root = recipes()["add difference (3 steps)"]
    with pytest.raises(RecipeError, match="the recipe has 4 steps; there is no step 5"):
        edit.with_parameter(root, 5, "alpha", 0.1)
    with pytest.raises(ParameterError, match="subtract: parameter 'alpha': no such parameter"):
        edit.with_parameter(root, 2, "alpha", 0.1)
    with pytest.raises(ParameterError, match="is a model input, not a value"):
        edit.with_parameter(root, 1, "a", 0.1)
    crossover = build("crossover", A, B, alpha=0.5)
    with pytest.raises(ParameterError, match=r"1.5 is out of range; it must be in \[0.0, 1.0\]"):
        edit.with_parameter(crossover, 1, "alpha", 1.5)


def test_block_weights_keep_the_default_of_blocks_left_out():
    from lib_mecha.arch.presets import preset
    root = recipes()["block weights"]
    assert edit.block_weight_parameters(root) == [(1, "alpha", SD1)]
    listed = ",".join(["0.1"] + [""] * 25)                    # BASE only: the rest keep 0.4
    assert edit.with_block_weights(root, 1, "alpha", listed, SD1) == lib_mecha.weighted_sum(
        A, B, alpha=lib_mecha.blocks(SD1, {"BASE": 0.1}, default=0.4))
    assert edit.with_block_weights(root, 1, "alpha", "GRAD_V", SD1) == lib_mecha.weighted_sum(
        A, B, alpha=lib_mecha.blocks(SD1, preset(SD1, "GRAD_V").as_dict()))
    plain = recipes()["one step"]                             # a plain value becomes the default
    assert edit.with_block_weights(plain, 1, "alpha", {"IN00": 1.0}, SD1) == lib_mecha.weighted_sum(
        A, B, alpha=lib_mecha.blocks(SD1, {"IN00": 1.0}, default=0.5))


def test_another_method_from_the_same_inputs():
    root = recipes()["add difference (3 steps)"]
    assert edit.steps_of(edit.with_method(root, 1, "slerp"))[0] == lib_mecha.slerp(A, B, alpha=0.3)
    assert edit.steps_of(edit.with_method(root, 1, "n_average"))[0] == build("n_average", A, B)
    avg = recipes()["n_average"]                               # three inputs into two: refused
    with pytest.raises(RecipeError, match="'weighted_sum' does not fit step 2 \\(n_average of 3 inputs\\)"):
        edit.with_method(avg, 2, "weighted_sum")
    with pytest.raises(MergeSpaceError, match="add_difference: parameter 'b' expects a delta"):
        edit.with_method(root, 1, "add_difference")
    with pytest.raises(RecipeError, match="'add_cosine_a' does not fit step 2"):
        edit.with_method(root, 2, "add_cosine_a")              # subtract's delta into a weight method
    assert edit.steps_of(edit.with_method(root, 1, "crossover"))[0].argument("alpha").value == 0.3


def test_one_blocks_value_keeps_the_other_blocks():
    root = recipes()["block weights"]                          # IN04 0.9, the rest 0.4
    assert edit.with_block_value(root, 1, "alpha", "IN00", 0.1, SD1) == lib_mecha.weighted_sum(
        A, B, alpha=lib_mecha.blocks(SD1, {"IN00": 0.1, "IN04": 0.9}, default=0.4))
    assert edit.with_block_value(recipes()["one step"], 1, "alpha", "IN00", 0.1, SD1) == lib_mecha.weighted_sum(
        A, B, alpha=lib_mecha.blocks(SD1, {"IN00": 0.1}, default=0.5))
    with pytest.raises(ParameterError, match="IN99"):
        edit.with_block_value(root, 1, "alpha", "IN99", 0.1, SD1)
