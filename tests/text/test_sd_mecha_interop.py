"""Interop with sd-mecha 1.1.8: the same recipe built in both libraries serializes to the same
bytes, each library reads what the other writes, and our reader rebuilds our recipe exactly.

Each recipe is written once as a function of a small "kit" (method call, model, literal,
public add_difference), then built with sd-mecha's kit and with ours.
"""
import pytest
import torch

sd_mecha = pytest.importorskip("sd_mecha", reason="sd-mecha 1.1.8 is the oracle of these tests")

import lib_mecha as mecha  # noqa: E402
from lib_mecha import compose  # noqa: E402
from lib_mecha.recipe import LiteralNode, ModelNode  # noqa: E402
from lib_mecha.recipe_text import deserialize, serialize  # noqa: E402
from sd_mecha.extensions import merge_methods as sd_methods  # noqa: E402

BLOCKS = ["IN00", "IN01", "IN02", "IN03", "IN04", "IN05", "IN06", "IN07", "IN08", "IN09", "IN10", "IN11", "M00",
          "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10",
          "OUT11", "BASE"]
BLOCK_VALUES = {b: round(abs(12 - i) / 12, 3) for i, b in enumerate(BLOCKS)}


class Kit:
    """How one library spells the recipe primitives."""

    def __init__(self, ours: bool, paths=None, finalized=False):
        self.ours = ours
        self.paths = paths or {}
        self.finalized = finalized  # ours only: nodes as sd-mecha's finalize leaves them

    def model(self, name, space="weight", config="sd1-ldm"):
        path = self.paths.get(name, name)
        if self.ours:
            return ModelNode(str(path), config, space)
        return sd_mecha.model(path if self.paths else str(path), config=config, merge_space=space)

    def call(self, method, *args, **kwargs):
        if self.ours:
            if self.finalized:
                args = [self.value(a) for a in args]
                kwargs = {k: self.value(v) for k, v in kwargs.items()}
            return mecha.methods.build(method, *args, **kwargs)
        return sd_methods.resolve(method)(*args, **kwargs)

    def value(self, v):
        """A plain scalar as the finalized recipe holds it (sd-mecha writes merge_space="param")."""
        if isinstance(v, (int, float, str, bool, type(None))):
            return LiteralNode(v, None, "param")
        return v

    def literal(self, value, config=None, space=None):
        if self.ours:
            return mecha.literal(value, config=config, merge_space=space)
        return sd_mecha.literal(value, config=config, merge_space=space)

    def add_difference(self, a, b, c=None, **kw):
        if self.ours:
            if self.finalized and "alpha" in kw:
                kw["alpha"] = self.value(kw["alpha"])
            return compose.add_difference(a, b, c, **kw)
        return sd_mecha.add_difference(a, b, c, **kw)


# --- the recipes, written once -----------------------------------------------------------------

def weighted_sum(k, alpha=0.5):
    return k.call("weighted_sum", k.model("a.safetensors"), k.model("b.safetensors"), alpha=alpha)


def public_add_difference(k):
    return k.add_difference(k.model("a.safetensors"), k.model("b.safetensors"), k.model("c.safetensors"), alpha=0.7)


def public_add_difference_of_delta(k):
    return k.add_difference(k.model("a.safetensors"), k.model("d.safetensors", space="delta"), alpha=0.4)


def public_add_difference_clamped(k):
    return k.add_difference(k.model("a.safetensors"), k.model("b.safetensors"), k.model("c.safetensors"),
                            alpha=1.5, clamp_to_ab=True)


def ties_like_chain(k):
    base = k.model("base.safetensors")
    deltas = [k.call("subtract", k.model(f"{n}.safetensors"), base) for n in "abc"]
    avg = k.call("n_average", *deltas)
    scaled = k.call("scale", avg, 1.25)
    merged = k.call("add_difference", base, scaled, alpha=1.0)
    bounded = k.call("clamp", merged, *[k.model(f"{n}.safetensors") for n in "abc"], stiffness=0.5)
    return k.call("fallback", bounded, base)


def component_split(k):
    a, b = k.model("a.safetensors"), k.model("b.safetensors")
    return k.call("fallback", k.call("pick_component", a, "diffuser"), k.call("slerp", a, b, 0.25))


def omit_and_cast(k):
    a, b = k.model("a.safetensors"), k.model("b.safetensors")
    return k.call("cast", k.call("fallback", k.call("omit_component", a, "vae"), b), None, "bfloat16")


