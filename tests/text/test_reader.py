"""The .mecha reader: what it builds, what it tolerates, and its errors (line, column, problem)."""
import pytest

import lib_mecha as mecha
from lib_mecha.errors import MergeSpaceError, ParameterError, RecipeError, RecipeSyntaxError, UnknownMethod
from lib_mecha.recipe import LiteralNode, ModelNode
from lib_mecha.recipe_text import deserialize, deserialize_path, deserialize_with_comments, serialize
from lib_mecha.text.tokens import Token, tokenize

WS = "\n".join([
    "version 0.1.0",
    'model "a.safetensors" model_config="sd1-ldm" merge_space="weight"',
    'model "b.safetensors" model_config="sd1-ldm" merge_space="weight"',
    "dict key=0.5",
    'literal &2 model_config="singleton-mecha" merge_space="param"',
    'merge "convert_singleton" &3',
    'merge "weighted_sum" &0 &1 &4',
])
A = ModelNode("a.safetensors", "sd1-ldm", "weight")
B = ModelNode("b.safetensors", "sd1-ldm", "weight")
WS_NODE = mecha.weighted_sum(A, B, alpha=LiteralNode(0.5, None, "param"))


# --- tokenizer -------------------------------------------------------------------------------

@pytest.mark.parametrize("line, tokens", [
    ('merge "weighted_sum" &0 &1', [Token(None, "merge", False, 1), Token(None, "weighted_sum", True, 7),
                                    Token(None, "&0", False, 22), Token(None, "&1", False, 25)]),
    ('  dict  k="a b"\tj=1 ', [Token(None, "dict", False, 3), Token("k", "a b", True, 9), Token("j", "1", False, 17)]),
    (r'model "C:\\x\"y"', [Token(None, "model", False, 1), Token(None, 'C:\\x"y', True, 7)]),
    ('model "a=b.safetensors"', [Token(None, "model", False, 1), Token(None, "a=b.safetensors", True, 7)]),
    ('dict k="a=b" =1 e=""', [Token(None, "dict", False, 1), Token("k", "a=b", True, 6), Token("", "1", False, 14),
                              Token("e", "", True, 17)]),
])
def test_tokenize(line, tokens):
    assert tokenize(line, 1) == tokens


@pytest.mark.parametrize("line, column, problem", [
    ('model "a', 7, "unbalanced quote"),
    ('model "a"b', 10, "space after the closing quote"),
    ('model a"b"', 8, "quote in the middle of a word"),
    ("dict k=", 6, "'k=' has no value"),
    ("dict k=1 \\", 10, "lone backslash"),
])
def test_tokenize_errors(line, column, problem):
    with pytest.raises(RecipeSyntaxError, match=problem) as info:
        tokenize(line, 7)
    assert (info.value.line, info.value.column) == (7, column)


# --- what it builds ----------------------------------------------------------------------------

def test_scalar_triple_collapses_into_one_literal():
    assert deserialize(WS) == WS_NODE
    assert serialize(deserialize(WS)) == WS


def test_model_line_keeps_the_path_exactly_and_defaults_to_nulls():
    node = deserialize('version 0.1.0\nmodel "./x//y.safetensors"')
    assert node == ModelNode("./x//y.safetensors", None, None)


def test_model_config_and_space_may_be_positional():
    assert deserialize('version 0.1.0\nmodel "x" "sd1-ldm" "delta"') == ModelNode("x", "sd1-ldm", "delta")


def test_structural_reads_as_unknown():
    assert deserialize('version 0.1.0\nmodel "x" model_config="structural" merge_space="weight"') == \
        ModelNode("x", None, "weight")


def test_dict_line_used_directly_is_a_config_less_literal():
    node = deserialize('version 0.1.0\nmodel "a" merge_space="weight"\ndict a=1 b=2.5\n'
                       'merge "weighted_sum" &0 &0 &1')
    assert node.args[2] == LiteralNode((("a", 1), ("b", 2.5)))


