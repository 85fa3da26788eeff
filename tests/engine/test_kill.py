"""A merge to a file killed (SIGKILL) at 100 random moments: the target is then absent or complete,
byte for byte, never partial; what the killed merges left is removed by the next merge into the
folder. The merges run in children forked from one helper process (tests/engine/kill_runner.py),
so a trial costs the merge's own time, not a Python start-up."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

TRIALS = 100
RUNNER = Path(__file__).with_name("kill_runner.py")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kills need fork (POSIX); CI runs them on Linux")
def test_a_killed_merge_leaves_the_target_absent_or_complete_and_the_next_merge_cleans_up(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for seed, name in enumerate("ab"):
        g = torch.Generator().manual_seed(seed)
        save_file({f"layer{i}.weight": torch.randn(256, 512, generator=g) for i in range(12)},
                  str(models / f"{name}.safetensors"))
    out = tmp_path / "out"
    out.mkdir()
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, str(RUNNER), str(models), str(out), str(TRIALS), "16"],
                         capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    trials, final = lines[:-1], lines[-1]
    assert len(trials) == TRIALS
    assert [t for t in trials if t["state"] == "partial"] == []
    assert all(t["state"] == "complete" for t in trials if t["trial"] % 2)  # an old output stays whole
    states = Counter((t["trial"] % 2, t["state"]) for t in trials)
    # the kills land before, during and after the merges: some targets absent, some complete,
    # and some merges leave temp files for the next one to remove
    assert states[(0, "absent")] and states[(0, "complete")], states
    assert sum(1 for t in trials if t["temps"]) >= 5, trials
    assert final["complete"] and final["temps"] == []
