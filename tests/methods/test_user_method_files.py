"""Merge methods from the user's own Python files: the library loader, the command line's
``--methods`` and the extension's ``user_methods`` folder."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import lib_mecha as mecha
import lib_mecha.methods as methods
from lib_mecha.methods.user_files import MODULE_PREFIX, MethodFileError, load_method_files

ROOT = Path(__file__).resolve().parents[2]
SOURCE = textwrap.dedent('''
    import lib_mecha
    from lib_mecha.methods import SAME, Float, Tensor

    @lib_mecha.merge_method(returns=SAME, category="custom", elementwise=True, help="A scaled by factor.")
    def {name}(a=Tensor(SAME), factor=Float(2.0, help="The factor.")):
        return a * factor
''')


@pytest.fixture
def cleanup():
    names = []
    yield names
    for name in names:
        if name in methods.all_methods():
            methods.unregister(name)
    for module in [m for m in sys.modules if m.startswith(MODULE_PREFIX)]:
        del sys.modules[module]


def _write(folder: Path, file: str, name: str) -> Path:
    path = folder / file
    path.write_text(SOURCE.format(name=name), encoding="utf-8")
    return path


def test_a_file_registers_its_methods_once(tmp_path, cleanup):
    path = _write(tmp_path, "mine.py", "scaled_by_file")
    cleanup.append("scaled_by_file")
    assert load_method_files([path]) == ["scaled_by_file"]
    assert load_method_files([path]) == []  # loading it again changes nothing and raises nothing
    assert torch.equal(methods.resolve("scaled_by_file").apply(torch.ones(2), factor=3.0), torch.full((2,), 3.0))
    assert mecha.scaled_by_file(mecha.model("x")).method == "scaled_by_file"


def test_a_folder_loads_its_python_files_but_not_private_ones(tmp_path, cleanup):
    _write(tmp_path, "one.py", "scaled_one")
    _write(tmp_path, "two.py", "scaled_two")
    _write(tmp_path, "_draft.py", "scaled_draft")
    (tmp_path / "notes.txt").write_text("not python")
    cleanup.extend(["scaled_one", "scaled_two", "scaled_draft"])
    assert load_method_files([tmp_path]) == ["scaled_one", "scaled_two"]
    from lib_mecha.ui.session import builder_methods
    assert {"scaled_one", "scaled_two"} <= set(builder_methods())  # the tab offers them


def test_bad_files_are_named_in_the_error(tmp_path, cleanup):
    broken = tmp_path / "broken.py"
    broken.write_text("import lib_mecha\nraise RuntimeError('half written')\n")
    with pytest.raises(MethodFileError, match=r"broken\.py: cannot load its merge methods: RuntimeError: half written"):
        load_method_files([broken])
    with pytest.raises(MethodFileError, match="not found"):
        load_method_files([tmp_path / "missing.py"])


def test_the_command_line_lists_and_merges_with_methods_from_a_file(tmp_path, cleanup, monkeypatch, capsys):
    from lib_mecha.cli import main
    path = _write(tmp_path, "mine.py", "scaled_on_cli")
    cleanup.append("scaled_on_cli")
    save_file({"w": torch.tensor([1.0, -2.0])}, str(tmp_path / "a.safetensors"))
    (tmp_path / "r.mecha").write_text(
        'version 0.1.0\nmodel "a" model_config=null merge_space="weight"\nmerge "scaled_on_cli" &0 factor=3.0')
    monkeypatch.chdir(tmp_path)
    assert main(["methods", "--methods", str(path)]) == 0
    assert "scaled_on_cli" in capsys.readouterr().out
    methods.unregister("scaled_on_cli")  # as in a new process: known only from its file
    assert main(["merge", "r.mecha", "-o", "out.safetensors", "--models-dir", ".", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "scaled_on_cli" in err and len(err.strip().splitlines()) == 1
    # and in a process of its own, as a user runs it
    merged = subprocess.run([sys.executable, "-m", "lib_mecha", "merge", "r.mecha", "-o", "out.safetensors",
                             "--models-dir", ".", "--quiet", "--dtype", "fp32", "--methods", str(path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert merged.returncode == 0, merged.stderr
    from safetensors.torch import load_file
    assert torch.equal(load_file(str(tmp_path / "out.safetensors"))["w"], torch.tensor([3.0, -6.0]))


def test_the_extension_loads_its_user_methods_folder_and_skips_a_broken_file(tmp_path, cleanup, capsys):
    from lib_mecha.host.extension import USER_METHODS, load_user_methods
    assert USER_METHODS == ROOT / "user_methods" and (USER_METHODS / "README.md").is_file()
    (tmp_path / "a_broken.py").write_text("raise ImportError('no such thing')\n")
    _write(tmp_path, "b_good.py", "scaled_in_webui")
    cleanup.append("scaled_in_webui")
    load_user_methods(tmp_path)
    assert "scaled_in_webui" in methods.all_methods()
    printed = capsys.readouterr()
    assert "a_broken.py" in printed.err and "no such thing" in printed.err
    assert "scaled_in_webui" in printed.out