def test_a_root_dict_line_is_a_literal():
    assert deserialize('version 0.1.0\ndict x="s" y=true z=null') == mecha.literal({"x": "s", "y": True, "z": None})


def test_literal_keeps_a_singleton_literal_not_followed_by_convert():
    node = deserialize('version 0.1.0\ndict key=1\nliteral &0 model_config="singleton-mecha" merge_space=null')
    assert node == LiteralNode((("key", 1),), "singleton-mecha", None)


def test_plain_value_arguments_are_bound_like_a_python_call():
    node = deserialize('version 0.1.0\nmodel "a"\nmodel "b"\nmerge "weighted_sum" &0 &1 alpha=0.25')
    assert node == mecha.weighted_sum(ModelNode("a", None, None), ModelNode("b", None, None), alpha=0.25)
    assert node.args[2] == LiteralNode(0.25)


def test_numbers_follow_sd_mecha_rules():
    node = deserialize("version 0.1.0\ndict a=1 b=1.0 c=1e-3 d=-0.0 e=1E5 f=+2")
    values = dict(node.value)
    assert [type(v) for v in values.values()] == [int, float, float, float, float, int]
    assert values == {"a": 1, "b": 1.0, "c": 0.001, "d": 0.0, "e": 1e5, "f": 2}


def test_string_values_that_look_like_constants_or_refs_stay_strings():
    node = deserialize('version 0.1.0\ndict a="null" b="&0" c="1.5" d="true"')
    assert dict(node.value) == {"a": "null", "b": "&0", "c": "1.5", "d": "true"}


# --- what it tolerates --------------------------------------------------------------------------

@pytest.mark.parametrize("variant", [
    WS + "\n",
    WS.replace("\n", "\r\n"),
    WS.replace("\n", "\r\n") + "\r\n",
    "\ufeff" + WS,
    WS.replace("\ndict", "\n\n   \ndict"),
    WS.replace("\ndict", "\n# a comment\n  #another\ndict"),
    "# before the version\n" + WS,
    WS.replace(" &", "  \t&"),
    "  " + WS.replace("\n", "  \n  "),
])
def test_tolerated_variants_read_the_same(variant):
    assert deserialize(variant) == WS_NODE


def test_a_list_of_lines_with_or_without_line_ends():
    assert deserialize(WS.split("\n")) == WS_NODE
    assert deserialize([line + "\n" for line in WS.split("\n")]) == WS_NODE
    assert deserialize(WS.encode()) == WS_NODE


def test_comments_are_returned_and_not_indexed():
    text = WS.replace("\nmodel", "\n# lib_mecha 0.1.0\n#input a sha256=00\nmodel", 1)
    node, comments = deserialize_with_comments(text)
    assert node == WS_NODE
    assert comments == ("lib_mecha 0.1.0", "input a sha256=00")


def test_deserialize_path(tmp_path):
    path = tmp_path / "r ü.mecha"
    path.write_bytes(WS.replace("\n", "\r\n").encode("utf-8"))
    assert deserialize_path(path) == WS_NODE
    with pytest.raises(RecipeError, match="cannot read the recipe"):
        deserialize_path(tmp_path / "missing.mecha")
    with pytest.raises(TypeError, match="deserialize_path"):
        deserialize(path)
    bad = tmp_path / "bad.mecha"
    bad.write_bytes(b"version 0.1.0\nmodel \"\xff\"")
    with pytest.raises(RecipeSyntaxError, match="not UTF-8") as info:
        deserialize_path(bad)
    assert info.value.line == 2


# --- errors --------------------------------------------------------------------------------------

V = "version 0.1.0\n"
M = 'model "a" model_config="sd1-ldm" merge_space="weight"\n'


