"""The README's promises: its runnable Python examples run, and its commands exist.

Fenced blocks opened with ```` ```python runnable ```` are executed in a temporary folder that
holds ``models/a|b|c.safetensors``: tiny SD1 models with the real key names.
"""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)



def _engine_missing() -> str:
    """Why the examples cannot run yet ("" once ``lib_mecha.merge`` is importable)."""
    try:
        import lib_mecha

        lib_mecha.merge  # noqa: B018
    except (ImportError, AttributeError) as e:  # the engine is still being written
        return f"lib_mecha.merge not available yet: {type(e).__name__}: {e}"
    return ""


ENGINE_MISSING = _engine_missing()
needs_engine = pytest.mark.skipif(bool(ENGINE_MISSING), reason=ENGINE_MISSING)
CLI_MISSING = not (ROOT / "lib_mecha" / "__main__.py").is_file()
needs_cli = pytest.mark.skipif(CLI_MISSING, reason="command line not written yet (lib_mecha/__main__.py)")


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


@needs_engine
@pytest.mark.parametrize("index", range(len(blocks("python", "runnable"))))
def test_readme_python_example_runs(index, example_models, capsys):
    code = blocks("python", "runnable")[index]
    exec(compile(code, f"README.md runnable block {index}", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    assert "version 0.1.0" in printed  # the example prints its recipe text
    written = example_models.parent / "merged.safetensors"
    if "merged.safetensors" in code:
        assert written.is_file()


@needs_cli
@pytest.mark.parametrize("command,flags", [
    ("merge", ["-o", "--models-dir", "--device", "--dtype", "--overwrite"]),
    ("info", []),
    ("methods", []),
])
def test_readme_cli_usage_matches_the_command_line(command, flags):
    assert f"python -m lib_mecha {command}" in README.read_text(encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "lib_mecha", command, "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for flag in flags:
        assert flag in run.stdout, f"`{command} --help` does not mention {flag}"