def block_weights(k):
    blocks = k.literal(dict(BLOCK_VALUES), config="sd1-supermerger_blocks", space="param" if k.finalized else None)
    alpha = k.call("convert_sd1_blocks_to_ldm", blocks)
    return k.call("weighted_sum", k.model("a.safetensors"), k.model("b.safetensors"), alpha=alpha)


def shared_subgraphs(k):
    base, a, b = k.model("base.safetensors"), k.model("a.safetensors"), k.model("b.safetensors")
    d = k.call("subtract", a, base)
    x = k.call("add_difference", base, d, alpha=0.5)
    y = k.call("weighted_sum", x, b, alpha=0.5)
    z = k.call("slerp", x, y, 0.5)
    return k.call("n_average", x, y, z, k.call("add_difference", y, d, alpha=0.5))


def plain_values(k):
    return k.literal({"t": True, "f": False, "n": None, "s": 'a "quoted" \\ string', "i": 3, "x": -0.0,
                      "u": "ünï 模型", "eq": "a=b"})


def odd_paths(k):
    a = k.model('my models/"quoted" \\ ünï.safetensors')
    b = k.model("space path/b c.safetensors", config=None)
    return k.call("weighted_sum", a, b, alpha=1e-07)


def scalar_root(k):
    return k.literal(1e20)


def many_models(k):
    models = [k.model(f"m{i}.safetensors") for i in range(30)]
    return k.call("n_average", *[k.call("weighted_sum", models[i], models[(i + 7) % 30], alpha=(i % 3) / 4)
                                 for i in range(30)])


RECIPES = [weighted_sum, public_add_difference, public_add_difference_of_delta, public_add_difference_clamped,
           ties_like_chain, component_split, omit_and_cast, block_weights, shared_subgraphs, plain_values,
           odd_paths, scalar_root, many_models]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda f: f.__name__)
def test_same_bytes_as_sd_mecha(recipe):
    ours = recipe(Kit(ours=True))
    theirs_text = sd_mecha.serialize(recipe(Kit(ours=False)), finalize=False)
    ours_text = serialize(ours)
    assert ours_text == theirs_text
    # our reader reads what sd-mecha writes, back into our recipe
    assert deserialize(theirs_text) == ours
    # sd-mecha reads what we write, and writes it back unchanged
    read_back = sd_mecha.deserialize(ours_text)
    if isinstance(read_back, dict):  # sd-mecha returns a root dict line as a plain dict
        assert read_back == dict(ours.value)
    else:
        assert sd_mecha.serialize(read_back, finalize=False) == ours_text


@pytest.mark.parametrize("alpha", [0.1, 1e-07, 1e20, 2, -0.0, 0.30000000000000004, 10 ** 20, 5e-324])
def test_number_formatting_matches(alpha):
    assert serialize(weighted_sum(Kit(ours=True), alpha)) == \
        sd_mecha.serialize(weighted_sum(Kit(ours=False), alpha), finalize=False)


def test_operators_build_the_same_recipes():
    o, t = Kit(ours=True), Kit(ours=False)
    for build in (lambda k: (k.model("a") - k.model("b")) * 0.5,
                  lambda k: k.model("c") + (k.model("a") - k.model("b")),
                  lambda k: k.model("a") | k.model("b"),
                  lambda k: k.model("a").to(dtype=torch.float16),
                  lambda k: k.model("a").to(device="cpu", dtype=torch.bfloat16)):
        assert serialize(build(o)) == sd_mecha.serialize(build(t), finalize=False)


def _golden(*lines):
    return "\n".join(("version 0.1.0",) + lines)


def _scalar(value, index):
    return [f"dict key={value}", f'literal &{index} model_config="singleton-mecha" merge_space="param"',
            f'merge "convert_singleton" &{index + 1}']


def _model(name):
    return f'model "MODELS/{name}.safetensors" model_config="sd1-ldm" merge_space="weight"'


