"""PEFT adapters baked as peft's own ``merge_and_unload`` merges them (peft is the oracle).

Each test builds a small network whose module paths are the diffusers names of real SD1, SDXL or
FLUX weights, with those weights taken from a tiny checkpoint of the architecture; peft wraps it,
trains nothing (its factors are drawn at random), saves the adapter as peft or diffusers do, and
merges. lib_mecha bakes the saved file into the checkpoint; both must agree.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import lib_mecha
from lib_mecha.arch.demo import random_state_dict
from lib_mecha.errors import LoraConfigError
from lib_mecha.lora import bake, lora

peft = pytest.importorskip("peft", reason="peft (requirements/oracles-forge.txt) is the oracle")

U = "model.diffusion_model."
TE = "cond_stage_model.transformer."

# (diffusers module path, checkpoint key, rows of the key as fractions or None)
SD1 = [("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        U + "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", None),
       ("down_blocks.0.attentions.0.proj_in", U + "input_blocks.1.1.proj_in.weight", None),
       ("down_blocks.0.resnets.0.conv1", U + "input_blocks.1.0.in_layers.2.weight", None),
       ("mid_block.attentions.0.transformer_blocks.0.ff.net.2",
        U + "middle_block.1.transformer_blocks.0.ff.net.2.weight", None)]
SD1_TE = [("text_model.encoder.layers.0.self_attn.q_proj", TE + "text_model.encoder.layers.0.self_attn.q_proj.weight",
           None)]
SDXL = [("down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k",
         U + "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight", None),
        ("up_blocks.0.resnets.2.conv2", U + "output_blocks.2.0.out_layers.3.weight", None),
        ("down_blocks.2.attentions.1.proj_out", U + "input_blocks.8.1.proj_out.weight", None)]
FLUX = [("transformer_blocks.0.attn.to_q", U + "double_blocks.0.img_attn.qkv.weight", (0, 1, 3)),
        ("transformer_blocks.0.attn.to_v", U + "double_blocks.0.img_attn.qkv.weight", (2, 3, 3)),
        ("single_transformer_blocks.1.proj_out", U + "single_blocks.1.linear2.weight", None)]


def _rows(weight, rows):
    if rows is None:
        return weight
    start, stop, total = rows
    n = weight.shape[0]
    return weight[n * start // total:n * stop // total]


def network(layers, sd) -> nn.Module:
    """A module tree with a Linear or Conv2d at each diffusers path, holding the checkpoint's weight."""
    root = nn.Module()
    for path, key, rows in layers:
        w = _rows(sd[key], rows)
        *parents, leaf = path.split(".")
        parent = root
        for part in parents:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        if w.dim() == 2:
            layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
        else:
            layer = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), padding=w.shape[2] // 2, bias=False)
        layer.weight.data.copy_(w)
        parent.add_module(leaf, layer)
    return root


def adapter(layers, sd, seed=0, **config):
    """peft's LoRA on the network, every LoRA tensor (and DoRA magnitude) drawn at random."""
    from peft import LoraConfig, get_peft_model
    targets = sorted({path.rsplit(".", 1)[-1] for path, _, _ in layers})
    model = get_peft_model(network(layers, sd), LoraConfig(target_modules=targets, init_lora_weights=False, **config))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "magnitude" in name else 0.2))
    return model


def merged_weights(model, layers):
    merged = model.merge_and_unload()
    return {path: merged.get_submodule(path).weight.detach().clone() for path, _, _ in layers}


def checkpoint(tmp_path, arch, seed=1, components=None):
    sd = random_state_dict(arch, seed=seed, dtype=torch.float32, shape_divisor=64, scale=0.1, components=components)
    path = tmp_path / f"{arch}.safetensors"
    save_file(sd, str(path))
    return path, sd


def baked(base, lora_path):
    result = lib_mecha.merge(bake(str(base), lora(str(lora_path))), output_dtype="fp32")
    return result.state_dict, result.warnings


def assert_agree(ours, layers, expected, sd):
    for path, key, rows in layers:
        torch.testing.assert_close(_rows(ours[key], rows), expected[path], rtol=1e-4, atol=1e-5, msg=path)
    touched = {key for _, key, _ in layers}
    for key in (U + "input_blocks.1.0.in_layers.0.weight", U + "out.2.weight"):
        if key in sd and key not in touched:
            assert torch.equal(ours[key], sd[key])


