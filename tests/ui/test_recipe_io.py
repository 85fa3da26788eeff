"""The .mecha text of the session, and pasted text (good, broken, inexpressible) into the session."""
from __future__ import annotations

import pytest

import lib_mecha
from lib_mecha import serialize
from lib_mecha.engine.hashes import sha256_of
from lib_mecha.recipe import model
from lib_mecha.ui import model as m
from lib_mecha.ui.recipe_io import compile_session, load_text
from lib_mecha.ui.session import Session


def test_the_text_is_the_serialized_recipe(session):
    compiled = compile_session(session)
    assert compiled.problem == ""
    assert compiled.text == serialize(lib_mecha.weighted_sum(model("a.safetensors"), model("b.safetensors")))


def test_an_incomplete_recipe_has_no_text_and_says_why(catalog):
    s = Session()
    s.set_input("a", "a.safetensors", catalog)
    compiled = compile_session(s)
    assert compiled.node is None and compiled.text == ""
    assert compiled.problem == "incomplete: step 1: choose a model or an earlier step for input 'b'"


def test_unused_steps_are_a_warning(session, catalog):
    session.add_step()
    session.set_input("a", "c.safetensors", catalog)
    session.set_input("b", "a.safetensors", catalog)
    compiled = compile_session(session)
    assert compiled.text and compiled.warnings == ("not used by the last step, so not merged: step 1",)


def test_loading_text_replaces_the_draft(session, catalog):
    text = serialize(lib_mecha.slerp(lib_mecha.weighted_sum(model("c.safetensors"), model("a.safetensors")),
                                     model("b.safetensors"), alpha=0.7))
    assert load_text(session, text, catalog)
    assert [s.method for s in session.draft] == ["weighted_sum", "slerp"]
    assert session.selected == 1 and session.text_message == "loaded a recipe of 2 step(s)"
    assert compile_session(session).text == text


@pytest.mark.parametrize("text, expected", [
    ("", "nothing to load"),
    ("version 0.1.0\nmodel \"a\" model_config=null merge_space=\"weight\"\nmerge \"weighted_sum\" &0 &7",
     "line 3"),
    ("version 0.1.0\nmodel \"a\"\nmodel \"b\"\nmerge \"weighted_summ\" &0 &1",
     "line 4, column 7: unknown merge method 'weighted_summ' (did you mean 'weighted_sum'?)"),
    ("version 9\nmodel \"a\"", "line 1"),
    ("version 0.1.0\nmodel \"a\"", "the builder cannot show this recipe: the recipe is model 'a' alone"),
])
def test_a_bad_text_names_the_problem_and_leaves_the_draft(session, catalog, text, expected):
    before = session.draft
    assert not load_text(session, text, catalog)
    assert expected in session.text_message
    assert session.draft == before


def test_a_missing_model_is_named_with_the_files_sharing_its_hash(session, catalog, tiny_models):
    digest = sha256_of(tiny_models / "b.safetensors")
    text = serialize(lib_mecha.weighted_sum(model("a.safetensors"), model("gone.safetensors")),
                     comments=["lib_mecha 0.1.0", f"input gone.safetensors sd1-ldm sha256={digest}"])
    assert load_text(session, text, catalog)
    assert session.text_message == "model not found: gone.safetensors; same sha256: b.safetensors"
    assert session.step.input("b") == m.Input.model("gone.safetensors")
    text = serialize(lib_mecha.weighted_sum(model("a.safetensors"), model("other.safetensors")))
    assert load_text(session, text, catalog)
    assert session.text_message == "model not found: other.safetensors"
