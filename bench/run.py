"""Time lib_mecha merges of SD1.5-sized models against the IO floor, and measure their memory.

    python bench/make_models.py --out /tmp/mecha-bench --count 8
    python bench/run.py --models /tmp/mecha-bench [--cases ws,ad,nav8] [--sd-mecha] [--json FILE]

Each case runs ``python -m lib_mecha merge`` in a fresh process. The parent polls that process's
/proc/PID/status every ~10 ms and keeps the largest RssAnon (private, anonymous memory: what the
merge itself allocates, page cache and mapped files excluded); VmHWM (peak resident set) and the
kernel's ru_maxrss are reported beside it.

The IO floor of a case is measured in the same run: every input read once with plain reads into
one reusable buffer, then an output of the merged file's size written (and fsync'ed, as the merge
writer does) into the same output folder. It is measured just before and just after the merge, and
the faster of the two is used. Inputs are read once, untimed, before each case, so the merge and
its floor both start from a warm page cache.

Targets (issue 2, 2-core machine): wall time at most 1.5x the IO floor, peak private memory at
most 512 MB. Process start-up (interpreter + torch import) is measured separately and reported,
with the ratio both including and excluding it.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUFFER = 64 << 20
POLL_S = 0.01
TARGET_RATIO = 1.5
TARGET_PRIVATE_MB = 512
CASES = {  # name -> (label, number of inputs)
    "ws": ("weighted_sum of 2", 2),
    "ad": ("add_difference of 3", 3),
    "nav8": ("n_average of 8", 8),
}


def recipe_text(case: str, names):
    import lib_mecha as mecha

    models = [mecha.model(n) for n in names]
    if case == "ws":
        recipe = mecha.weighted_sum(models[0], models[1], alpha=0.5)
    elif case == "ad":
        recipe = mecha.add_difference(models[0], models[1], models[2], alpha=1.0)
    else:
        recipe = mecha.n_average(*models)
    return mecha.serialize(recipe)


# --- measurement --------------------------------------------------------------------------------

def proc_status(pid: int):
    """(RssAnon, VmHWM) in bytes, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("RssAnon", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values.get("RssAnon", 0), values.get("VmHWM", 0)


def run_measured(cmd, log_path: pathlib.Path, cwd=ROOT):
    """Run ``cmd``; returns wall time, peak RssAnon/VmHWM (polled), ru_maxrss, cpu times, minor page
    faults, exit code."""
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        peak_anon = peak_hwm = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                wall = time.perf_counter() - started
                break
            sample = proc_status(proc.pid)
            if sample:
                peak_anon, peak_hwm = max(peak_anon, sample[0]), max(peak_hwm, sample[1])
            time.sleep(POLL_S)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_s": wall, "exit_code": proc.returncode,
        "peak_rss_anon_mb": peak_anon / 2**20, "vm_hwm_mb": peak_hwm / 2**20,
        "ru_maxrss_mb": usage.ru_maxrss / 1024, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
        "minor_faults": usage.ru_minflt,
    }


def read_all(paths, buffer: bytearray) -> int:
    view = memoryview(buffer)
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while True:
                n = f.readinto(view)
                if not n:
                    break
                total += n
    return total


def io_floor(inputs, out_dir: pathlib.Path, out_size: int, buffer: bytearray):
    """Seconds to read every input once and to write (and fsync) ``out_size`` bytes into ``out_dir``."""
    started = time.perf_counter()
    read_all(inputs, buffer)
    read_s = time.perf_counter() - started
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".io-floor-")
    try:
        view = memoryview(buffer)
        started = time.perf_counter()
        left = out_size
        while left:
            left -= os.write(fd, view[: min(left, len(view))])
        os.fsync(fd)
        write_s = time.perf_counter() - started
    finally:
        os.close(fd)
        os.unlink(tmp)
    return {"read_s": read_s, "write_s": write_s, "io_floor_s": read_s + write_s}


def _expected_output_size(path: pathlib.Path) -> int:
    """An fp16 merge of SD1.5 fp16 inputs is about the size of one input."""
    return path.stat().st_size


def startup_seconds(python: str) -> float:
    """Wall time of a process that only imports lib_mecha (and so torch): the fixed cost of every case."""
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        subprocess.run([python, "-c", "import lib_mecha, torch"], cwd=ROOT, check=True)
        best = min(best, time.perf_counter() - started)
    return best


# --- cases --------------------------------------------------------------------------------------

def sd_mecha_command(python: str, inputs, output: pathlib.Path):
    code = ("import sys, sd_mecha\n"
            "a, b, out = sys.argv[1:4]\n"
            "sd_mecha.merge(sd_mecha.weighted_sum(sd_mecha.model(a), sd_mecha.model(b), alpha=0.5), output=out)\n")
    return [python, "-c", code, str(inputs[0]), str(inputs[1]), str(output)]