def diffusers_file(path, parts, metadata=None):
    """A diffusers ``save_lora_weights`` file: each saved peft adapter's keys under its component's
    prefix, and (when ``metadata``) each config in ``lora_adapter_metadata``, keys prefixed the same way
    (diffusers ``_pack_dict_with_prefix``)."""
    tensors, packed = {}, {}
    for component, folder in parts.items():
        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
            for k in f.keys():
                tensors[component + "." + k[len("base_model.model."):]] = f.get_tensor(k)
        config = json.loads((folder / "adapter_config.json").read_text())
        packed.update({f"{component}.{k}": v for k, v in config.items()})
    meta = {"format": "pt"}
    if metadata:
        meta["lora_adapter_metadata"] = json.dumps(packed)
    save_file(tensors, str(path), metadata=meta)
    return path


CONFIGS = {
    "alpha and patterns": dict(r=4, lora_alpha=16, rank_pattern={"conv1": 2, "ff.net.2": 3},
                               alpha_pattern={"attn1.to_q": 3, "proj_in": 1.5}),
    "rslora": dict(r=4, lora_alpha=6, use_rslora=True),
    "dora": dict(r=3, lora_alpha=5, use_dora=True),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_sd1_peft_adapter_folder_bakes_as_peft_merges(tmp_path, name):
    base, sd = checkpoint(tmp_path, "sd1-ldm")
    model = adapter(SD1, sd, **CONFIGS[name])
    model.save_pretrained(str(tmp_path / "adapter"))
    expected = merged_weights(model, SD1)
    ours, warnings = baked(base, tmp_path / "adapter" / "adapter_model.safetensors")
    assert warnings == []
    assert_agree(ours, SD1, expected, sd)


def test_sdxl_renamed_adapter_reads_its_own_config(tmp_path):
    base, sd = checkpoint(tmp_path, "sdxl-sgm", components=("diffuser",))
    model = adapter(SDXL, sd, r=2, lora_alpha=7, alpha_pattern={"attn2.to_k": 1.0}, use_dora=True)
    model.save_pretrained(str(tmp_path / "adapter"))
    expected = merged_weights(model, SDXL)
    folder = tmp_path / "loras"
    folder.mkdir()
    (tmp_path / "adapter" / "adapter_model.safetensors").rename(folder / "style.safetensors")
    (tmp_path / "adapter" / "adapter_config.json").rename(folder / "style.adapter_config.json")
    ours, warnings = baked(base, folder / "style.safetensors")
    assert warnings == []
    assert_agree(ours, SDXL, expected, sd)


def test_flux_diffusers_file_with_its_config_in_the_metadata(tmp_path):
    base, sd = checkpoint(tmp_path, "flux-flux", components=("diffuser",))
    model = adapter(FLUX, sd, r=4, lora_alpha=12, rank_pattern={"proj_out": 2}, use_rslora=True)
    model.save_pretrained(str(tmp_path / "adapter"))
    expected = merged_weights(model, FLUX)
    path = diffusers_file(tmp_path / "flux_lora.safetensors", {"transformer": tmp_path / "adapter"}, metadata=True)
    ours, warnings = baked(base, path)
    assert warnings == []
    assert_agree(ours, FLUX, expected, sd)
    qkv = ours[U + "double_blocks.0.img_attn.qkv.weight"]
    h = qkv.shape[0] // 3
    assert torch.equal(qkv[h:2 * h], sd[U + "double_blocks.0.img_attn.qkv.weight"][h:2 * h])  # to_k untouched


def test_each_component_of_a_diffusers_file_takes_its_own_config(tmp_path):
    base, sd = checkpoint(tmp_path, "sd1-ldm")
    unet = adapter(SD1[:2], sd, r=2, lora_alpha=8)
    text = adapter(SD1_TE, sd, seed=1, r=4, lora_alpha=1)
    unet.save_pretrained(str(tmp_path / "unet"))
    text.save_pretrained(str(tmp_path / "text"))
    expected = {**merged_weights(unet, SD1[:2]), **merged_weights(text, SD1_TE)}
    path = diffusers_file(tmp_path / "pipe.safetensors", {"unet": tmp_path / "unet", "text_encoder": tmp_path / "text"},
                          metadata=True)
    ours, warnings = baked(base, path)
    assert warnings == []
    assert_agree(ours, SD1[:2] + SD1_TE, expected, sd)


def test_no_config_means_alpha_equals_rank_with_a_warning_naming_the_file(tmp_path):
    base, sd = checkpoint(tmp_path, "sd1-ldm")
    model = adapter(SD1[:1], sd, r=4, lora_alpha=4)  # alpha = r: what is assumed is right here
    model.save_pretrained(str(tmp_path / "adapter"))
    expected = merged_weights(model, SD1[:1])
    path = diffusers_file(tmp_path / "bare.safetensors", {"unet": tmp_path / "adapter"})
    ours, warnings = baked(base, path)
    assert_agree(ours, SD1[:1], expected, sd)
    assert len(warnings) == 1
    assert str(path) in warnings[0] and "alpha = rank assumed" in warnings[0] and "adapter_config.json" in warnings[0]
    from lib_mecha.ui import lora_support  # what the tab shows next to the LoRA
    assert "alpha = rank assumed" in lora_support.check(str(path), "sd1-ldm", str(base))

    # ai-toolkit saves its PEFT-format LoRAs without alpha, trained at alpha = rank: nothing to warn about
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    toolkit = tmp_path / "toolkit.safetensors"
    save_file(tensors, str(toolkit), metadata={"software": json.dumps({"name": "ai-toolkit", "version": "0.1"})})
    ours, warnings = baked(base, toolkit)
    assert warnings == []
    assert_agree(ours, SD1[:1], expected, sd)


# --- configs that cannot be used: one clear error, nothing written --------------------------

def _saved(tmp_path, sd, **config):
    model = adapter(SD1[:3], sd, **config)
    model.save_pretrained(str(tmp_path / "adapter"))
    return tmp_path / "adapter" / "adapter_model.safetensors", tmp_path / "adapter" / "adapter_config.json"


def _config_edit(field, value):
    def edit(config_path):
        data = json.loads(config_path.read_text())
        data[field] = value
        config_path.write_text(json.dumps(data))
    return edit


BAD = [
    ("r disagrees", _config_edit("r", 8), r"r = 8 for module 'down_blocks\.0\.attentions\.0\.proj_in', but its lora_A "
                                          r"holds rank 4"),
    ("rank_pattern disagrees", _config_edit("rank_pattern", {"conv1": 3}), "r = 3 for module .*conv1.*rank 2"),
    ("dora claimed", _config_edit("use_dora", True), "use_dora is true, but module .* has no magnitude vector"),
    ("r as text", _config_edit("r", "4"), "r must be a whole number ≥ 1, not '4'"),
    ("alpha as bool", _config_edit("lora_alpha", True), "lora_alpha must be a finite number, not true"),
    ("alpha NaN", _config_edit("lora_alpha", float("nan")), "lora_alpha must be a finite number, not NaN"),
    ("pattern list", _config_edit("alpha_pattern", ["conv1"]), "alpha_pattern must map module patterns to values"),
    ("bad regex", _config_edit("rank_pattern", {"conv1(": 2}),
     r"rank_pattern key 'conv1\(' is not a regular expression"),
    ("rslora as text", _config_edit("use_rslora", "yes"), "use_rslora must be true or false, not 'yes'"),
    ("another adapter type", _config_edit("peft_type", "LOHA"), "is a 'LOHA' adapter config, not a LoRA one"),
    ("not JSON", lambda p: p.write_text("{r: 4,"), "is not valid JSON"),
    ("not an object", lambda p: p.write_text("[4, 8]"), "holds list, not a JSON object"),
    ("not text", lambda p: p.write_bytes(b"\xff\xfe\x00{"), "is not UTF-8 text"),
    ("nested", lambda p: p.write_text("[" * 100000 + "]" * 100000), "nested too deeply|not valid JSON"),
    ("huge", lambda p: p.write_text(json.dumps({"r": 4, "pad": "x" * (1 << 20)})), r"is \d+ bytes; a LoRA config"),
]


@pytest.mark.parametrize("name,edit,message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_config_is_one_clear_error_and_nothing_is_written(tmp_path, name, edit, message):
    base, sd = checkpoint(tmp_path, "sd1-ldm")
    weights, config = _saved(tmp_path, sd, r=4, lora_alpha=8, rank_pattern={"conv1": 2})
    edit(config)
    out = tmp_path / "out.safetensors"
    with pytest.raises(LoraConfigError, match=message) as info:
        lib_mecha.merge(bake(str(base), lora(str(weights))), str(out))
    assert str(config) in str(info.value)
    assert not out.exists() and not any(p.name.startswith("out.") for p in tmp_path.iterdir())


def test_bad_config_in_the_metadata_names_the_file(tmp_path):
    base, sd = checkpoint(tmp_path, "sd1-ldm")
    model = adapter(SD1[:1], sd, r=4, lora_alpha=8)
    model.save_pretrained(str(tmp_path / "adapter"))
    path = diffusers_file(tmp_path / "x.safetensors", {"unet": tmp_path / "adapter"})
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata={"lora_adapter_metadata": json.dumps({"unet.r": 2})})
    with pytest.raises(LoraConfigError, match=r"x\.safetensors \(metadata lora_adapter_metadata\) \[unet\]: r = 2"):
        lib_mecha.merge(bake(str(base), lora(str(path))))
