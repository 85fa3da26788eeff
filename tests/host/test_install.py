"""install.py: checks the host's packages, installs and pins nothing, one line on problems."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from host_stub import ROOT, STUB


def load_install():
    spec = importlib.util.spec_from_file_location("install.py", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_like_the_host_runs_it_silent_and_without_pip(tmp_path):
    log = tmp_path / "pip.log"
    env = dict(os.environ, PYTHONPATH=str(STUB), STUB_PIP_LOG=str(log))
    for _ in range(2):                                   # every WebUI start: idempotent
        done = subprocess.run([sys.executable, str(ROOT / "install.py")], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0
        assert done.stdout == "" and done.stderr == ""
    assert not log.exists()


def test_problems_are_one_line_naming_each_package():
    install = load_install()
    versions = {"torch": "2.0.1+cu118", "gradio": None, "safetensors": "0.4.2"}
    found = install.problems(versions.get, python=(3, 11))
    assert found == ["torch 2.0.1+cu118 is too old (needs 2.1+ for lib_mecha's merge engine)",
                     "gradio is not installed (needs 3.41+ for the Mecha tab)"]
    assert install.problems({"torch": "2.3.1", "gradio": "4.40.0", "safetensors": "0.4.2"}.get, (3, 10)) == []
    assert install.problems({"torch": "2.3.1", "gradio": "4.40.0", "safetensors": "0.4.2"}.get, (3, 9))


def test_main_prints_a_single_line(capsys, monkeypatch):
    install = load_install()
    monkeypatch.setattr(install, "problems", lambda: ["a is missing", "b is too old"])
    assert install.main() == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "a is missing; b is too old" in out


def test_version_tuple():
    install = load_install()
    assert install.version_tuple("2.13.0+cpu") == (2, 13, 0)
    assert install.version_tuple("4.40.0") == (4, 40, 0)
    assert install.version_tuple("2.1.0a0") == (2, 1)