# sd-mecha 1.1.8's own output (finalize=True), reference §2.4
GOLDENS = {
    "weighted_sum": _golden(_model("sd15_a"), _model("sd15_b"), *_scalar(0.5, 2), 'merge "weighted_sum" &0 &1 &4'),
    "add_difference": _golden(_model("sd15_a"), _model("sd15_b"), _model("sd15_c"), 'merge "subtract" &1 &2',
                              *_scalar(0.7, 4), 'merge "add_difference" &0 &3 &6', 'merge "fallback" &7 &0'),
    "ties": _golden(_model("sd15_base"), _model("sd15_a"), 'merge "subtract" &1 &0', _model("sd15_b"),
                    'merge "subtract" &3 &0', _model("sd15_c"), 'merge "subtract" &5 &0', *_scalar(0.2, 7),
                    *_scalar("false", 10), 'merge "ties_sum" &2 &4 &6 k=&9 vote_sgn=&12', *_scalar(1.0, 14),
                    'merge "add_difference" &0 &13 &16'),
    "blocks": _golden(_model("sd15_a"), _model("sd15_b"),
                      "dict " + " ".join(f"{b}={v}" for b, v in zip(BLOCKS, [
                          0.0, 0.091, 0.182, 0.273, 0.364, 0.455, 0.545, 0.636, 0.727, 0.818, 0.909, 1.0, 0.5,
                          1.0, 0.909, 0.818, 0.727, 0.636, 0.545, 0.455, 0.364, 0.273, 0.182, 0.091, 0.0, 0.0])),
                      'literal &2 model_config="sd1-supermerger_blocks" merge_space="param"',
                      'merge "convert_sd1_blocks_to_ldm" &3', 'merge "weighted_sum" &0 &1 &4'),
    "strings": _golden(_model("sd15_a"), *_scalar('"diffuser"', 1), 'merge "pick_component" &0 &3', _model("sd15_b"),
                       *_scalar(0.25, 6), 'merge "slerp" &0 &5 &8', 'merge "fallback" &4 &9'),
}


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_sd_mecha_golden_texts_read_and_rewrite_unchanged(name):
    text = GOLDENS[name]
    assert serialize(deserialize(text)) == text
    assert sd_mecha.serialize(sd_mecha.deserialize(text), finalize=False) == text  # the goldens are sd-mecha's


# --- every method both libraries have: same parameter order, keyword-only set and defaults ------

NOT_COMPARABLE = {
    "exchange_ema": "an interface in sd-mecha that opens the model file to pick an implementation",
}
PARAM_INPUTS = {  # param-space tensor arguments: a block literal of the right layout
    "convert_sd1_blocks_to_ldm": ("sd1-supermerger_blocks", "IN00"),
    "convert_sdxl_blocks_to_sgm": ("sdxl-supermerger_blocks", "IN00"),
}
STRING_VALUES = {"component": "clip_l", "device": "cpu"}


def _shared_methods():
    names = []
    for name in sorted(mecha.methods.all_methods()):
        try:
            sd_methods.resolve(name)
        except Exception:  # sd-mecha raises a bare error for unknown names
            continue
        if name not in NOT_COMPARABLE:
            names.append(name)
    return names


def _non_default(p, i):
    """A valid value other than the default, different for each parameter index ``i`` where the
    kind allows, so that a mix-up of two parameters would change the text."""
    if p.kind == "bool":
        flipped = not p.default if isinstance(p.default, bool) else True
        return flipped if i % 2 == 0 else not flipped
    if p.kind == "str":
        if p.choices:
            return next(c for c in reversed(p.choices) if c != p.default)
        return STRING_VALUES.get(p.name, p.default)
    lo, hi = p.minimum, p.maximum
    if lo is not None and hi is not None:
        value = lo + (hi - lo) * (0.25 + i / 64)
    else:
        base = p.default if isinstance(p.default, (int, float)) else 0
        value = base + 3 + i / 8 if hi is None else base - 3 - i / 8
    if p.kind == "int":
        return int(round(value)) + (i if hi is None else 0)
    return float(value)


def _arguments(spec, k, counter):
    args, kwargs = [], {}
    for i, p in enumerate(spec.params):
        if p.kind == "key":
            continue
        if p.is_tensor and p.space == "param":
            config, key = PARAM_INPUTS[spec.name]
            args.append(k.literal({key: 0.5}, config=config))
        elif p.is_tensor:
            for _ in range(2 if p.variadic else 1):
                counter[0] += 1
                args.append(k.model(f"m{counter[0]}.safetensors", space="delta" if p.space == "delta" else "weight"))
        else:  # by keyword: each library writes it positionally or as name=&ref per its own signature
            kwargs[p.name] = _non_default(p, i)
    return args, kwargs


