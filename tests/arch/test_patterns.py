"""Per-key values from pattern lines: globs, regexes, first match wins, explicit default, bad input."""
import warnings

import pytest

import lib_mecha.arch as arch
from fakectx import value_for
from lib_mecha.arch.patterns import PatternWarning, parse_patterns, pattern_weights
from lib_mecha.errors import ParameterError

RULES = """
# attention of the UNet, then the VAE, then everything under input_blocks
model.diffusion_model.*.attn2.*: 0.9
re:^first_stage_model\\.(en|de)coder\\.: 0   # the VAE
model.diffusion_model.input_blocks.*: 0.2
"""


def test_first_match_wins_and_default_fills_the_rest():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        node = pattern_weights(RULES, 0.5, "sd1-ldm")
    assert node.method == "fallback"
    mapping = node.args[0].mapping
    assert node.args[0].model_config == "sd1-ldm"
    k_attn_in = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    k_in = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_k.weight"
    assert mapping[k_attn_in] == 0.9  # both rule 1 and rule 3 match; the first wins
    assert mapping[k_in] == 0.2
    assert mapping["first_stage_model.decoder.conv_in.weight"] == 0.0
    assert "first_stage_model.quant_conv.weight" not in mapping  # regex anchored to encoder/decoder
    assert value_for(node, "first_stage_model.quant_conv.weight") == 0.5
    assert value_for(node, "model.diffusion_model.out.2.weight") == 0.5
    assert value_for(node, k_attn_in) == 0.9


def test_glob_matches_whole_key_and_aliases_count():
    node = pattern_weights(["cond_stage_model.transformer.encoder.layers.11.*: 1"], 0, "sd1-ldm")
    mapping = node.args[0].mapping
    assert len(mapping) == 16  # matched through the old alias names, stored under canonical names
    assert all(".text_model.encoder.layers.11." in k for k in mapping)
    with pytest.warns(PatternWarning, match="line 1 matches no key of sd1-ldm: 'layers.11.*: 1'"):
        pattern_weights(["layers.11.*: 1"], 0, "sd1-ldm")  # not anchored at the start: no match


def test_pattern_matching_nothing_warns_with_its_line():
    with pytest.warns(PatternWarning) as record:
        node = pattern_weights("*.attn2.*: 1\n\nre:lora_unet: 0.3\nmodel.diffusion_model.nope.*: 2", 0.5, "sd1-ldm")
    messages = [str(w.message) for w in record]
    assert messages == ["pattern on line 3 matches no key of sd1-ldm: 're:lora_unet: 0.3'",
                        "pattern on line 4 matches no key of sd1-ldm: 'model.diffusion_model.nope.*: 2'"]
    assert node.method == "fallback"


def test_bad_regex_is_named():
    with pytest.raises(ParameterError, match=r"line 2: regex 'input_blocks\\\.\(1' does not compile"):
        pattern_weights("*: 1\nre:input_blocks\\.(1: 0.5", 0, "sd1-ldm")


def test_bad_lines_are_named():
    with pytest.raises(ParameterError, match="line 1 has no ': value': 'model.diffusion_model.out'"):
        parse_patterns("model.diffusion_model.out")
    with pytest.raises(ParameterError, match="line 3: 'high' is not a number"):
        parse_patterns("a: 1\n# comment\nb: high")
    with pytest.raises(ParameterError, match="parameter 'default': needs a number"):
        pattern_weights("a*: 1", None, "sd1-ldm")


def test_regex_with_colons_and_generic_keys():
    rules = parse_patterns(["re:(?:foo|bar)\\.weight$: 0.25"])
    assert rules[0].pattern == "(?:foo|bar)\\.weight$" and rules[0].value == 0.25
    node = pattern_weights("re:(?:foo|bar)\\.weight$: 0.25", 1.0, None,
                           keys=["foo.weight", "baz.weight"])
    assert node.args[0].mapping == {"foo.weight": 0.25}
    assert node.args[0].model_config is None


def test_catch_all_needs_no_fallback_and_no_match_gives_the_default():
    node = pattern_weights("*: 0.3", 0.5, "sd1-ldm")
    assert node.is_dict and len(node.mapping) == len(arch.resolve_architecture("sd1-ldm").keys)
    with pytest.warns(PatternWarning):
        node = pattern_weights("nothing.*: 1", 0.5, "sd1-ldm")
    assert not node.is_dict and node.value == 0.5
