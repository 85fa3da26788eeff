"""Merges to one file and kills them (SIGKILL) at random moments; run by test_kill_and_fuzz.py.

    python kill_runner.py MODELS_DIR OUT_DIR TRIALS SEED

Each merge runs in a child forked from this process, which has imported torch but never run it
(a fork after torch's threads have started is not safe). Prints one JSON line per trial: the
delay of the kill, whether the merge had already finished, what the target then is (absent,
complete: byte for byte the reference merge, or partial) and how many of our temp files the
folder holds. The target is absent before the even trials (merged without overwrite) and
complete before the odd ones (merged with overwrite).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

import lib_mecha as mecha
from lib_mecha.arch import base as arch_base


def merge_in_child(models: Path, out: Path, overwrite: bool) -> int:
    pid = os.fork()
    if pid == 0:  # the child: merge, and never return into the caller's code
        code = 1
        try:
            recipe = mecha.weighted_sum(mecha.model("a"), mecha.model("b"), alpha=0.3)
            mecha.merge(recipe, out, model_dirs=[str(models)], overwrite=overwrite, hash_inputs=False, threads=2)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def finished_merge(models: Path, out: Path, overwrite: bool) -> float:
    started = time.perf_counter()
    _, status = os.waitpid(merge_in_child(models, out, overwrite), 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"a merge that was not killed failed ({status})"
    return time.perf_counter() - started


def temp_files(folder: Path):
    return [p.name for p in folder.iterdir() if ".mecha-tmp-" in p.name]


def main(models: Path, folder: Path, trials: int, seed: int) -> None:
    for ident in arch_base.architecture_ids():  # build the key tables once, here (pure Python)
        arch_base.resolve_architecture(ident)
    reference = folder / "reference" / "out.safetensors"
    reference.parent.mkdir()
    duration = max(finished_merge(models, reference, True) for _ in range(2))
    expected = reference.read_bytes()
    out = folder / "out.safetensors"
    rng = random.Random(seed)
    for trial in range(trials):
        overwrite = trial % 2 == 1
        if overwrite:
            shutil.copyfile(reference, out)
        elif out.exists():
            out.unlink()
        delay = rng.uniform(0.0, 1.2 * duration)
        pid = merge_in_child(models, out, overwrite)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        state = "absent" if not out.exists() else "complete" if out.read_bytes() == expected else "partial"
        print(json.dumps({"trial": trial, "delay": round(delay, 4), "killed": os.WIFSIGNALED(status),
                          "state": state, "temps": len(temp_files(folder))}), flush=True)
    finished_merge(models, out, True)  # the next merge into the folder
    print(json.dumps({"final": True, "duration": duration, "complete": out.read_bytes() == expected,
                      "temps": temp_files(folder)}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
