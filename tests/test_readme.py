"""The README's promises: its runnable Python examples run, and its commands exist.

Fenced blocks opened with ```` ```python runnable ```` are executed in a temporary folder that
holds ``models/a|b|c.safetensors``: tiny SD1 models with the real key names.
"""
from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks(language: str, flag: str = ""):
    text = README.read_text(encoding="utf-8")
    return [m.group(3) for m in FENCE.finditer(text) if m.group(1) == language and flag in m.group(2).split()]


def test_readme_has_runnable_examples_that_compile():
    runnable = blocks("python", "runnable")
    assert runnable, "README has no ```python runnable block"
    for i, code in enumerate(blocks("python")):
        compile(code, f"README.md python block {i}", "exec")


def test_readme_gives_the_two_commands_and_ci_uses_the_test_one():
    text = README.read_text(encoding="utf-8")
    for command in ("bash tools/demo", "bash tools/test"):
        assert command in text
        assert (ROOT / command.split()[1]).is_file(), command
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^(exec )?bash tools/test\s*$", ci, re.M), ".ci/run must call bash tools/test"


@pytest.fixture
def example_models(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from lib_mecha.arch.demo import random_state_dict

    models = tmp_path / "models"
    models.mkdir()
    for seed, name in enumerate("abc"):
        save_file(random_state_dict("sd1-ldm", seed, shape_divisor=64), str(models / f"{name}.safetensors"))
    monkeypatch.chdir(tmp_path)
    return models


@pytest.mark.parametrize("index", range(len(blocks("python", "runnable"))))
def test_readme_python_example_runs(index, example_models, capsys):
    code = blocks("python", "runnable")[index]
    exec(compile(code, f"README.md runnable block {index}", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    assert "version 0.1.0" in printed  # the example prints its recipe text
    written = example_models.parent / "merged.safetensors"
    if "merged.safetensors" in code:
        assert written.is_file()


@pytest.mark.parametrize("command,flags", [
    ("merge", ["-o", "--models-dir", "--device", "--dtype", "--overwrite"]),
    ("info", []),
    ("methods", []),
])
def test_readme_cli_usage_matches_the_command_line(command, flags, capsys):
    """In this process: tests/cli/test_cli.py starts ``python -m lib_mecha`` itself once."""
    from lib_mecha.cli import main
    assert f"python -m lib_mecha {command}" in README.read_text(encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    shown = capsys.readouterr().out
    for flag in flags:
        assert flag in shown, f"`{command} --help` does not mention {flag}"