def run_case(case, models_dir, out_dir, python, cli_args, buffer, startup_s, keep, repeat=1):
    label, count = CASES.get(case, ("sd-mecha 1.1.8 weighted_sum of 2", 2))
    names = [f"sd15_{i:02d}" for i in range(count)]
    inputs = [models_dir / f"{n}.safetensors" for n in names]
    missing = [str(p) for p in inputs if not p.is_file()]
    if missing:
        raise SystemExit(f"error: {missing[0]} is missing: run bench/make_models.py --out {models_dir} "
                         f"--count {count}")
    output = out_dir / f"bench-{case}.safetensors"
    if output.exists():
        output.unlink()
    if case == "sd-mecha":
        cmd = sd_mecha_command(python, inputs, output)
    else:
        recipe = out_dir / f"bench-{case}.mecha"
        recipe.write_text(recipe_text(case, names), encoding="utf-8")
        cmd = [python, "-m", "lib_mecha", "merge", str(recipe), "-o", str(output), "--models-dir",
               str(models_dir), "--quiet", *cli_args]

    read_all(inputs, buffer)  # warm the page cache, untimed
    out_size = _expected_output_size(inputs[0])
    load = os.getloadavg()[0]
    print(f"\n== {label}: {shlex.join(cmd) if case != 'sd-mecha' else 'sd_mecha.merge(weighted_sum(a, b))'}",
          flush=True)
    # The floor is noisy (writeback of earlier files, page-cache reclaim: its write half alone has
    # varied 1.9-6.8 s for the same 2.1 GB): it is measured before every merge and after the last,
    # and each figure is the median of its runs.
    floors = [io_floor(inputs, out_dir, out_size, buffer)]
    merges = []
    for _ in range(max(1, repeat)):
        if output.exists():
            output.unlink()
        merge = run_measured(cmd, out_dir / f"bench-{case}.log")
        if merge["exit_code"] != 0 or not output.is_file():
            print((out_dir / f"bench-{case}.log").read_text(errors="replace")[-3000:], file=sys.stderr)
            raise SystemExit(f"error: case {case} failed (exit {merge['exit_code']})")
        merges.append(merge)
        floors.append(io_floor(inputs, out_dir, output.stat().st_size, buffer))
    row = {"case": case, "label": label, "inputs": count, "load_1min": load, "command": cmd,
           "runs": merges, "io_floor_runs": floors}
    row.update(_median_run(merges, "wall_s"))
    row["peak_rss_anon_mb"] = max(m["peak_rss_anon_mb"] for m in merges)
    row["vm_hwm_mb"] = max(m["vm_hwm_mb"] for m in merges)
    row["output_bytes"] = output.stat().st_size
    row.update(_median_run(floors, "io_floor_s"))
    row["startup_s"] = startup_s
    row["ratio"] = row["wall_s"] / row["io_floor_s"]
    row["ratio_without_startup"] = max(0.0, row["wall_s"] - startup_s) / row["io_floor_s"]
    row["meets_time_target"] = row["ratio"] <= TARGET_RATIO
    row["meets_memory_target"] = row["peak_rss_anon_mb"] <= TARGET_PRIVATE_MB
    if not keep:
        output.unlink()
    runs = ", ".join(f"{m['wall_s']:.1f}" for m in merges)
    floor_runs = ", ".join(f"{f['io_floor_s']:.1f}" for f in floors)
    print(f"   wall {row['wall_s']:.1f} s (runs {runs}), IO floor {row['io_floor_s']:.1f} s (runs {floor_runs}; "
          f"read {row['read_s']:.1f} + write {row['write_s']:.1f}), ratio {row['ratio']:.2f}, "
          f"peak RssAnon {row['peak_rss_anon_mb']:.0f} MB", flush=True)
    return row


def _median_run(runs, key):
    """The run whose ``key`` is the median (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r[key])
    return dict(ordered[(len(ordered) - 1) // 2])


def table(rows) -> str:
    head = ("case", "wall s", "IO floor s", "ratio", "ratio-startup", "RssAnon MB", "VmHWM MB", "cpu s", "load")
    lines = [head]
    for r in rows:
        lines.append((r["label"], f"{r['wall_s']:.1f}", f"{r['io_floor_s']:.1f}", f"{r['ratio']:.2f}",
                      f"{r['ratio_without_startup']:.2f}", f"{r['peak_rss_anon_mb']:.0f}", f"{r['vm_hwm_mb']:.0f}",
                      f"{r['user_s'] + r['sys_s']:.1f}", f"{r['load_1min']:.1f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=pathlib.Path, required=True, help="folder written by bench/make_models.py")
    parser.add_argument("--out", type=pathlib.Path, help="output folder (default: MODELS/out)")
    parser.add_argument("--cases", default="ws,ad,nav8", help="comma-separated: ws, ad, nav8 (default all)")
    parser.add_argument("--sd-mecha", action="store_true", help="add a baseline row: sd-mecha's weighted_sum of 2")
    parser.add_argument("--cli-args", default="", help="extra flags for `python -m lib_mecha merge`")
    parser.add_argument("--json", type=pathlib.Path, help="results file (default: OUT/bench-results.json)")
    parser.add_argument("--keep", action="store_true", help="keep the merged outputs")
    parser.add_argument("--repeat", type=int, default=3,
                        help="merges per case; wall time and IO floor are the medians of their runs (default 3)")
    args = parser.parse_args(argv)

    models_dir = args.models.resolve()
    out_dir = (args.out or models_dir / "out").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case {sorted(unknown)[0]!r}; choose from {', '.join(CASES)}")
    if args.sd_mecha:
        cases.append("sd-mecha")

    python = sys.executable
    buffer = bytearray(BUFFER)
    startup_s = startup_seconds(python)
    print(f"start-up (python + import lib_mecha, torch): {startup_s:.1f} s", flush=True)
    rows = [run_case(c, models_dir, out_dir, python, shlex.split(args.cli_args), buffer, startup_s, args.keep,
                     args.repeat) for c in cases]

    print("\n" + table(rows))
    print(f"\ntargets: ratio <= {TARGET_RATIO} x IO floor, peak RssAnon <= {TARGET_PRIVATE_MB} MB")
    result = {
        "argv": [sys.executable, *sys.argv], "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "mem_total_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9},
        "git": _git_head(), "startup_s": startup_s, "rows": rows,
        "targets": {"ratio": TARGET_RATIO, "peak_rss_anon_mb": TARGET_PRIVATE_MB},
    }
    json_path = args.json or out_dir / "bench-results.json"
    json_path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"results: {json_path}")
    return 0


def _git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
