"""The builder's draft → recipe node: every value mode, step references, errors."""
from __future__ import annotations

from dataclasses import replace

import pytest

import lib_mecha
from lib_mecha.arch.block_weights import blocks
from lib_mecha.arch.patterns import pattern_weights
from lib_mecha.errors import MergeSpaceError, ParameterError
from lib_mecha.recipe import literal, model
from lib_mecha.ui import model as m

SD1 = "sd1-supermerger_blocks"


def ws(a="a", b="b", **params):
    step = m.new_step("weighted_sum").with_input("a", m.Input.model(a)).with_input("b", m.Input.model(b))
    for name, pv in params.items():
        step = step.with_param(name, pv)
    return step


def test_one_step_is_the_method_call():
    node = m.to_node((ws(alpha=m.ParamValue(0.3)),))
    assert node == lib_mecha.weighted_sum(model("a"), model("b"), alpha=literal(0.3))


def test_full_blocks_become_the_layout_converter():
    values = {b: i / 25 for i, b in enumerate(lib_mecha.arch.resolve_layout(SD1).blocks)}
    pv = m.ParamValue(0.5, mode=m.BLOCKS, config=SD1, blocks=tuple(values.items()))
    node = m.to_node((ws(alpha=pv),))
    assert node == lib_mecha.weighted_sum(model("a"), model("b"), alpha=blocks(SD1, values))
    assert "fallback" not in repr(node)


def test_partial_blocks_fall_back_to_the_plain_value():
    pv = m.ParamValue(0.25, mode=m.BLOCKS, config=SD1, blocks=(("IN00", 0.1), ("M00", 0.9)))
    node = m.to_node((ws(alpha=pv),))
    expected = blocks(SD1, {"IN00": 0.1, "M00": 0.9}, default=0.25)
    assert node == lib_mecha.weighted_sum(model("a"), model("b"), alpha=expected)


def test_blocks_are_written_in_layout_order_whatever_the_edit_order():
    first = m.ParamValue(0.5, mode=m.BLOCKS, config=SD1, blocks=(("M00", 1.0), ("IN00", 0.0)))
    second = replace(first, blocks=(("IN00", 0.0), ("M00", 1.0)))
    assert m.to_node((ws(alpha=first),)) == m.to_node((ws(alpha=second),))


def test_patterns_match_the_library_helper():
    text = "model.diffusion_model.input_blocks.*: 0.2\nre:attn2\\.to_k: 0.9"
    pv = m.ParamValue(0.5, mode=m.PATTERNS, config="sd1-ldm", patterns=text)
    node = m.to_node((ws(alpha=pv),))
    assert node.argument("alpha") == pattern_weights(text, 0.5, "sd1-ldm")


def test_a_pattern_matching_nothing_is_reported():
    seen = []
    pv = m.ParamValue(0.5, mode=m.PATTERNS, config="sd1-ldm", patterns="no.such.key.*: 1")
    node = m.to_node((ws(alpha=pv),), on_warning=seen.append)
    assert node.argument("alpha") == literal(0.5)
    assert len(seen) == 1 and "line 1" in seen[0] and "no.such.key" in seen[0]


def test_blocks_on_a_parameter_that_takes_one_value_are_refused():
    step = m.new_step("clamp").with_input("a", m.Input.model("a"))
    step = replace(step, extra=(m.Input.model("b"),))
    step = step.with_param("stiffness", m.ParamValue(0.5, mode=m.BLOCKS, config=SD1, blocks=(("BASE", 0.1),)))
    with pytest.raises(ParameterError, match="stiffness.*one value"):
        m.to_node((step,))


def test_a_missing_input_names_the_step_and_parameter():
    step = m.new_step("weighted_sum").with_input("a", m.Input.model("a"))
    with pytest.raises(m.DraftError, match=r"step 1: choose a model or an earlier step for input 'b'"):
        m.to_node((step,))


def test_an_empty_draft_asks_for_a_method():
    with pytest.raises(m.DraftError, match="no step"):
        m.to_node(())


