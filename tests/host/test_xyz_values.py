"""The Mecha axes' value syntax (lib_mecha.host.xyz_axes), without a WebUI."""
from __future__ import annotations

import pytest

from lib_mecha.errors import RecipeError
from lib_mecha.host import xyz_axes as axes


@pytest.mark.parametrize("text,values", [
    ("0.3", [0.3]),
    ("-0.5", [-0.5]),
    ("0-1", [0, 1]),
    ("0-1 (+0.25)", [0, 0.25, 0.5, 0.75, 1]),
    ("0 - 0.3 (+0.1)", [0, 0.1, 0.2, 0.3]),               # float noise never drops the end
    ("1-0 (-0.5)", [1, 0.5, 0]),
    ("-1-1 [3]", [-1, 0, 1]),
    ("0.2-0.4 [1]", [0.2]),
    ("1e-3-3e-3 [3]", [0.001, 0.002, 0.003]),
])
def test_numbers_and_ranges(text, values):
    assert axes.expand(text) == pytest.approx(values)


@pytest.mark.parametrize("text,problem", [
    ("high", "is not a number or a range"),
    ("0-1 (-0.5)", "never reaches its end"),
    ("0-1 (+0)", "never reaches its end"),
])
def test_bad_numbers(text, problem):
    with pytest.raises(RecipeError, match=problem):
        axes.expand(text)


def test_parameter_values_expand_their_ranges_and_read_tidy():
    assert axes.prepare_parameters("2.k=0.2, 2.k = 0.4,1.alpha=0-0.3 (+0.1), 1.alpha.IN04=0.5") == [
        "2.k=0.2", "2.k=0.4", "1.alpha=0", "1.alpha=0.1", "1.alpha=0.2", "1.alpha=0.3", "1.alpha.IN04=0.5"]
    with pytest.raises(RecipeError, match="write step.parameter=value"):
        axes.prepare_parameters("k=0.2")


def test_block_weight_values_split_at_bars_or_commas_outside_quotes():
    assert axes.prepare_blocks("GRAD_V | 1.alpha=0,0.5,1 |  ") == ["GRAD_V", "1.alpha=0,0.5,1"]
    assert axes.prepare_blocks('GRAD_V, "0,0.5,1", 1 1 1') == ["GRAD_V", "0,0.5,1", "1 1 1"]


def test_numbers_keep_ten_digits():
    assert axes.rounded(0.1 + 0.2) == 0.3 and axes.number_text(1 / 3) == "0.3333333333"


def test_methods_listed_for_a_step_take_models_and_give_one():
    names = axes.step_methods()
    assert {"weighted_sum", "slerp", "add_difference", "subtract", "n_average"} <= set(names)
    assert not {"apply_lora", "lora_delta", "convert_sd1_blocks_to_ldm", "train_difference_mask"} & set(names)
