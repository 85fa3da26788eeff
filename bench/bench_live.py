"""Live merging: a full hot-load against a re-merge after one block slider, SD1.5 and SDXL shapes.

    python bench/bench_live.py [--models /tmp/mecha-bench-live] [--arch sd1-ldm sdxl-sgm] [--old-path]

For each architecture, two random fp16 checkpoints of its real key table are written once (no
EMA, no scheduler buffers; SD1.5 2.1 GB, SDXL 6.9 GB each). Then, in a fresh process per
architecture, model A is loaded into a stand-in running model (a torch module whose parameters
carry the checkpoint's names, fp16 like a Forge fp16 or A1111 half model) and lib_mecha.live
streams into it, with the hot-load options of the WebUI tab (2 threads, 256 MiB budget):

* full: weighted_sum(A, B) with per-block alphas, every key merged and written;
* one block: the same recipe with one block's alpha moved (IN04), a re-merge of what changed;
* unchanged: the same recipe again;
* restore: the original's merged keys streamed back from A's file.

Each step reports wall time, keys merged, and the process's peak resident memory above its level
before the step (VmRSS sampled every 10 ms, lib_mecha.live.PeakMemory). ``--old-path`` adds
what a hot-load cost before: the whole merge as a state dict, then copied into the model.
``--cycles N`` then runs N hot-load/restore cycles (and N of the old path) and prints the resident
memory after each, and after glibc's ``malloc_trim`` at the end.
Results are printed as a table and written to MODELS/bench-live.json.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from lib_mecha.arch import resolve_architecture  # noqa: E402

LAYOUTS = {"sd1-ldm": "sd1-supermerger_blocks", "sdxl-sgm": "sdxl-supermerger_blocks"}
SKIPPED_COMPONENTS = ("ema", "scheduler")


def entries(arch_id: str):
    arch = resolve_architecture(arch_id)
    return [(k, torch.float16 if s.dtype.is_floating_point else s.dtype, tuple(s.shape))
            for k, s in arch.keys.items() if s.component not in SKIPPED_COMPONENTS]


def make_models(folder: pathlib.Path, arch_id: str):
    sys.path.insert(0, str(ROOT / "bench"))
    from make_models import file_size, write_model
    table = entries(arch_id)
    paths = []
    for i, name in enumerate("ab"):
        path = folder / f"{arch_id}_{name}.safetensors"
        if not (path.is_file() and path.stat().st_size == file_size(table)):
            started = time.perf_counter()
            write_model(path, table, i)
            print(f"  wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s",
                  flush=True)
        paths.append(path)
    return paths


def run_case(folder: pathlib.Path, arch_id: str, old_path: bool, cycles: int = 0) -> dict:
    """One architecture, in this process (the parent starts a fresh one per architecture)."""
    import lib_mecha
    from lib_mecha.host.base import MergeIdentity
    from lib_mecha.io import open_model
    from lib_mecha.live import LiveState, LiveTarget, Original, PeakMemory, restore_keys, stream_merge
    from lib_mecha.live.module import ModuleModel
    sys.path.insert(0, str(ROOT / "tests" / "live"))
    from live_fixtures import Tree

    a, b = (folder / f"{arch_id}_{n}.safetensors" for n in "ab")
    with open_model(a) as f:
        module = Tree({k: f.read(k) for k in f.tensors}, torch.float16)
    target = LiveTarget(ModuleModel(module, a.name))
    state = LiveState()
    state.attach(module, Original.of(a, a.name))
    options = lib_mecha.MergeOptions(model_dirs=(str(folder),), threads=2, memory_budget_mb=256)

    def recipe(in04):
        alpha = lib_mecha.blocks(LAYOUTS[arch_id], {"IN04": in04}, default=0.4)
        return lib_mecha.weighted_sum(lib_mecha.model(a.name), lib_mecha.model(b.name), alpha=alpha)
    rows = []

    def step(label, fn):
        started = time.perf_counter()
        with PeakMemory() as peak:
            merged, total = fn()
        rows.append({"step": label, "seconds": round(time.perf_counter() - started, 2), "keys_merged": merged,
                     "keys_total": total, "peak_extra_mb": peak.extra_mb})
        print(f"  {arch_id} {label}: {rows[-1]}", flush=True)

    def live(in04):
        report = stream_merge(target, state, recipe(in04), options, MergeIdentity.from_recipe(str(in04)))
        return report.keys_merged, report.keys_total
    step("full hot-load", lambda: live(0.4))
    step("one block moved (IN04)", lambda: live(0.9))
    step("unchanged recipe", lambda: live(0.9))
    step("restore", lambda: (restore_keys(target, state, state.merged_keys()), len(state.fingerprints)))
    def whole_dict():
        """Before streaming: the whole merge as a state dict on the merge's threads, then copied."""
        sd = lib_mecha.merge(recipe(0.4), options=options).state_dict
        with torch.no_grad():
            for key, value in module.state_dict(keep_vars=True).items():
                if key in sd:
                    value.copy_(sd[key])
        state.fingerprints = dict.fromkeys(sd, "")
        return len(sd), len(sd)
    if old_path:
        step("old path: state dict, then copy", whole_dict)
        step("restore", lambda: (restore_keys(target, state, state.merged_keys()), len(state.fingerprints)))
    result = {"arch": arch_id, "model_gb": round(a.stat().st_size / 1e9, 2), "steps": rows,
              "largest_key_mb": round(max(math.prod(s) * 2 for _, _, s in entries(arch_id)) / 2**20, 1)}
    if cycles:
        result["cycles"] = {"streamed": _cycles(cycles, lambda i: live(0.3 + 0.02 * (i % 2)),
                                                lambda: restore_keys(target, state, state.merged_keys()))}
        if old_path:
            result["cycles"]["old path"] = _cycles(cycles, lambda i: whole_dict(), lambda: restore_keys(
                target, state, state.merged_keys()))
            result["cycles"]["old path, after malloc_trim"] = _resident_mb(trim=True)
        print(f"  {arch_id} cycles: {result['cycles']}", flush=True)
    return result


