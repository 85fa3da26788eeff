"""Round trips: deserialize(serialize(r)) == r and serialize(deserialize(s)) == s."""
import random

import pytest

import lib_mecha as mecha
from lib_mecha.compose import add_difference
from lib_mecha.recipe import LiteralNode, ModelNode
from lib_mecha.recipe_text import deserialize, deserialize_with_comments, serialize

BLOCKS = ["BASE"] + [f"IN{i:02}" for i in range(12)] + ["M00"] + [f"OUT{i:02}" for i in range(12)]


def roundtrip(recipe):
    text = serialize(recipe)
    back = deserialize(text)
    assert back == recipe
    assert serialize(back) == text
    return text


def m(path, config="sd1-ldm", space="weight"):
    return ModelNode(path, config, space)


@pytest.mark.parametrize("path", [
    "a.safetensors", "my models/a b.safetensors", 'say "hi".safetensors', "C:\\models\\a.safetensors",
    "C:\\trailing\\", "\\\\server\\share\\x", "ünïcödé/模型 ✨.safetensors", "/abs/path/x", "./rel/../x",
    "#not a comment", "&0", "null", "  spaces  ", "tab\there", "a'b", "end with quote\"",
])
def test_model_paths_round_trip_exactly(path):
    text = roundtrip(mecha.weighted_sum(m(path), m("b"), alpha=0.5))
    assert deserialize(text).args[0].path == path


@pytest.mark.parametrize("value", [
    0.0, -0.0, 1e-300, 1.7976931348623157e308, 5e-324, 0.1 + 0.2, 123456789012345678901234567890, -7,
    True, False, None, "", "x y", 'q"uo\\te', "a=b", "#x", "&1", "ünï", "1.5", "null",
])
def test_scalars_round_trip_with_their_types(value):
    r = mecha.literal(value)
    back = deserialize(roundtrip(r))
    assert type(back.value) is type(value)


def test_block_dict_with_config_round_trips():
    blocks = mecha.literal({b: round(i / 25, 3) for i, b in enumerate(BLOCKS)}, config="sd1-supermerger_blocks",
                           merge_space="param")
    r = mecha.weighted_sum(m("a"), m("b"), alpha=mecha.convert_sd1_blocks_to_ldm(blocks))
    text = roundtrip(r)
    assert 'literal &2 model_config="sd1-supermerger_blocks" merge_space="param"' in text


def test_very_long_dict_round_trips():
    keys = [f"model.diffusion_model.input_blocks.{i}.weight" for i in range(5000)]
    r = mecha.literal({k: i * 0.5 for i, k in enumerate(keys)}, config="sd1-ldm", merge_space="param")
    text = roundtrip(r)
    assert len(text.split("\n")) == 3


def test_mixed_value_dict_round_trips():
    r = mecha.literal({"a": 1, "b": 2.5, "c": True, "d": None, "e": "s p", "f": m("x"), "g": mecha.literal(3)},
                      config="sd1-ldm", merge_space="param")
    roundtrip(r)


def test_references_shared_across_many_lines():
    models = [m(f"m{i}.safetensors") for i in range(40)]
    pairs = [mecha.weighted_sum(models[i], models[(i + 1) % 40], alpha=0.5) for i in range(40)]
    r = mecha.n_average(*pairs)
    text = roundtrip(r)
    lines = text.split("\n")[1:]
    # 40 models, one shared scalar triple, 40 weighted sums, one average: every line once
    assert len(lines) == 40 + 3 + 40 + 1
    assert len(set(lines)) == len(lines)
    assert lines[4] == 'merge "convert_singleton" &3'
    assert sum(line.split()[-1] == "&4" for line in lines) == 40  # every weighted sum shares the alpha lines


