"""An input of the recipe is never overwritten, however its path is spelled or linked, and even
with overwrite asked: the Python API and the command line refuse before anything is written.
(The tab and the REST routes: tests/ui/test_actions.py, tests/host/test_api.py.)"""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import lib_mecha as mecha
from lib_mecha.cli import main
from lib_mecha.errors import OutputIsInput


@pytest.fixture()
def folder(tmp_path):
    for seed, name in enumerate("abc"):
        g = torch.Generator().manual_seed(seed)
        save_file({"w": torch.randn(4, 4, generator=g), "v": torch.randn(3, generator=g)},
                  str(tmp_path / f"{name}.safetensors"))
    return tmp_path


def snapshot(folder):
    return {p.name: (p.is_symlink(), p.read_bytes() if p.is_file() else None) for p in folder.iterdir()}


def ws(*names):
    return mecha.weighted_sum(*(mecha.model(n) for n in names), alpha=0.5)


def refused(folder, recipe, output, **kw):
    before = snapshot(folder)
    with pytest.raises(OutputIsInput) as info:
        mecha.merge(recipe, output, model_dirs=[folder], overwrite=True, **kw)
    assert snapshot(folder) == before
    text = info.value.format_message()
    assert "\n" not in text and "is an input of this recipe" in text and "never overwritten" in text
    return text


@pytest.mark.parametrize("spelling", ["a.safetensors", "./a.safetensors", "sub/../a.safetensors"])
def test_the_same_file_by_another_spelling(folder, spelling):
    (folder / "sub").mkdir()
    refused(folder, ws("a", "b"), folder / spelling)


def test_a_relative_output_naming_an_input(folder, monkeypatch):
    monkeypatch.chdir(folder)
    assert "refusing to write b.safetensors: it is an input of this recipe, " in refused(
        folder, ws("a", "b"), "b.safetensors")


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_a_link_to_an_input(folder, link):
    target = folder / "alias.safetensors"
    (os.symlink if link == "symbolic" else os.link)(folder / "a.safetensors", target)
    text = refused(folder, ws("a", "b"), target)
    assert str(folder / "a.safetensors") in text


def test_every_kind_of_input_counts(folder):
    replaced = mecha.methods.build("replace_vae", ws("a", "b"), mecha.model("c"))
    refused(folder, replaced, folder / "c.safetensors")  # a VAE donor
    refused(folder, ws("a", "b"), folder / "c.safetensors", fallback_model="c")  # the fallback model


def test_a_shard_of_a_sharded_input(folder):
    shards = folder / "sharded"
    shards.mkdir()
    save_file({"w": torch.zeros(4, 4)}, str(shards / "part-1.safetensors"))
    save_file({"v": torch.zeros(3)}, str(shards / "part-2.safetensors"))
    (shards / "m.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"w": "part-1.safetensors", "v": "part-2.safetensors"}}))
    refused(folder, ws("a", str(shards)), shards / "part-2.safetensors")


def test_another_file_is_still_written_and_overwritten(folder):
    out = folder / "out.safetensors"
    out.write_bytes(b"old")
    mecha.merge(ws("a", "b"), out, model_dirs=[folder], overwrite=True)
    assert out.read_bytes() != b"old"


def test_the_command_line_refuses_with_one_line(folder, capsys):
    recipe_file = folder / "r.mecha"
    recipe_file.write_text(mecha.serialize(ws("a", "b")))
    before = snapshot(folder)
    code = main(["merge", str(recipe_file), "-o", str(folder / "a.safetensors"), "--models-dir", str(folder),
                 "--overwrite"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: refusing to write {folder / 'a.safetensors'}: it is an input of this recipe")
    assert snapshot(folder) == before
