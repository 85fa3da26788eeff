"""bench/device_check.py keeps working: run on the CPU with tiny inputs, its table has every row.

The GPU run itself (the numbers) is for a machine with a GPU; see bench/README.md.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lib_mecha.methods as methods

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("weighted_sum", "add_difference", "TIES", "DARE", "DELLA")


def test_the_device_check_prints_one_table_with_every_row(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MECHA_STRICT_MEMORY"}  # as a user runs it
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "device_check.py"), "--device", "cpu", "--small",
                           "--work", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("device: cpu (cpu), torch ") and lines[0].endswith("small inputs")
    assert lines[1].split() == ["check", "case", "seconds", "IO", "floor", "s", "ratio", "peak", "VRAM", "MiB",
                                "sd-mecha", "s", "result"]
    rows = [line.split() for line in lines[2:]]
    agree = {r[1]: r for r in rows if r[0] == "agree"}
    catalogue = {name for name, spec in methods.all_methods().items() if spec.route is None}
    assert set(agree) == catalogue
    assert all(r[-1] == "ok" and r[-2] == "0.0e+00" for r in agree.values())  # the CPU against itself
    timed = [r for r in rows if r[0] == "time"]
    assert [r[1:3] for r in timed] == [[name, arch] for arch in ("SD1.5", "SDXL") for name in RECIPES]
    for r in timed:
        seconds, floor, ratio = (float(x) for x in r[3:6])
        assert seconds > 0 and floor >= 0 and ratio > 0 and r[6:] == ["-", "-"]  # no VRAM, no --sd-mecha
    fallback = [r for r in rows if r[0] == "fallback"]
    assert [" ".join(r[1:4]) for r in fallback] == ["VRAM budget 1", "out of memory"]
    assert all(line.endswith("- (no VRAM on the CPU)") for line in lines if line.startswith("fallback"))
    assert not list(tmp_path.iterdir())  # the generated inputs are gone