def test_public_add_difference_and_compositions_round_trip():
    a, b, c = m("a"), m("b"), m("c")
    for r in [
        add_difference(a, b, c, alpha=0.7),
        add_difference(a, mecha.subtract(b, c)),
        add_difference(a, b, c, alpha=0.3, clamp_to_ab=True),
        mecha.pick_component(a, "diffuser") | mecha.slerp(a, b, 0.25),
        mecha.omit_component(a, "vae") | b,
        mecha.weighted_sum(a, b).to(dtype="bfloat16"),
        mecha.clamp(a, b, c, stiffness=0.5),
        c + (a - b) * 0.5,
    ]:
        roundtrip(r)


def test_comments_round_trip():
    r = mecha.weighted_sum(m("a"), m("b"))
    comments = ("lib_mecha 0.1.0", 'input "a b.safetensors" sha256=00ff', "ünï", "")
    text = serialize(r, comments=comments)
    assert deserialize_with_comments(text) == (r, comments)
    assert serialize(deserialize(text), comments=comments) == text


def _random_recipe(rng: random.Random):
    weights = [m(f"w{i}.safetensors", rng.choice(["sd1-ldm", None])) for i in range(4)]
    pool = list(weights)

    def pick():
        return rng.choice(pool)

    def scalar():
        return rng.choice([rng.random(), rng.randint(-3, 3), round(rng.uniform(-1, 2), 2), 0.5, 1e-7])

    for _ in range(rng.randint(1, 12)):
        kind = rng.randrange(9)
        if kind == 0:
            node = mecha.weighted_sum(pick(), pick(), alpha=scalar())
        elif kind == 1:
            node = mecha.slerp(pick(), pick(), scalar())
        elif kind == 2:
            node = mecha.add_difference(pick(), mecha.subtract(pick(), pick()), alpha=scalar())
        elif kind == 3:
            node = mecha.n_average(*[pick() for _ in range(rng.randint(1, 4))])
        elif kind == 4:
            node = mecha.clamp(pick(), *[pick() for _ in range(rng.randint(0, 3))], stiffness=rng.random())
        elif kind == 5:
            node = pick() | pick()
        elif kind == 6:
            node = mecha.cast(pick(), rng.choice([None, "cpu"]), rng.choice([None, "float16", "bfloat16"]))
        elif kind == 7:
            node = mecha.pick_component(pick(), rng.choice(["diffuser", "clip_l", "vae"]))
        else:
            blocks = mecha.literal({b: scalar() for b in rng.sample(BLOCKS, rng.randint(1, 26))},
                                   config="sd1-supermerger_blocks", merge_space=rng.choice(["param", None]))
            node = mecha.weighted_sum(pick(), pick(), alpha=mecha.convert_sd1_blocks_to_ldm(blocks))
        pool.append(node)
    return pool[-1]


def test_random_recipes_round_trip():
    rng = random.Random(1234)
    shared = 0
    for _ in range(300):
        text = roundtrip(_random_recipe(rng))
        refs = [tok for line in text.split("\n") for tok in line.replace("=", " ").split() if tok.startswith("&")]
        shared += len(refs) != len(set(refs))
    assert shared > 100  # the generator does exercise shared lines


def test_literal_without_config_loses_only_its_merge_space_like_sd_mecha():
    r = LiteralNode((("a", 1.0),), None, "param")
    assert deserialize(serialize(r)) == LiteralNode((("a", 1.0),), None, None)


def test_smooth_add_difference_exact_median_round_trips_and_older_texts_take_the_default():
    from lib_mecha import methods
    a, b, c = m("a"), m("b"), m("c")
    exact = methods.build("smooth_add_difference", a, b, c, alpha=0.5, exact_median=True)
    default = methods.build("smooth_add_difference", a, b, c, alpha=0.5)
    text = roundtrip(exact)
    assert "dict key=true" in text and text.endswith("exact_median=&14")
    assert deserialize(text) != default
    roundtrip(default)
    # written before the flag existed: the same lines without it
    older = "\n".join(serialize(default).split("\n")[:-4]) + \
        '\nmerge "smooth_add_difference" &0 &1 &2 &5 &8 &11'
    assert deserialize(older) == default