@pytest.mark.parametrize("name", _shared_methods())
def test_every_shared_method_writes_the_same_line(name):
    spec = mecha.methods.resolve(name)
    ours_args, ours_kwargs = _arguments(spec, Kit(ours=True), [0])
    theirs_args, theirs_kwargs = _arguments(spec, Kit(ours=False), [0])
    ours_text = serialize(mecha.methods.build(name, *ours_args, **ours_kwargs))
    theirs_text = sd_mecha.serialize(sd_methods.resolve(name)(*theirs_args, **theirs_kwargs), finalize=False)
    assert ours_text == theirs_text
    assert serialize(deserialize(theirs_text)) == theirs_text


def test_the_shared_method_comparison_covers_the_core_methods():
    core = {"subtract", "add_difference", "weighted_sum", "n_average", "scale", "slerp", "fallback", "cast",
            "pick_component", "omit_component", "clamp", "convert_sd1_blocks_to_ldm"}
    assert core <= set(_shared_methods())


# --- finalize=True on tiny real files ----------------------------------------------------------

@pytest.fixture(scope="module")
def sd1_files(tmp_path_factory):
    """Three tiny files sd-mecha recognises as sd1-ldm: every mandatory key, shapes divided by 256."""
    from safetensors.torch import save_file

    from lib_mecha.arch.demo import random_state_dict
    folder = tmp_path_factory.mktemp("sd1 files")
    paths = {}
    for seed, name in enumerate(["a.safetensors", "b.safetensors", "c.safetensors"]):
        path = folder / name
        save_file(random_state_dict("sd1-ldm", seed, shape_divisor=256), str(path))
        paths[name] = path
    return paths


@pytest.mark.parametrize("recipe", [weighted_sum, component_split, public_add_difference, block_weights],
                         ids=lambda f: f.__name__)
def test_same_bytes_as_sd_mecha_finalized(recipe, sd1_files):
    """sd-mecha's finalize resolves paths and fills configs and the literals' "param" space; our
    hand-built finalized nodes (what lib_mecha's planner is to produce) must write the same text."""
    theirs = recipe(Kit(ours=False, paths=sd1_files))
    theirs_text = sd_mecha.serialize(theirs, finalize=True)
    resolved = {name: p.resolve() for name, p in sd1_files.items()}
    ours = recipe(Kit(ours=True, paths=resolved, finalized=True))
    ours_text = serialize(ours)
    assert ours_text == theirs_text
    assert f'model "{resolved["a.safetensors"]}" model_config="sd1-ldm" merge_space="weight"' in ours_text
    assert deserialize(theirs_text) == ours
    assert sd_mecha.serialize(sd_mecha.deserialize(ours_text), finalize=False) == ours_text


def test_sd_mecha_finalize_of_a_plain_block_dict_reads_as_our_block_literal(sd1_files):
    """§2.4: sd-mecha turns a plain block dict into the sd1-supermerger_blocks literal plus the
    converter when finalizing; our reader reads that as the explicit recipe."""
    kit = Kit(ours=False, paths=sd1_files)
    alpha = sd_mecha.convert(dict(BLOCK_VALUES), "sd1-ldm")
    theirs = sd_mecha.weighted_sum(kit.model("a.safetensors"), kit.model("b.safetensors"), alpha=alpha)
    text = sd_mecha.serialize(theirs, finalize=True)
    resolved = {name: p.resolve() for name, p in sd1_files.items()}
    assert deserialize(text) == block_weights(Kit(ours=True, paths=resolved, finalized=True))


# --- why the writer refuses what it refuses (docs/mecha-format.md, "Decisions") ----------------

@pytest.mark.parametrize("line, error", [
    ('model "a=b.safetensors" model_config=null merge_space="weight"', ValueError),  # split at '=' despite quotes
    ('model path="a=b.safetensors" model_config=null merge_space="weight"', IndexError),  # no keyword form
    ("dict key=inf", ValueError),
    ("dict key=nan", ValueError),
    ('model "a.safetensors" model_config="structural" merge_space="weight"', ValueError),
])
def test_sd_mecha_cannot_read_what_our_writer_refuses(line, error):
    with pytest.raises(error):
        sd_mecha.deserialize("version 0.1.0\n" + line)


def test_sd_mecha_rejects_the_trailing_newline_and_crlf_our_writer_never_writes():
    text = serialize(weighted_sum(Kit(ours=True)))
    for variant, error in ((text + "\n", ValueError), (text.replace("\n", "\r\n"), RuntimeError)):
        with pytest.raises(error):
            sd_mecha.deserialize(variant)
        assert deserialize(variant) == deserialize(text)
