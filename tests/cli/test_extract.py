"""``python -m lib_mecha extract``: a LoRA from two models (or recipes), one-line errors, nothing half-written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import lib_mecha as mecha
from lib_mecha.arch.demo import random_state_dict
from lib_mecha.cli import main
from lib_mecha.lora import bake, lora

ROOT = Path(__file__).resolve().parents[2]
U = "model.diffusion_model."
Q = U + "middle_block.1.transformer_blocks.0.attn1.to_q.weight"          # linear (40, 40) at 1/32
CONV = U + "input_blocks.1.0.in_layers.2.weight"                          # conv 3x3 (10, 10, 3, 3)
BIAS = U + "input_blocks.1.0.in_layers.2.bias"
NORM = U + "input_blocks.1.0.in_layers.0.weight"
TE_Q = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
VAE = "first_stage_model.decoder.conv_in.weight"
Q_NAME = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"
CONV_NAME = "lora_unet_down_blocks_0_resnets_0_conv1"
TE_NAME = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"


def _g(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """base, and tuned = base + rank-2 changes of three weights, plus changes LoRAs cannot hold."""
    folder = tmp_path_factory.mktemp("extract_models")
    base = random_state_dict("sd1-ldm", 0, dtype=torch.float32, shape_divisor=32, scale=0.1)
    tuned = dict(base)
    n = base[Q].shape[0]
    tuned[Q] = base[Q] + _g(n, 2, seed=1) @ _g(2, n, seed=2) * 0.05
    c = base[CONV].shape
    tuned[CONV] = base[CONV] + (_g(c[0], 2, seed=3) @ _g(2, c[1] * 9, seed=4)).reshape(c) * 0.05
    t = base[TE_Q].shape[0]
    tuned[TE_Q] = base[TE_Q] + _g(t, 1, seed=5) @ _g(1, t, seed=6) * 0.05
    for key in (BIAS, NORM, VAE):
        tuned[key] = base[key] + 0.5
    save_file(base, str(folder / "base.safetensors"))
    save_file(tuned, str(folder / "tuned.safetensors"))
    save_file(random_state_dict("sdxl-sgm", 0, shape_divisor=64, components=("diffuser",)),
              str(folder / "xl.safetensors"))
    return folder


def _read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _run(models, *args):
    return main(["extract", *[str(a) for a in args], "--models-dir", str(models)])


def test_extract_keeps_what_a_lora_holds_and_bakes_back(models, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    assert _run(models, "tuned", "base", "-o", out, "--rank", 4, "--dtype", "fp32") == 0, capsys.readouterr().err
    assert f"wrote {out} (3 modules, rank up to 2" in capsys.readouterr().out
    tensors, meta = _read(out)
    assert {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in tensors} == \
        {Q_NAME, CONV_NAME, TE_NAME}  # no bias, norm or VAE module; rank-2 changes stay rank 2
    assert tensors[f"{CONV_NAME}.lora_down.weight"].shape[:2] == (2, 10)
    assert json.loads(meta["mecha_extract"]) == {"rank": 4, "energy": None, "conv_rank": 4, "dtype": "fp32",
                                                 "components": ["clip_l", "diffuser"], "architecture": "sd1-ldm"}
    recipe = mecha.deserialize(meta["mecha_recipe"])
    assert recipe.method == "subtract" and "sha256=" in meta["mecha_recipe"]
    assert meta["ss_network_dim"] == "2" and json.loads(meta["ss_network_args"])["conv_dim"] == "2"
    back = mecha.merge(bake(str(models / "base.safetensors"), lora(str(out))), output_dtype="fp32").state_dict
    tuned, base = load_file(str(models / "tuned.safetensors")), load_file(str(models / "base.safetensors"))
    for key in (Q, CONV, TE_Q):
        torch.testing.assert_close(back[key], tuned[key], rtol=1e-4, atol=1e-5)
    for key in (BIAS, NORM, VAE):
        assert torch.equal(back[key], base[key])


def test_energy_components_and_conv_rank(models, tmp_path, capsys):
    out = tmp_path / "e.safetensors"
    assert _run(models, "tuned", "base", "-o", out, "--energy", "0.5", "--components", "diffuser",
                "--conv-rank", "0") == 0, capsys.readouterr().err
    tensors, meta = _read(out)
    assert {k.split(".")[0] for k in tensors} == {Q_NAME}   # no text encoder, no 3x3 convolution
    assert tensors[f"{Q_NAME}.lora_down.weight"].shape[0] == 1  # half the energy needs one direction
    assert json.loads(meta["mecha_extract"])["energy"] == 0.5


def test_a_recipe_extracts_as_its_saved_merge_does(models, tmp_path, capsys):
    recipe = tmp_path / "mix.mecha"
    recipe.write_text(mecha.serialize(mecha.weighted_sum(mecha.model("base"), mecha.model("tuned"), alpha=0.5)))
    saved = tmp_path / "mix.safetensors"
    assert main(["merge", str(recipe), "-o", str(saved), "--models-dir", str(models), "--dtype", "fp32"]) == 0
    direct, via_file = tmp_path / "direct.safetensors", tmp_path / "via_file.safetensors"
    assert _run(models, recipe, "base", "-o", direct, "--rank", "2", "--dtype", "fp32") == 0
    assert _run(models, saved, "base", "-o", via_file, "--rank", "2", "--dtype", "fp32") == 0
    capsys.readouterr()
    a, meta = _read(direct)
    b, _ = _read(via_file)
    assert a.keys() == b.keys() and len(a) == 9
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert 'merge "weighted_sum"' in meta["mecha_recipe"] and 'merge "subtract"' in meta["mecha_recipe"]


def test_progress_reaches_every_key(models, tmp_path):
    from lib_mecha.lora import extract_lora
    seen = []
    extract_lora("tuned", "base", tmp_path / "p.safetensors", rank=2, model_dirs=[str(models)],
                 progress=lambda done, total, nbytes: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] and seen[-1][1] > 100  # every UNet and text encoder weight


def test_a_cancelled_extraction_writes_nothing(models, tmp_path):
    import threading

    from lib_mecha.errors import MergeCancelled
    from lib_mecha.lora import extract_lora
    cancel = threading.Event()
    with pytest.raises(MergeCancelled):
        extract_lora("tuned", "base", tmp_path / "c.safetensors", rank=2, model_dirs=[str(models)], cancel=cancel,
                     threads=1, progress=lambda done, total, nbytes: cancel.set())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,message", [
    (("tuned", "xl"), "is sd1-ldm but xl.safetensors is sdxl-sgm"),
    (("tuned", "base", "--rank", "100"), "'rank': 100 is more than any weight of sd1-ldm allows (at most 40)"),
    (("tuned", "base", "--conv-rank", "1000"), "'conv_rank': 1000 is more than any convolution of sd1-ldm allows"),
    (("tuned", "base", "--rank", "0"), "must be a whole number ≥ 1"),
    (("tuned", "base", "--energy", "1.5"), "'energy': must be in (0, 1]"),
    (("tuned", "base", "--components", "vae"), "vae: not a component a sd1-ldm LoRA can patch"),
    (("tuned", "nope"), "model not found: nope"),
    (("base", "base"), "every change is zero"),
])
def test_bad_input_is_one_line_and_writes_nothing(models, tmp_path, capsys, args, message):
    out = tmp_path / "bad.safetensors"
    code = _run(models, *args, "-o", out)
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_outputs_are_never_overwritten_unasked_and_inputs_never(models, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    out.write_bytes(b"keep me")
    assert _run(models, "tuned", "base", "-o", out) == 1
    assert capsys.readouterr().err.startswith("error: output already exists")
    assert out.read_bytes() == b"keep me"
    assert _run(models, "tuned", "base", "-o", out, "--rank", "2", "--overwrite") == 0
    capsys.readouterr()
    tuned = models / "tuned.safetensors"
    before = tuned.read_bytes()
    assert _run(models, "tuned", "base", "-o", tuned, "--overwrite") == 1
    assert "is an input of this recipe" in capsys.readouterr().err
    assert tuned.read_bytes() == before
    assert _run(models, "tuned", "base", "-o", tmp_path / "x.ckpt") == 1
    assert "must be a .safetensors file" in capsys.readouterr().err


def test_module_entry_point_extracts(models, tmp_path):
    out = tmp_path / "cli.safetensors"
    proc = subprocess.run([sys.executable, "-m", "lib_mecha", "extract", "tuned", "base", "-o", str(out),
                           "--rank", "2", "--models-dir", str(models)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and out.exists()
