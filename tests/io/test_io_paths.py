"""safe_output_path: names stay inside their folder."""
from __future__ import annotations

import os

import pytest

from lib_mecha.errors import PathEscape
from lib_mecha.io import safe_output_path


def test_plain_names(tmp_path):
    assert safe_output_path("merged", tmp_path) == tmp_path / "merged.safetensors"
    assert safe_output_path("merged.safetensors", tmp_path) == tmp_path / "merged.safetensors"
    assert safe_output_path("Merged.SAFETENSORS", tmp_path) == tmp_path / "Merged.SAFETENSORS"
    assert safe_output_path("a.b", tmp_path) == tmp_path / "a.b.safetensors"
    assert safe_output_path("sdxl/merged", tmp_path) == tmp_path / "sdxl" / "merged.safetensors"
    assert safe_output_path("./x", tmp_path) == tmp_path / "x.safetensors"
    assert safe_output_path("recipe", tmp_path, suffix=".mecha") == tmp_path / "recipe.mecha"
    assert safe_output_path("..hidden", tmp_path) == tmp_path / "..hidden.safetensors"


@pytest.mark.parametrize("name, problem", [
    ("", "output name '' is empty"),
    ("   ", "output name '   ' is empty"),
    (None, "output name None is empty"),
    ("a\x00b", "output name 'a\\x00b' contains a NUL byte"),
    ("/etc/passwd", "output name '/etc/passwd' is an absolute path"),
    ("\\\\server\\share\\m", "output name '\\\\\\\\server\\\\share\\\\m' is an absolute path"),
    ("C:\\models\\m", "output name 'C:\\\\models\\\\m' is an absolute path"),
    ("c:m", "output name 'c:m' is an absolute path"),
    ("../m", "output name '../m' leaves its folder with '..'"),
    ("sub/../../m", "output name 'sub/../../m' leaves its folder with '..'"),
    ("..\\m", "output name '..\\\\m' leaves its folder with '..'"),
    ("sub/", "output name 'sub/' names a folder, not a file"),
    (".", "output name '.' names a folder, not a file"),
])
def test_refused_names(tmp_path, name, problem):
    with pytest.raises(PathEscape) as info:
        safe_output_path(name, tmp_path)
    assert info.value.message == problem


def test_symlink_escape(tmp_path):
    folder, outside = tmp_path / "models", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    os.symlink(outside, folder / "link")
    os.symlink(outside / "target.safetensors", folder / "m.safetensors")
    for name in ("link/m", "m"):
        with pytest.raises(PathEscape) as info:
            safe_output_path(name, folder)
        assert info.value.message == f"output name {name!r} leads outside {folder} through a symbolic link"


def test_folder_itself_may_be_a_symlink(tmp_path):
    real = tmp_path / "drive2"
    real.mkdir()
    os.symlink(real, tmp_path / "models")
    (real / "sub").mkdir()
    os.symlink(real / "sub", real / "inner")  # a link that stays inside is fine
    assert safe_output_path("m", tmp_path / "models") == tmp_path / "models" / "m.safetensors"
    assert safe_output_path("inner/m", tmp_path / "models") == tmp_path / "models" / "inner" / "m.safetensors"
