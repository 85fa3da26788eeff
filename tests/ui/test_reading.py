"""A recipe node (pasted .mecha) → the builder's draft, and back to the same text."""
from __future__ import annotations

import pytest

import lib_mecha
from lib_mecha import deserialize, serialize
from lib_mecha.arch.block_weights import blocks
from lib_mecha.arch.patterns import pattern_weights
from lib_mecha.methods import build
from lib_mecha.recipe import literal, model
from lib_mecha.ui import lora_support
from lib_mecha.ui import model as m
from lib_mecha.ui.reading import NotExpressible, from_node

SD1 = "sd1-supermerger_blocks"


def roundtrip(node):
    text = serialize(node)
    draft = from_node(deserialize(text), lora_support.reader(), lora_support.builder())
    again = serialize(m.to_node(draft, lora_support.builder()))
    assert again == text
    return draft


def test_weighted_sum_reads_as_one_step():
    draft = roundtrip(lib_mecha.weighted_sum(model("a"), model("b"), alpha=0.3))
    assert draft == (m.new_step("weighted_sum").with_input("a", m.Input.model("a"))
                     .with_input("b", m.Input.model("b")).with_param("alpha", m.ParamValue(0.3)),)


def test_full_and_partial_blocks_read_back_as_blocks():
    values = {b: round(i * 0.04, 2) for i, b in enumerate(lib_mecha.arch.resolve_layout(SD1).blocks)}
    draft = roundtrip(lib_mecha.weighted_sum(model("a"), model("b"), alpha=blocks(SD1, values)))
    pv = draft[0].param("alpha")
    assert pv.mode == m.BLOCKS and pv.config == SD1 and pv.block_map == values
    draft = roundtrip(lib_mecha.weighted_sum(model("a"), model("b"),
                                             alpha=blocks(SD1, {"IN03": 0.7}, default=0.2)))
    pv = draft[0].param("alpha")
    assert (pv.mode, pv.value, pv.blocks) == (m.BLOCKS, 0.2, (("IN03", 0.7),))


def test_per_key_values_read_back_as_one_pattern_per_key():
    alpha = pattern_weights("*.middle_block.1.proj_in.*: 0.8", 0.4, "sd1-ldm")
    draft = roundtrip(lib_mecha.weighted_sum(model("a"), model("b"), alpha=alpha))
    pv = draft[0].param("alpha")
    assert pv.mode == m.PATTERNS and pv.value == 0.4 and pv.config == "sd1-ldm"
    assert pv.patterns.splitlines() == ["model.diffusion_model.middle_block.1.proj_in.weight: 0.8",
                                        "model.diffusion_model.middle_block.1.proj_in.bias: 0.8"]


def test_a_shared_node_is_one_step_used_twice():
    mix = lib_mecha.weighted_sum(model("a"), model("b"), alpha=0.5)
    node = build("add_difference", mix, build("subtract", mix, model("c")), alpha=0.5)
    draft = roundtrip(node)
    assert [s.method for s in draft] == ["weighted_sum", "subtract", "add_difference"]
    assert draft[1].input("a") == m.Input.of_step(0)
    assert draft[2].input("a") == m.Input.of_step(0) and draft[2].input("b") == m.Input.of_step(1)


def test_variadic_and_keyword_only_arguments():
    draft = roundtrip(lib_mecha.clamp(model("a"), model("b"), model("c"), stiffness=0.3))
    assert draft[0].extra == (m.Input.model("b"), m.Input.model("c"))
    assert draft[0].param("stiffness").value == 0.3
    roundtrip(lib_mecha.n_average(model("a"), model("b"), model("c")))


def test_finalized_recipe_of_a_merged_file_reads_exactly(tiny_models):
    result = lib_mecha.merge(lib_mecha.weighted_sum(model("a"), model("b"), alpha=blocks(SD1, {"M00": 1.0}, 0.5)),
                             model_dirs=[str(tiny_models)])
    node = deserialize(result.recipe_text)
    assert "model_config=\"sd1-ldm\"" in result.recipe_text
    draft = from_node(node, lora_support.reader(), lora_support.builder())
    assert m.to_node(draft, lora_support.builder()) == node
    assert draft[0].input("a").config == "sd1-ldm"


def test_loras_read_back_onto_their_step():
    assert lora_support.available()
    mix = lib_mecha.weighted_sum(model("a"), model("b"))
    one = build("apply_lora", mix, model("lora_style"), 0.8)
    two = build("apply_lora", one, model("other_lora"), blocks(SD1, {"IN01": 0.5}, default=1.0))
    draft = roundtrip(build("slerp", two, model("c")))
    assert [s.method for s in draft] == ["weighted_sum", "slerp"]
    first = draft[0]
    assert [e.path for e in first.loras] == ["lora_style", "other_lora"]
    assert first.loras[0].strength == m.ParamValue(0.8)
    assert first.loras[1].strength.mode == m.BLOCKS


@pytest.mark.parametrize("node, problem", [
    (model("a"), "model 'a' alone"),
    (lib_mecha.weighted_sum(model("a"), literal(0.0)), "input 'b' is a constant"),
    (lib_mecha.weighted_sum(model("a"), model("b"), alpha=lib_mecha.weighted_sum(model("m1"), model("m2"))),
     "parameter 'alpha' is computed by merge method 'weighted_sum'"),
    (lib_mecha.weighted_sum(model("a"), model("b"), alpha=literal({"x": 0.1})), "parameter 'alpha'"),
    (build("convert_sd1_blocks_to_ldm", literal({"IN00": 1.0}, config=SD1)), "convert_sd1_blocks_to_ldm"),
])
def test_what_the_builder_cannot_show_is_named(node, problem):
    with pytest.raises(NotExpressible, match=problem.replace("(", r"\(").replace(")", r"\)")):
        from_node(node, lora_support.reader(), lora_support.builder())


def test_a_recipe_the_builder_would_write_differently_is_refused():
    # per-key values in an order the pattern expansion would not produce
    keys = list(lib_mecha.arch.resolve_architecture("sd1-ldm").keys)[:2]
    values = literal({keys[1]: 0.1, keys[0]: 0.2}, config="sd1-ldm", merge_space="param")
    node = lib_mecha.weighted_sum(model("a"), model("b"), alpha=build("fallback", values, 0.5))
    with pytest.raises(NotExpressible, match="would write this recipe differently"):
        from_node(node)


def test_unusual_configs_and_merge_spaces_are_kept_exactly():
    node = lib_mecha.weighted_sum(model("a", merge_space="delta"), model("b", merge_space="delta"))
    draft = from_node(node)  # kept exactly: config and merge space are part of the input
    assert m.to_node(draft) == node
    odd_scalar = lib_mecha.weighted_sum(model("a"), model("b"), alpha=literal(0.5, merge_space="param"))
    assert m.to_node(from_node(odd_scalar)) == odd_scalar
