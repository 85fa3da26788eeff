"""The catalogue through the engine: tiny safetensors files with real SD1 key names, merged in
memory, each key compared with the raw function; elementwise promises checked on chunks."""
import pytest
import torch
from safetensors.torch import save_file

import lib_mecha
import lib_mecha.compose as compose
import lib_mecha.methods as methods
from lib_mecha.recipe import model
from method_calls import raw

KEYS = {
    "model.diffusion_model.input_blocks.1.0.in_layers.2.weight": (8, 8, 3, 3),
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.2.weight": (8, 32),
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight": (64, 8),
    "model.diffusion_model.input_blocks.1.1.proj_out.bias": (8,),
    "model_ema.diffusion_modelinput_blocks11proj_outbias": (8,),
}
FAMILIES = {"geometric", "masks", "cosine", "ties", "dare", "spectral", "crossover", "slicing", "supermerger"}
CASES = sorted(name for name, spec in methods.all_methods().items()
               if spec.route is None and spec.func.__module__.rsplit(".", 1)[-1] in FAMILIES)
SEEDS = {"ties_sum_with_dropout": {"seed": 3, "probability": 0.5}, "dropout": {"seed": 3, "probability": 0.5},
         "add_noise": {"seed": 3}, "truncate_rank": {"rank": 2}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("catalogue")
    tensors = {}
    for i, name in enumerate("abc"):
        g = torch.Generator().manual_seed(i)
        tensors[name] = {k: torch.randn(s, generator=g) for k, s in KEYS.items()}
        save_file(tensors[name], str(folder / f"{name}.safetensors"))
    return folder, tensors


def _inputs(name, folder):
    spec = methods.resolve(name)
    nodes = [model(str(folder / f"{n}.safetensors"), config="sd1-ldm") for n in "abc"]
    tensor_params = [p for p in spec.params if p.is_tensor]
    needs_delta = any(p.space == "delta" for p in tensor_params)
    count = 3 if spec.variadic is not None else len(tensor_params)
    picked = list(range(count))
    if needs_delta:
        return [methods.build("subtract", nodes[i], nodes[(i + 1) % 3]) for i in picked], picked, True
    return [nodes[i] for i in picked], picked, False


@pytest.mark.parametrize("name", CASES)
def test_method_through_the_engine_matches_the_raw_function(name, files):
    folder, tensors = files
    nodes, picked, deltas = _inputs(name, folder)
    extra = SEEDS.get(name, {})
    result = lib_mecha.merge(methods.build(name, *nodes, **extra), output_dtype="fp32", threads=2)
    assert sorted(result.state_dict) == sorted(KEYS)
    names = "abc"
    for key in KEYS:
        if deltas:
            args = [tensors[names[i]][key] - tensors[names[(i + 1) % 3]][key] for i in picked]
        else:
            args = [tensors[names[i]][key] for i in picked]
        expected = raw(name, *args, key=key, **extra)
        assert torch.allclose(result.state_dict[key], expected, atol=1e-5, equal_nan=True), key


def test_seeded_merges_repeat_exactly_with_any_thread_count(files):
    folder, _ = files
    a, b, c = (model(str(folder / f"{n}.safetensors")) for n in "abc")
    recipe = compose.add_ties_with_dare(a, b, c, probability=0.5, della_eps=0.1, k=0.5, alpha=0.8, seed=42)
    one = lib_mecha.merge(recipe, output_dtype="fp32", threads=1).state_dict
    two = lib_mecha.merge(recipe, output_dtype="fp32", threads=2).state_dict
    assert all(torch.equal(one[k], two[k]) for k in one)
    again = lib_mecha.merge(lib_mecha.deserialize(lib_mecha.serialize(recipe)), output_dtype="fp32").state_dict
    assert all(torch.equal(one[k], again[k]) for k in one)  # the seed travels with the .mecha text


def test_typed_literals_stay_apart_in_the_engine(files):
    folder, tensors = files
    a, b = (model(str(folder / f"{n}.safetensors")) for n in "ab")
    recipe = compose.add_ties_with_dare(a, b, probability=0.0, seed=1)  # alpha=1.0, k=1.0 next to rescale=True
    merged = lib_mecha.merge(recipe, output_dtype="fp32").state_dict
    key = next(iter(KEYS))
    assert torch.allclose(merged[key], tensors["b"][key], atol=1e-5)


def test_mask_feeds_alpha_through_the_engine(files):
    folder, tensors = files
    a, b, c = (model(str(folder / f"{n}.safetensors")) for n in "abc")
    merged = lib_mecha.merge(compose.train_difference(a, b, c), output_dtype="fp32").state_dict
    key = next(iter(KEYS))
    ta, tb, tc = (tensors[n][key] for n in "abc")
    expected = ta + (tb - tc) * raw("train_difference_mask", ta, tb, tc)
    assert torch.allclose(merged[key], expected, atol=1e-6)


def test_exchange_ema_through_the_engine(files):
    folder, tensors = files
    merged = lib_mecha.merge(lib_mecha.exchange_ema(model(str(folder / "a.safetensors"), config="sd1-ldm")),
                             output_dtype="fp32").state_dict
    unet = "model.diffusion_model.input_blocks.1.1.proj_out.bias"
    ema = "model_ema.diffusion_modelinput_blocks11proj_outbias"
    assert torch.equal(merged[unet], tensors["a"][ema]) and torch.equal(merged[ema], tensors["a"][unet])
    conv = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"  # no EMA twin in the file: unchanged
    assert torch.equal(merged[conv], tensors["a"][conv])


@pytest.mark.parametrize("name", sorted(n for n, s in methods.all_methods().items() if s.elementwise and n != "cast"
                                        and s.func.__module__.startswith("lib_mecha.methods.")))
def test_elementwise_methods_give_the_same_result_chunk_by_chunk(name):
    spec = methods.resolve(name)
    count = 3 if spec.variadic is not None else sum(1 for p in spec.params if p.is_tensor)
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1000, generator=g) for _ in range(count)]
    whole = raw(name, *inputs)
    pieces = [raw(name, *(t[i:i + 137] for t in inputs)) for i in range(0, 1000, 137)]
    assert torch.allclose(torch.cat(pieces), whole, equal_nan=True)
