"""The project's own tooling: tools/test's verdicts, the venv stamp, markers and lint.

tools/test is exercised against fake venvs whose ``bin/python`` is a shell script, so these
tests neither build venvs nor run a nested pytest.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash not found")

FAKE_PYTHON = """#!/usr/bin/env bash
here=$(cd "$(dirname "$0")/.." && pwd)
echo "$*${LIB_MECHA_PORTABLE_IO:+ [portable io]}" >> "$here/calls.log"
case "$1" in
  --version) echo "Python 3.0.fake" ;;
  -c) case "$2" in *gradio*) echo "gradio 0.fake, torch 0.fake" ;; esac ;;
  -m) if [ "$2" = pytest ]; then cat "$here/pytest.out"; exit "$(cat "$here/pytest.rc")"; fi ;;
esac
exit 0
"""


def fake_venv(venvs: pathlib.Path, name: str, rc: int = 0, output: str = "1 passed in 0.01s") -> pathlib.Path:
    v = venvs / name
    (v / "bin").mkdir(parents=True)
    python = v / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    (v / "pytest.out").write_text(output + "\n")
    (v / "pytest.rc").write_text(str(rc))
    return v


def run_tools_test(venvs: pathlib.Path, names: str, *pytest_args: str):
    env = {k: v for k, v in os.environ.items() if k not in ("MECHA_PORTABLE_VENV", "LIB_MECHA_PORTABLE_IO")}
    env.update(VENVS=str(venvs), MECHA_VENV_NAMES=names, MECHA_SKIP_SETUP="1")
    return subprocess.run([BASH, str(ROOT / "tools" / "test"), *pytest_args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def summary_lines(stdout: str):
    return [line for line in stdout.splitlines() if re.match(r"^\[[\w -]+\] ", line)]


def test_both_pass_gives_exit_0_and_one_summary_line_each(tmp_path):
    fake_venv(tmp_path, "one", output="3 passed, 1 skipped in 0.50s")
    fake_venv(tmp_path, "two", output="=== 2 passed in 0.20s ===")
    run = run_tools_test(tmp_path, "one two", "-k", "something")
    assert run.returncode == 0, run.stdout + run.stderr
    # The wall-clock seconds depend on the machine's load; everything else is exact.
    lines = [re.sub(r"\((\d+)s; ", "(Ns; ", line) for line in summary_lines(run.stdout)]
    assert lines == [
        "[one] PASSED: 3 passed, 1 skipped in 0.50s (Ns; gradio 0.fake, torch 0.fake)",
        "[two] PASSED: 2 passed in 0.20s (Ns; gradio 0.fake, torch 0.fake)",
    ]
    assert "-m pytest -ra -k something" in (tmp_path / "one" / "calls.log").read_text()


def test_a_whole_run_checks_the_engine_and_io_again_on_the_windows_paths_in_the_last_venv(tmp_path):
    fake_venv(tmp_path, "one", output="3 passed in 0.50s")
    fake_venv(tmp_path, "two", output="2 passed in 0.20s")
    run = run_tools_test(tmp_path, "one two", "-q", "--durations=5")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [re.sub(r"\((\d+)s; ", "(Ns; ", line) for line in summary_lines(run.stdout)]
    assert lines[2] == "[two portable-io] PASSED: 2 passed in 0.20s (Ns; gradio 0.fake, torch 0.fake)"
    assert run.stdout.rstrip().endswith("total: 7 passed, 0 failed, 0 skipped")
    calls = (tmp_path / "two" / "calls.log").read_text().splitlines()
    assert "-m pytest -ra -q --durations=5 tests/engine tests/io [portable io]" in calls
    assert "[portable io]" not in (tmp_path / "one" / "calls.log").read_text()
    # a run of chosen tests does not add it
    fake_venv(tmp_path / "chosen", "one")
    fake_venv(tmp_path / "chosen", "two")
    run = run_tools_test(tmp_path / "chosen", "one two", "tests/test_tooling.py", "-q")
    assert len(summary_lines(run.stdout)) == 2


def test_first_failure_still_runs_the_second_and_fails_overall(tmp_path):
    fake_venv(tmp_path, "one", rc=1, output="1 failed, 2 passed in 0.30s")
    fake_venv(tmp_path, "two")
    run = run_tools_test(tmp_path, "one two")
    assert run.returncode == 1
    lines = summary_lines(run.stdout)
    assert lines[0].startswith("[one] FAILED (pytest exit 1): 1 failed, 2 passed")
    assert lines[1].startswith("[two] PASSED")


@pytest.mark.parametrize("rc,output,verdict", [
    (5, "no tests ran in 0.01s", "FAILED: no tests collected (pytest exit 5)"),
    (0, "4 skipped in 0.01s", "FAILED: no test passed"),
])
def test_a_run_that_tests_nothing_is_a_failure(tmp_path, rc, output, verdict):
    fake_venv(tmp_path, "one")
    fake_venv(tmp_path, "two", rc=rc, output=output)
    run = run_tools_test(tmp_path, "one two")
    assert run.returncode == 1
    assert summary_lines(run.stdout)[1].startswith(f"[two] {verdict}")


def setup_sh(venvs: pathlib.Path, script: str):
    env = dict(os.environ, VENVS=str(venvs), PYTHON=str(venvs / "a1111" / "bin" / "python"))
    return subprocess.run([BASH, "-c", f'source "{ROOT}/tools/_setup.sh"; {script}'], env=env,
                          capture_output=True, text=True, timeout=60)


def test_venv_stamp_skips_pip_when_unchanged_and_refreshes_in_place_when_stale(tmp_path):
    v = fake_venv(tmp_path, "a1111")
    stamp = setup_sh(tmp_path, "venv_stamp a1111").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{16}", stamp)

    (v / ".mecha-stamp").write_text("stale\n")
    run = setup_sh(tmp_path, "ensure_venv a1111")
    assert run.returncode == 0, run.stderr
    calls = (v / "calls.log").read_text()
    assert "-m pip install -r" in calls and "ci-a1111.txt" in calls and "oracles.txt" in calls
    assert "-m pip check" in calls
    assert (v / ".mecha-stamp").read_text().strip() == stamp
    assert (v / "bin" / "python").is_file()  # refreshed in place, not rebuilt

    (v / "calls.log").unlink()
    run = setup_sh(tmp_path, "ensure_venv a1111")
    assert run.returncode == 0 and "up to date" in run.stdout
    assert "pip" not in (v / "calls.log").read_text()


def test_a_stack_s_own_oracles_go_into_its_venv_only(tmp_path):
    for name in ("a1111", "forge"):
        v = fake_venv(tmp_path, name)
        run = setup_sh(tmp_path, f"ensure_venv {name}")
        assert run.returncode == 0, run.stderr
        calls = (v / "calls.log").read_text()
        assert ("oracles-forge.txt" in calls) == (name == "forge")
    req = tmp_path / "req"
    req.mkdir()
    for f in (ROOT / "requirements").glob("*.txt"):
        if f.name != "oracles-forge.txt":
            shutil.copy(f, req / f.name)
    stamps = setup_sh(tmp_path, f"venv_stamp forge; REQ={req}; venv_stamp forge").stdout.split()
    assert stamps[0] != stamps[1]  # the stack's oracles are part of its venv's identity


def test_a_failed_pip_install_leaves_the_stamp_stale(tmp_path):
    v = fake_venv(tmp_path, "a1111")
    python = v / "bin" / "python"
    python.write_text(python.read_text().replace('case "$1" in', 'case "$1" in\n  -m) [ "$2" = pip ] && exit 1 ;;'))
    run = setup_sh(tmp_path, "ensure_venv a1111")
    assert run.returncode != 0
    assert not (v / ".mecha-stamp").exists()


def test_every_marker_used_in_tests_is_registered():
    ini = (ROOT / "pytest.ini").read_text()
    registered = set(re.findall(r"^\s+(\w+):", ini, re.M))
    builtin = {"skip", "skipif", "xfail", "parametrize", "usefixtures", "filterwarnings", "timeout"}
    used = set()
    for path in (ROOT / "tests").rglob("*.py"):
        used |= set(re.findall(r"pytest\.mark\.(\w+)", path.read_text(encoding="utf-8")))
    assert used - builtin <= registered, f"register these markers in pytest.ini: {sorted(used - builtin - registered)}"


def _ruff():
    local = pathlib.Path(sys.executable).with_name("ruff")
    return str(local) if local.is_file() else shutil.which("ruff")


@pytest.mark.skipif(_ruff() is None, reason="ruff not installed in this venv (requirements/ci-*.txt pins it)")
def test_ruff_finds_no_problem_in_the_repository():
    run = subprocess.run([_ruff(), "check", "--no-cache", "--output-format", "concise", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_requirements_ask_only_for_what_a_public_index_serves():
    """A local version (``torch==2.13.0+cpu``) exists on no public index: set-up failed elsewhere."""
    pins = {}
    for path in (ROOT / "requirements").glob("*.txt"):
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins.setdefault(name.strip().lower(), set()).add(version.strip())
    assert not {name: v for name, v in pins.items() if any("+" in x for x in v)}
    assert pins["torch"] == {"2.13.0"} and pins["numpy"] == {"1.26.2"}


def test_the_set_up_says_which_torch_it_installed_and_from_where(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/usr/bin/env bash\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    from importlib.metadata import requires, version
    build = "CUDA build (with nvidia-* packages)" if any(
        r.startswith("nvidia-") for r in requires("torch") or []) else "CPU build"
    describe = f'source "{ROOT}/tools/_setup.sh"; describe_torch "{venv}"'
    run = subprocess.run([BASH, "-c", describe], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == f"torch {version('torch')}, {build}, already installed"
    wheel = "file:///wheels/torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    report = {"install": [{"metadata": {"name": "numpy"}, "download_info": {"url": "https://x/numpy.whl"}},
                          {"metadata": {"name": "torch"}, "download_info": {"url": wheel}}]}
    (venv / ".mecha-pip-report-stack.json").write_text(json.dumps(report))
    run = subprocess.run([BASH, "-c", describe], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == f"torch {version('torch')}, {build}, from {wheel}"
