"""The command line: merge, info, methods; one-line errors and exit codes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lib_mecha as mecha
from lib_mecha.arch.demo import random_state_dict
from lib_mecha.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_models")
    for seed, name in enumerate("ab"):
        save_file(random_state_dict("sd1-ldm", seed, shape_divisor=32), str(folder / f"{name}.safetensors"))
    return folder


@pytest.fixture()
def recipe_file(tmp_path):
    path = tmp_path / "ws.mecha"
    path.write_text(mecha.serialize(mecha.weighted_sum(mecha.model("a"), mecha.model("b"), alpha=0.25)))
    return path


def test_merge_writes_file_with_options(models, recipe_file, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    code = main(["merge", str(recipe_file), "-o", str(out), "--models-dir", str(models), "--dtype", "bf16",
                 "--threads", "1", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    merged = load_file(str(out))
    a, b = load_file(str(models / "a.safetensors")), load_file(str(models / "b.safetensors"))
    k = "model.diffusion_model.out.2.weight"
    assert merged[k].dtype == torch.bfloat16
    assert torch.equal(merged[k], torch.lerp(a[k].float(), b[k].float(), 0.25).bfloat16())
    assert "wrote" in capsys.readouterr().out


def test_existing_output_refused_then_overwritten(models, recipe_file, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    assert main(["merge", str(recipe_file), "-o", str(out), "--models-dir", str(models)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: output already exists") and err.count("\n") == 1
    assert out.read_bytes() == b"keep me"
    assert main(["merge", str(recipe_file), "-o", str(out), "--models-dir", str(models), "--overwrite"]) == 0


def test_bad_recipe_is_one_line_and_nonzero(models, tmp_path, capsys):
    bad = tmp_path / "bad.mecha"
    bad.write_text("version 0.1.0\nmerge \"weigthed_sum\"")
    out = tmp_path / "out.safetensors"
    code = main(["merge", str(bad), "-o", str(out), "--models-dir", str(models)])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "weigthed_sum" in err and "line 2" in err
    assert not out.exists()


def test_missing_model_names_it(models, tmp_path, capsys):
    recipe = tmp_path / "r.mecha"
    recipe.write_text(mecha.serialize(mecha.weighted_sum(mecha.model("a"), mecha.model("zzz"))))
    assert main(["merge", str(recipe), "-o", str(tmp_path / "o.safetensors"), "--models-dir", str(models)]) == 1
    assert "model not found: zzz" in capsys.readouterr().err


def test_info_describes_model_and_embedded_recipe(models, recipe_file, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    assert main(["merge", str(recipe_file), "-o", str(out), "--models-dir", str(models), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "architecture:  sd1-ldm" in text
    assert "diffuser 686" in text and "F16" in text
    assert 'merge "weighted_sum"' in text


def test_methods_lists_every_method(capsys):
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    for name in ("weighted_sum", "add_difference", "slerp", "n_average", "clamp", "pick_component"):
        assert f"  {name}(" in text


def test_module_entry_point_runs(models, recipe_file, tmp_path):
    out = tmp_path / "cli.safetensors"
    proc = subprocess.run([sys.executable, "-m", "lib_mecha", "merge", str(recipe_file), "-o", str(out),
                           "--models-dir", str(models)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.exists()
