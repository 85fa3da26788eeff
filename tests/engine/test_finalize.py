"""The planner's finalize writes what sd-mecha's serialize(finalize=True) writes; merges embed
the finalized recipe with the user's own paths; plain block dicts work as sd-mecha's do."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import lib_mecha as mecha
from lib_mecha.arch.demo import random_state_dict
from lib_mecha.engine.plan import finalize
from lib_mecha.errors import ParameterError

sd_mecha = pytest.importorskip("sd_mecha", reason="sd-mecha 1.1.8 is the test oracle (requirements/oracles.txt)")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finalize")
    for seed, name in enumerate("abc"):
        save_file(random_state_dict("sd1-ldm", seed, shape_divisor=256), str(folder / f"{name}.safetensors"))
    return folder


def both(files, build):
    """The same recipe built by each library from absolute paths."""
    theirs = build(sd_mecha, lambda n: sd_mecha.model(files / f"{n}.safetensors"))
    ours = build(mecha, lambda n: mecha.model(str(files / f"{n}.safetensors")))
    return theirs, ours


RECIPES = {
    "weighted_sum": lambda lib, m: lib.weighted_sum(m("a"), m("b"), alpha=0.3),
    "add_difference": lambda lib, m: lib.add_difference(m("a"), m("b"), m("c"), alpha=0.7),
    "components": lambda lib, m: lib.pick_component(m("a"), "diffuser") | lib.slerp(m("a"), m("b"), alpha=0.25),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_finalize_writes_sd_mechas_finalized_text(files, name):
    theirs, ours = both(files, RECIPES[name])
    assert mecha.serialize(finalize(ours)) == sd_mecha.serialize(theirs, finalize=True)


def test_merge_embeds_finalized_recipe_with_the_users_paths(files, tmp_path):
    recipe = mecha.weighted_sum(mecha.model("a"), mecha.model("b"), alpha=0.3)
    result = mecha.merge(recipe, tmp_path / "o.safetensors", model_dirs=[files], hash_inputs=False)
    body = [line for line in result.recipe_text.split("\n") if not line.startswith("#")]
    assert body[1] == 'model "a" model_config="sd1-ldm" merge_space="weight"'
    assert 'literal &2 model_config="singleton-mecha" merge_space="param"' in body
    # sd-mecha reads the embedded text (comments included) and means the same recipe
    sd_mecha.deserialize(result.recipe_text)


def test_plain_block_dict_is_read_in_the_models_layout(files):
    values = {b: 0.0 for b in mecha.arch.resolve_layout("sd1-supermerger_blocks").blocks}
    values["OUT11"] = 1.0
    recipe = mecha.weighted_sum(mecha.model("a"), mecha.model("b"), alpha=values)
    out = mecha.merge(recipe, model_dirs=[files], output_dtype="fp32").state_dict
    a = random_state_dict("sd1-ldm", 0, shape_divisor=256)
    b = random_state_dict("sd1-ldm", 1, shape_divisor=256)
    for key, expected in [("model.diffusion_model.out.2.weight", b),
                          ("model.diffusion_model.input_blocks.0.0.bias", a)]:
        assert torch.equal(out[key], expected[key].float()), key


def test_partial_plain_block_dict_is_an_error_not_a_silent_drop(files):
    recipe = mecha.weighted_sum(mecha.model("a"), mecha.model("b"), alpha={"IN00": 0.5, "M00": 1.0})
    with pytest.raises(ParameterError, match="no value for block"):
        mecha.merge(recipe, model_dirs=[files])
