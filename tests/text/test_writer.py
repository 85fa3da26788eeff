"""The .mecha writer: exact text for each construct, and what it refuses to write."""
import sys

import pytest

import lib_mecha as mecha
from lib_mecha.errors import ParameterError, RecipeError
from lib_mecha.recipe import LiteralNode, MergeNode, ModelNode
from lib_mecha.recipe_text import serialize


def A(path="a.safetensors", config="sd1-ldm", space="weight"):
    return ModelNode(path, config, space)


def B():
    return A("b.safetensors")


def text(*lines):
    return "\n".join(("version 0.1.0",) + lines)


def test_weighted_sum_golden():
    assert serialize(mecha.weighted_sum(A(), B(), alpha=0.5)) == text(
        'model "a.safetensors" model_config="sd1-ldm" merge_space="weight"',
        'model "b.safetensors" model_config="sd1-ldm" merge_space="weight"',
        "dict key=0.5",
        'literal &2 model_config="singleton-mecha" merge_space=null',
        'merge "convert_singleton" &3',
        'merge "weighted_sum" &0 &1 &4',
    )


def test_no_trailing_newline_and_version_first():
    out = serialize(mecha.model("x"))
    assert out == text('model "x" model_config=null merge_space="weight"')
    assert not out.endswith("\n")


def test_defaults_are_written_and_equal_scalars_share_lines():
    # alpha defaults to 0.5 in both; the second weighted_sum reuses the scalar's three lines
    r = mecha.weighted_sum(mecha.weighted_sum(A(), B()), A(), alpha=0.5)
    assert serialize(r) == text(
        'model "a.safetensors" model_config="sd1-ldm" merge_space="weight"',
        'model "b.safetensors" model_config="sd1-ldm" merge_space="weight"',
        "dict key=0.5",
        'literal &2 model_config="singleton-mecha" merge_space=null',
        'merge "convert_singleton" &3',
        'merge "weighted_sum" &0 &1 &4',
        'merge "weighted_sum" &5 &0 &4',
    )


def test_keyword_only_parameters_use_name_equals_ref():
    r = mecha.clamp(A(), B(), A("c.safetensors"), stiffness=0.25)
    assert serialize(r).splitlines()[-1] == 'merge "clamp" &0 &1 &2 stiffness=&5'


def test_positional_or_keyword_params_are_positional_even_when_given_by_keyword():
    by_kw = mecha.weighted_sum(a=A(), b=B(), alpha=0.3)
    by_pos = mecha.weighted_sum(A(), B(), 0.3)
    assert serialize(by_kw) == serialize(by_pos)
    assert serialize(by_kw).endswith('merge "weighted_sum" &0 &1 &4')


@pytest.mark.parametrize("value, written", [
    (0.1, "0.1"), (1e-07, "1e-07"), (1e20, "1e+20"), (2.0, "2.0"), (-0.0, "-0.0"), (100, "100"),
    (-3, "-3"), (10 ** 30, "1" + "0" * 30), (True, "true"), (False, "false"), (None, "null"),
    ("diffuser", '"diffuser"'), ('say "hi"', r'"say \"hi\""'), ("C:\\models\\", r'"C:\\models\\"'),
    ("", '""'), ("a=b c", '"a=b c"'), ("ünï 模型", '"ünï 模型"'),
])
def test_scalar_formatting(value, written):
    assert serialize(mecha.literal(value)) == text(
        f"dict key={written}",
        'literal &0 model_config="singleton-mecha" merge_space=null',
        'merge "convert_singleton" &1',
    )


def test_scalar_merge_space_is_written_and_its_config_dropped_like_sd_mecha():
    assert serialize(LiteralNode(0.5, "sd1-ldm", "param")).splitlines()[2] == \
        'literal &0 model_config="singleton-mecha" merge_space="param"'


def test_dict_literal_without_config_is_its_dict_line():
    assert serialize(mecha.literal({"x.weight": 0.5, "y": True, "z": None, "s": "v"})) == \
        text('dict x.weight=0.5 y=true z=null s="v"')


def test_dict_literal_with_config():
    blocks = mecha.literal({"IN00": 0.0, "M00": 0.5}, config="sd1-supermerger_blocks", merge_space="param")
    assert serialize(blocks) == text(
        "dict IN00=0.0 M00=0.5",
        'literal &0 model_config="sd1-supermerger_blocks" merge_space="param"',
    )


def test_empty_dict_is_written_as_sd_mecha_does():
    assert serialize(mecha.literal({})) == text("dict ")