@pytest.mark.parametrize("text, line, column, problem", [
    ("", 1, None, "the text is empty"),
    ("\n  \n# only a comment\n", 1, None, "missing version line"),
    ('model "a"', 1, None, "missing version line"),
    ("version 0.2.0\n" + M, 1, None, "unsupported format version 0.2.0"),
    ("version\n" + M, 1, None, "bad version line"),
    ("version 0.1.0 extra\n" + M, 1, None, "bad version line"),
    ("version 0.1.0", 1, None, "no instruction after the version line"),
    ("# c\n\nversion 0.1.0\n\n", 3, None, "no instruction after the version line"),
    (V + M + "call \"weighted_sum\" &0", 3, 1, "unknown command 'call'"),
    (V + M + '"model" "a"', 3, 1, "unknown command 'model'"),
    (V + M + 'merge "weighted_sum" &0 &0 alpha="x', 3, 34, "unbalanced quote"),
    (V + M + "merge weighted_sum &0 &0", 3, 7, 'method name must be a quoted string'),
    (V + "dict a=weighted_sum", 2, 6, "unquoted word 'weighted_sum'"),
    (V + "dict a=abc", 2, 6, "unquoted word 'abc'"),
    (V + "dict a=1.2.3", 2, 6, "bad number '1.2.3'"),
    (V + "dict a=0x10", 2, 6, "bad number '0x10'"),
    (V + "dict a=inf", 2, 6, "inf is not a valid number here"),
    (V + "dict a=-nan", 2, 6, "-nan is not a valid number here"),
    (V + "dict a=1e999", 2, 6, "out of range"),
    (V + "dict a=&x", 2, 6, "bad reference '&x'"),
    (V + "dict a=&-1", 2, 6, "bad reference '&-1'"),
    (V + "dict a=&²", 2, 6, "bad reference '&²'"),
    (V + M + "# c\n\n" + 'merge "weighted_sum" &0 &2 &3\nmodel "b"\nmodel "c"', 5, 25,
     "&2 refers to a later line (6)"),
    (V + M + 'merge "weighted_sum" &0 &1', 3, 25, "&1 refers to this line itself"),
    (V + "# c\n" + M + 'merge "weighted_sum" &0 &9', 4, 25, "&9 refers to no instruction (the recipe has 2"),
    (V + M + "dict a=1 a=2", 3, 10, "key 'a' is given twice"),
    (V + M + "dict 1.0", 3, 6, "dict takes key=value pairs only"),
    (V + "dict a=1\ndict b=&0", 3, 6, "a dict value cannot be another dict"),
    (V + M + "literal &0", 3, 9, "literal takes a reference to a dict line"),
    (V + "literal", 2, 1, "literal takes a reference to a dict line"),
    (V + 'dict a=1\nliteral &0 model_config="sd1-ldm" merge_space="weird"', 3, 35, "unknown merge_space 'weird'"),
    (V + 'dict a=1\nliteral &0 config="sd1-ldm"', 3, 12, "literal has no argument 'config'"),
    (V + 'dict a=1\nliteral &0 model_config=1', 3, 12, "model_config must be a quoted identifier or null"),
    (V + 'dict a=1\nliteral &0 "sd1-ldm" "param" "x"', 3, 30, "at most 3 positional arguments"),
    (V + 'dict a=1\nliteral &0 "sd1-ldm" model_config="sd1-ldm"', 3, 22, "'model_config' is given twice"),
    (V + "model", 2, 1, "model takes the path first"),
    (V + 'model path="a"', 2, 1, "model takes the path first"),
    (V + "model &0", 2, 7, "&0 refers to this line itself"),
    (V + "model 1", 2, 7, "the model path must be a non-empty quoted string"),
    (V + 'model ""', 2, 7, "the model path must be a non-empty quoted string"),
    (V + 'model "a" model_config=null merge_space=null', None, None, None),
    (V + M + "merge", 3, 1, "merge takes a quoted method name first"),
    (V + M + 'merge "weighted_sum" alpha=0.5 &0', 3, 32, "a positional argument after a keyword argument"),
    (V + M + 'merge "weighted_sum" &0 &0 alpha=0.5 alpha=0.5', 3, 38, "'alpha' is given twice"),
    (V + M + 'merge "convert_singleton" &0', 3, 27, "convert_singleton takes a literal of one plain value"),
    (V + M + 'dict key=&0\nliteral &1 model_config="singleton-mecha" merge_space=null\nmerge "convert_singleton" &2',
     5, 27, "convert_singleton takes a literal of one plain value"),
    (V + 'dict x=1\nliteral &0 model_config="singleton-mecha" merge_space=null\nmerge "convert_singleton" &1',
     4, 27, "convert_singleton takes a literal of one plain value"),
    (V + 'dict key=1\nliteral &0 model_config="singleton-mecha" merge_space=null\nmerge "convert_singleton" &1 &1',
     4, 7, "convert_singleton takes exactly one reference"),
    (V + "dict key=1", None, None, None),
])
def test_syntax_errors_name_line_column_and_problem(text, line, column, problem):
    if problem is None:  # the control cases read fine
        deserialize(text)
        return
    with pytest.raises(RecipeSyntaxError) as info:
        deserialize(text)
    err = info.value
    assert problem in err.problem
    assert (err.line, err.column) == (line, column)
    assert f"line {line}" in str(err) and "\n" not in str(err)


