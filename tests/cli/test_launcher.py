"""tools/mecha: the command line from any folder, through a link too, with the right Python."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lib_mecha as mecha

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "tools" / "mecha"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash not found")


def launch(*args, cwd, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHON", "VENVS")}
    environ.update(env)
    return subprocess.run([BASH, str(args[0]), *map(str, args[1:])], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_a_merge_from_another_folder_with_paths_relative_to_it(tmp_path):
    work = tmp_path / "elsewhere"
    (work / "models").mkdir(parents=True)
    for seed, name in enumerate("ab"):
        save_file({"w": torch.full((3,), float(seed))}, str(work / "models" / f"{name}.safetensors"))
    (work / "r.mecha").write_text(mecha.serialize(mecha.weighted_sum(mecha.model("a"), mecha.model("b"),
                                                                     alpha=0.25)))
    link = tmp_path / "bin" / "mecha"
    link.parent.mkdir()
    link.symlink_to(LAUNCHER)
    run = launch(link, "merge", "r.mecha", "-o", "out.safetensors", "--models-dir", "models", "--dtype", "fp32",
                 "--no-hash", cwd=work, PYTHON=sys.executable)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("wrote out.safetensors")
    assert load_file(str(work / "out.safetensors"))["w"].tolist() == [0.25] * 3


def fake_python(path: Path, has_torch: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/usr/bin/env bash\n'
                    'if [ "$1" = -c ]; then exit ' + ("0" if has_torch else "1") + '; fi\n'
                    f'echo "$0 $* PYTHONPATH=$PYTHONPATH" >> "{path.parent}/calls.log"\n')
    path.chmod(0o755)
    return path


def test_the_projects_venv_comes_first_then_python3(tmp_path):
    venvs = tmp_path / "venvs"
    forge = fake_python(venvs / "forge" / "bin" / "python")
    run = launch(LAUNCHER, "info", "m.safetensors", cwd=tmp_path, VENVS=str(venvs))
    assert run.returncode == 0, run.stderr
    assert (forge.parent / "calls.log").read_text() == f"{forge} -m lib_mecha info m.safetensors PYTHONPATH={ROOT}\n"
    a1111 = fake_python(venvs / "a1111" / "bin" / "python")
    launch(LAUNCHER, "methods", cwd=tmp_path, VENVS=str(venvs))
    assert (a1111.parent / "calls.log").read_text().startswith(f"{a1111} -m lib_mecha methods ")
    on_path = fake_python(tmp_path / "path" / "python3")
    launch(LAUNCHER, "methods", cwd=tmp_path, VENVS=str(tmp_path / "none"),
           PATH=f"{on_path.parent}{os.pathsep}{os.environ['PATH']}")
    assert (on_path.parent / "calls.log").read_text().startswith(f"{on_path} -m lib_mecha methods ")


def test_a_python_without_torch_is_named_in_one_line(tmp_path):
    python = fake_python(tmp_path / "py" / "python", has_torch=False)
    run = launch(LAUNCHER, "methods", cwd=tmp_path, PYTHON=str(python))
    assert run.returncode == 1 and run.stderr.count("\n") == 1
    assert run.stderr.startswith(f"error: {python} has no torch: run 'bash tools/demo' once")