def test_dict_values_may_be_nodes():
    d = mecha.literal({"a": A(), "b": mecha.literal(0.5)}, config="sd1-ldm", merge_space="weight")
    assert serialize(d) == text(
        'model "a.safetensors" model_config="sd1-ldm" merge_space="weight"',
        "dict key=0.5",
        'literal &1 model_config="singleton-mecha" merge_space=null',
        'merge "convert_singleton" &2',
        "dict a=&0 b=&3",
        'literal &4 model_config="sd1-ldm" merge_space="weight"',
    )


@pytest.mark.parametrize("config", ["structural", "generic", None])
def test_configs_sd_mecha_cannot_read_are_written_as_null(config):
    assert serialize(A(config=config)) == text('model "a.safetensors" model_config=null merge_space="weight"')
    lit = LiteralNode((("k", 1),), config, "param")
    assert serialize(lit) == text("dict k=1")


def test_model_path_is_kept_exactly_and_escaped():
    path = 'C:\\my models\\"quoted" ünï.safetensors'
    assert serialize(A(path, None, None)) == text(
        'model "C:\\\\my models\\\\\\"quoted\\" ünï.safetensors" model_config=null merge_space=null')


def test_comments_follow_the_version_line():
    out = serialize(A(), comments=["lib_mecha 0.1.0", "input a.safetensors sha256=ab12", ""])
    assert out.splitlines()[:4] == ["version 0.1.0", "# lib_mecha 0.1.0", "# input a.safetensors sha256=ab12", "#"]


def test_comment_with_a_line_break_is_refused():
    with pytest.raises(RecipeError, match="line break"):
        serialize(A(), comments=["two\nlines"])


# --- refusals: never write what sd-mecha cannot read back --------------------------------------

@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinite_scalar_is_refused_naming_method_and_parameter(value):
    r = mecha.weighted_sum(A(), B(), alpha=value)
    with pytest.raises(ParameterError) as info:
        serialize(r)
    assert info.value.method == "weighted_sum" and info.value.param == "alpha"
    assert "1e+30" in str(info.value)


def test_nan_in_a_block_dict_names_the_key():
    blocks = LiteralNode((("IN00", 0.5), ("M00", float("nan"))), "sd1-supermerger_blocks", "param")
    r = mecha.weighted_sum(A(), B(), alpha=mecha.convert_sd1_blocks_to_ldm(blocks))
    with pytest.raises(ParameterError, match="'M00' is nan") as info:
        serialize(r)
    assert (info.value.method, info.value.param) == ("convert_sd1_blocks_to_ldm", "blocks")


def test_inf_outside_any_method_is_a_recipe_error():
    with pytest.raises(RecipeError, match="inf cannot be written"):
        serialize(mecha.literal(float("inf")))


def test_model_path_with_equals_is_refused():
    with pytest.raises(RecipeError, match=r"a=b\.safetensors.*'='"):
        serialize(mecha.weighted_sum(A("a=b.safetensors"), B()))


@pytest.mark.parametrize("path", ["a\nb.safetensors", "a\rb.safetensors", ""])
def test_model_path_with_line_break_or_empty_is_refused(path):
    with pytest.raises(RecipeError):
        serialize(A(path))


def test_string_with_line_break_is_refused():
    with pytest.raises(ParameterError, match="line break") as info:
        serialize(mecha.pick_component(A(), "diff\nuser"))
    assert info.value.param == "component"


@pytest.mark.parametrize("key", ["a b", 'a"b', "a\\b", "a=b", "a\nb", "a\tb"])
def test_dict_keys_that_are_not_bare_words_are_refused(key):
    with pytest.raises(RecipeError, match="dict key"):
        serialize(mecha.literal({key: 1.0}))


def test_nested_dict_without_config_is_refused():
    inner = mecha.literal({"x": 1})
    with pytest.raises(RecipeError, match="cannot nest"):
        serialize(LiteralNode((("k", inner),), "sd1-ldm", "param"))


def test_deep_chain_does_not_hit_the_recursion_limit():
    # built without bind(), whose space check is recursive; the writer itself must not be
    depth = sys.getrecursionlimit() * 2
    one = mecha.literal(1.0)
    r = mecha.subtract(A(), B())
    for _ in range(depth):
        r = MergeNode("scale", (r, one))
    lines = serialize(r).split("\n")
    assert len(lines) == 1 + 3 + 3 + depth
    assert lines[-1] == f'merge "scale" &{depth + 4} &5'
