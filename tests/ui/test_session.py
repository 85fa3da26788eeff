"""Edits of one browser tab's session: steps, inputs, values, modes, block weights, LoRAs."""
from __future__ import annotations

import copy

import pytest

import lib_mecha
from lib_mecha.errors import MechaError, ParameterError
from lib_mecha.ui import model as m
from lib_mecha.ui.catalog import step_label
from lib_mecha.ui.session import NONE_CHOICE, Session, builder_methods, coerce, switch_mode

SD1 = "sd1-supermerger_blocks"


def test_a_new_session_has_one_default_step_and_copies_are_fresh(session):
    assert [st.method for st in Session().draft] == ["weighted_sum"]
    fresh = copy.deepcopy(session)
    assert fresh is not session and fresh.lock is not session.lock
    assert fresh.draft == session.draft and fresh.selected == 0


def test_inputs_are_written_by_their_recipe_names(session, catalog):
    assert session.step.input("a") == m.Input.model("a.safetensors")
    assert session.input_label(session.step.input("a"), catalog) == "a.safetensors"
    session.set_input("b", "", catalog)
    assert not session.step.input("b").is_set
    session.set_input("b", "typed/name.safetensors", catalog)  # a name not in the list is kept as typed
    assert session.step.input("b") == m.Input.model("typed/name.safetensors")


def test_add_step_takes_the_previous_result(session, catalog):
    session.add_step()
    assert session.selected == 1
    assert session.step.input("a") == m.Input.of_step(0)
    session.set_input("b", "c.safetensors", catalog)
    node = m.to_node(session.draft)
    assert node.args[0] == m.to_node(session.draft[:1])
    session.set_input("b", step_label(0), catalog)
    assert session.step.input("b") == m.Input.of_step(0)


def test_remove_step_keeps_at_least_one(session):
    session.remove_step()
    assert len(session.draft) == 1 and "at least one step" in session.message
    session.add_step()
    session.select(0)
    session.remove_step()
    assert len(session.draft) == 1 and session.step.input("a") == m.Input()


def test_set_method_carries_over_and_resets_mbw_target(session):
    session.set_mode("alpha", m.BLOCKS, SD1, None)
    assert session.mbw_target == "p:0:alpha"
    session.set_method("slerp")
    assert session.step.method == "slerp" and session.step.input("a") == m.Input.model("a.safetensors")
    assert session.step.param("alpha").mode == m.BLOCKS
    session.set_method("n_average")
    assert session.step.extra == (m.Input.model("a.safetensors"), m.Input.model("b.safetensors"))


def test_variadic_inputs_keep_pasted_details(session, catalog):
    session.set_method("n_average")
    session.set_extra(["a.safetensors", "c.safetensors"], catalog)
    assert session.step.extra == (m.Input.model("a.safetensors"), m.Input.model("c.safetensors"))


@pytest.mark.parametrize("method, name, raw, value", [
    ("weighted_sum", "alpha", 0.25, 0.25),
    ("truncate_rank", "rank", 7.0, 7),
    ("cast", "dtype", NONE_CHOICE, None),
    ("cast", "dtype", "float16", "float16"),
    ("ties_sum", "vote_sgn", 1, True),
])
def test_widget_values_are_coerced_to_the_parameter_kind(method, name, raw, value):
    p = lib_mecha.methods.resolve(method).param(name)
    assert coerce(p, raw) == value and type(coerce(p, raw)) is type(value)


def test_values_and_ranges(session):
    session.set_value("alpha", 0.75)
    assert session.step.param("alpha").value == 0.75
    session.set_method("clamp")
    session.set_value("stiffness", 2.0)  # out of [0, 1]: refused when the recipe is built
    with pytest.raises(ParameterError, match="stiffness.*out of range"):
        m.to_node(session.draft)


def test_block_mode_starts_from_the_plain_value(session):
    session.set_value("alpha", 0.3)
    session.set_mode("alpha", m.BLOCKS, SD1, "sd1-ldm")
    pv = session.step.param("alpha")
    assert pv.config == SD1 and len(pv.blocks) == 26 and set(pv.block_map.values()) == {0.3}
    assert session.mbw_targets() == [("step 1 · weighted_sum · alpha", "p:0:alpha")]
    session.set_mode("alpha", m.VALUE, SD1, "sd1-ldm")
    assert session.step.param("alpha").mode == m.VALUE and session.current_target() is None


def test_block_mode_needs_a_layout():
    with pytest.raises(MechaError, match="no block layout"):
        switch_mode(m.ParamValue(0.5), m.BLOCKS, None, None)
    with pytest.raises(MechaError, match="architecture"):
        switch_mode(m.ParamValue(0.5), m.PATTERNS, None, None)


def test_block_edits_sliders_text_presets_layouts(session):
    session.set_mode("alpha", m.BLOCKS, SD1, "sd1-ldm")
    session.set_block("IN05", 0.9)
    assert session.target_value().block_map["IN05"] == 0.9
    session.set_blocks_text("0," + ",".join(["1"] * 24) + ",")
    values = session.target_value().block_map
    assert values["BASE"] == 0.0 and values["OUT10"] == 1.0 and "OUT11" not in values
    session.apply_preset("GRAD_V")
    from lib_mecha.arch.presets import preset
    assert session.target_value().blocks == preset(SD1, "GRAD_V").values
    with pytest.raises(ParameterError, match="25 values for the 26 blocks"):
        session.set_blocks_text(",".join(["1"] * 25))
    session.set_layout("sdxl-supermerger_blocks")
    assert session.target_value().config == "sdxl-supermerger_blocks"
    assert len(session.target_value().blocks) == 21


def test_patterns_mode(session):
    session.set_mode("alpha", m.PATTERNS, SD1, "sd1-ldm")
    session.set_patterns("alpha", "*.middle_block.*: 1")
    node = m.to_node(session.draft)
    assert node.argument("alpha").method == "fallback"


def test_loras_are_added_edited_and_removed(session, catalog):
    session.add_lora(None, catalog)
    assert session.step.loras == (m.LoraEntry("lora_style.safetensors"),)
    session.set_lora_strength(0, 0.6)
    session.set_lora_blocks(0, True, SD1)
    assert session.mbw_target == "l:0:0"
    assert session.mbw_targets()[0][0] == "step 1 · LoRA 1 (lora_style) · strength"
    session.set_block("OUT03", 0.2)
    strength = session.step.loras[0].strength
    assert strength.value == 0.6 and strength.block_map["OUT03"] == 0.2
    session.remove_lora(0)
    assert session.step.loras == () and session.current_target() is None


def test_first_model_follows_step_references(session, catalog):
    session.add_step()
    assert session.first_model() == "a.safetensors"
    session.select(0)
    session.set_input("a", "", catalog)
    assert session.first_model(1) == "b.safetensors"


def test_builder_offers_methods_but_not_internals():
    names = builder_methods()
    assert {"weighted_sum", "add_difference", "n_average", "ties_sum"} <= set(names)
    assert not {"convert_sd1_blocks_to_ldm", "apply_lora", "lora_delta"} & set(names)
    assert not [n for n in names if n.startswith("convert_")]
    assert "train_difference_mask" not in names  # a per-key value, not a model