def test_a_reference_to_a_later_step_is_refused():
    step = ws().with_input("b", m.Input.of_step(1))
    with pytest.raises(m.DraftError, match="step 1: input 'b' refers to step 2"):
        m.to_node((step, ws()))


def test_steps_feed_later_steps_and_share_one_node():
    diff = m.new_step("subtract").with_input("a", m.Input.model("c")).with_input("b", m.Input.model("a"))
    add = m.new_step("add_difference").with_input("a", m.Input.of_step(1)).with_input("b", m.Input.of_step(0))
    node = m.to_node((diff, ws(), add))
    expected = lib_mecha.methods.build("add_difference", lib_mecha.weighted_sum(model("a"), model("b")),
                                       lib_mecha.methods.build("subtract", model("c"), model("a")))
    assert node == expected


def test_merge_spaces_are_checked_when_building():
    add = m.new_step("add_difference").with_input("a", m.Input.model("a")).with_input("b", m.Input.model("b"))
    with pytest.raises(MergeSpaceError, match="add_difference.*'b'"):
        m.to_node((add,))


def test_variadic_inputs():
    step = replace(m.new_step("n_average"), extra=(m.Input.model("a"), m.Input.model("b"), m.Input.model("c")))
    assert m.to_node((step,)) == lib_mecha.n_average(model("a"), model("b"), model("c"))
    with pytest.raises(m.DraftError, match="at least one model"):
        m.to_node((replace(step, extra=()),))


def test_keyword_only_parameters_are_passed_by_name():
    step = m.new_step("clamp").with_input("a", m.Input.model("a"))
    step = replace(step, extra=(m.Input.model("b"), m.Input.model("c")))
    step = step.with_param("stiffness", m.ParamValue(0.25))
    assert m.to_node((step,)) == lib_mecha.clamp(model("a"), model("b"), model("c"), stiffness=0.25)


def test_switching_method_keeps_inputs_and_same_named_values():
    step = ws(alpha=m.ParamValue(0.3))
    slerp = m.new_step("slerp", step)
    assert slerp.input("a") == step.input("a") and slerp.input("b") == step.input("b")
    assert slerp.param("alpha") == m.ParamValue(0.3)
    average = m.new_step("n_average", step)
    assert average.extra == (m.Input.model("a"), m.Input.model("b"))
    clamp = m.new_step("clamp", step)
    assert clamp.input("a") == m.Input.model("a") and clamp.extra == (m.Input.model("b"),)


def test_new_step_fills_declared_defaults():
    spec = lib_mecha.methods.resolve("add_difference")
    step = m.new_step("add_difference")
    assert step.param("alpha").value == spec.param("alpha").default
    assert [k for k, _ in step.inputs] == ["a", "b"]


def test_unused_steps_and_removal_reindex():
    draft = (ws("a", "b"), ws("b", "c"), ws().with_input("a", m.Input.of_step(0)).with_input("b", m.Input.of_step(0)))
    assert m.unused_steps(draft) == [1]
    removed = m.remove_step(draft, 0)
    assert removed[1].input("a") == m.Input() and removed[1].input("b") == m.Input()
    shifted = m.remove_step(draft[:2] + (draft[2].with_input("b", m.Input.of_step(1)),), 0)
    assert shifted[1].input("b") == m.Input.of_step(0)


def test_lora_entries_need_a_builder():
    step = replace(ws(), loras=(m.LoraEntry("lora_style"),))
    with pytest.raises(m.DraftError, match="LoRA"):
        m.to_node((step,))
    seen = []
    node = m.to_node((step,), lambda n, e, s: seen.append((e.path, s)) or n)
    assert node == m.to_node((ws(),)) and seen == [("lora_style", literal(1.0))]


@pytest.mark.parametrize("value, text", [(0.5, "0.5"), (1.0, "1"), (2, "2"), (-0.25, "-0.25"), (1e-7, "1e-07")])
def test_format_number(value, text):
    assert m.format_number(value) == text