def _resident_mb(trim: bool = False):
    """The process's resident memory (VmRSS), after glibc's malloc_trim when asked."""
    from lib_mecha.live.memory import _proc_status_rss
    if trim:
        import ctypes
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            return None
    value = _proc_status_rss()
    return None if value is None else round(value / 2**20)


def _cycles(count: int, load, restore):
    """Resident memory after each hot-load/restore cycle."""
    levels = []
    for i in range(count):
        load(i)
        restore()
        levels.append(_resident_mb())
    return levels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("/tmp/mecha-bench-live"))
    parser.add_argument("--arch", nargs="+", default=["sd1-ldm", "sdxl-sgm"], choices=sorted(LAYOUTS))
    parser.add_argument("--old-path", action="store_true", help="also measure the whole-state-dict hot-load")
    parser.add_argument("--cycles", type=int, default=0,
                        help="then this many hot-load/restore cycles, printing resident memory after each")
    parser.add_argument("--case", help=argparse.SUPPRESS)   # internal: run one architecture in this process
    args = parser.parse_args(argv)
    folder = args.models.resolve()
    if args.case:
        print("RESULT " + json.dumps(run_case(folder, args.case, args.old_path, args.cycles)), flush=True)
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for arch_id in args.arch:
        make_models(folder, arch_id)
        cmd = [sys.executable, __file__, "--models", str(folder), "--case", arch_id, "--cycles", str(args.cycles)]
        cmd += ["--old-path"] * args.old_path
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        print(out, end="")
        results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    print("\n| model | step | seconds | keys merged | peak above start (MB) |\n|---|---|---|---|---|")
    for r in results:
        for s in r["steps"]:
            print(f"| {r['arch']} ({r['model_gb']} GB, largest key {r['largest_key_mb']} MB) | {s['step']} | "
                  f"{s['seconds']} | {s['keys_merged']} of {s['keys_total']} | {s['peak_extra_mb']} |")
    (folder / "bench-live.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