def test_unknown_method_keeps_the_did_you_mean_error_as_cause():
    with pytest.raises(RecipeSyntaxError) as info:
        deserialize(V + M + 'merge "weighted_sun" &0 &0')
    err = info.value
    assert (err.line, err.column) == (3, 7)
    assert isinstance(err.__cause__, UnknownMethod)
    assert "did you mean 'weighted_sum'" in str(err)


@pytest.mark.parametrize("call, column, param, problem", [
    ('merge "weighted_sum" &0', None, "b", "missing required argument"),
    ('merge "weighted_sum" &0 &0 &0 &0', None, None, "takes 3 positional arguments, got 4"),
    ('merge "weighted_sum" &0 &0 beta=0.5', 28, "beta", "no such parameter"),
    ('merge "weighted_sum" &0 &0 alpha="x"', 28, "alpha", "expected a number"),
    ('merge "cast" &0 &1 "float99"', 20, "dtype", "'float99' is not one of"),
    ('merge "weighted_sum" "a.safetensors" &0', 22, "a", "where a model is expected"),
    ('merge "clamp" &0 &0 stiffness=2.0', 21, "stiffness", "out of range"),
])
def test_bad_arguments_keep_the_parameter_error_as_cause(call, column, param, problem):
    with pytest.raises(RecipeSyntaxError) as info:
        deserialize(V + M + 'dict key=null\nliteral &1 model_config="singleton-mecha" merge_space=null\n'
                    'merge "convert_singleton" &2\n' + call.replace("&1", "&3"))
    err = info.value
    assert err.line == 6 and err.column == column
    assert isinstance(err.__cause__, ParameterError) and err.__cause__.param == param
    assert problem in err.problem


def test_merge_space_conflict_keeps_its_error_as_cause():
    with pytest.raises(RecipeSyntaxError) as info:
        deserialize(V + M + 'merge "add_difference" &0 &0')
    assert info.value.line == 3 and isinstance(info.value.__cause__, MergeSpaceError)
    assert "expects a delta" in info.value.problem


def test_an_error_in_a_very_long_line_quotes_only_the_part_around_the_column():
    keys = " ".join(f"k{i}={i}.5" for i in range(3000))
    with pytest.raises(RecipeSyntaxError) as info:
        deserialize(V + "dict " + keys + " bad=oops " + keys.replace("k", "j"))
    err = info.value
    assert err.line == 2 and "unquoted word 'oops'" in err.problem
    assert "bad=oops" in err.text and len(err.text) < 130 and err.text.startswith("…") and err.text.endswith("…")
    assert err.column == len("dict " + keys + " ") + 1
