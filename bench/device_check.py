"""Merging on a device (a GPU) checked against the CPU, and timed against the IO floor and sd-mecha.

    python bench/device_check.py --device cuda [--sd-mecha] [--work DIR]
    python bench/device_check.py --device cpu --small            # seconds; the tests run this

It generates its own inputs in ``--work`` (default: a temporary folder, removed at the end) and
prints one table:

* ``agree``: every method of the catalogue merged on a small SD1-keyed model on the CPU and on
  the device (seeded methods with a seed): the largest difference, and whether it is within
  the tolerance (1e-4 of the largest magnitude; fp32 output);
* ``time``: weighted_sum, add_difference, TIES, DARE and DELLA on SD1.5- and SDXL-shaped fp16
  checkpoints (three inputs: a base and two models), written to a file: the merge's seconds,
  the IO floor of the same run (every input read once plus an fsync'ed write of the output's
  size, as ``bench/run.py`` measures it) and their ratio, the peak VRAM
  (``torch.cuda.max_memory_allocated``), and with ``--sd-mecha`` sd-mecha's seconds inside
  ``sd_mecha.merge`` for the same recipe on the same device (its own process; "-" when
  sd_mecha cannot be imported, "skipped" when the time left is short);
* ``fallback``: the small model merged with a 1 MiB VRAM budget (the keys over it merge on the
  CPU), and weighted_sum of the SD1.5 inputs with this process's VRAM capped at 96 MiB
  (``torch.cuda.set_per_process_memory_fraction``: the keys that run out of memory merge again
  on the CPU); the keys that fell back, and the agreement with the CPU. On the CPU: "-".

``--small`` divides the shapes of the timing models by 64 and keeps every 10th key of them,
and every 40th of the agreement model, so that the whole check runs in seconds on a CPU.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

import lib_mecha as mecha  # noqa: E402
from lib_mecha import compose, methods  # noqa: E402
from lib_mecha.arch import resolve_architecture  # noqa: E402
from lib_mecha.engine import api  # noqa: E402
from lib_mecha.engine.placement import placement_for  # noqa: E402
from make_models import write_model  # noqa: E402
from run import io_floor  # noqa: E402

TOLERANCE = 1e-4                 # of the largest magnitude of the CPU's result
SEEDED = {"seed": 7}             # for every method with a nullable seed
PARAMS = {"truncate_rank": {"rank": 2}, "ties_sum_with_dropout": {"probability": 0.5},
          "dropout": {"probability": 0.5}}
SMALL_KEY_STEP = 40              # --small: every 40th key of the SD1 table in the agreement model
SMALL_DIVISOR = 64               # --small: shape divisor of the timing models...
SMALL_TIMING_STEP = 10           # ...and every 10th key of their tables
SD_MECHA_TIMEOUT_S = 120
OOM_CAP_MIB = 96
COLUMNS = ("check", "case", "seconds", "IO floor s", "ratio", "peak VRAM MiB", "sd-mecha s", "result")


class Row:
    def __init__(self, check, case, seconds=None, floor=None, vram=None, sd_mecha="-", result=""):
        self.cells = (check, case, _num(seconds), _num(floor),
                      _num(seconds / floor if seconds and floor else None, 2), _num(vram, 0), sd_mecha, result)


def _num(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: List[Row]) -> str:
    lines = [COLUMNS] + [r.cells for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


# --- inputs ---------------------------------------------------------------------------------------

def entries(arch_id: str, divisor: int = 1, step: int = 1):
    """(key, dtype, shape) of a pruned checkpoint of ``arch_id``: floats as fp16, shapes divided by
    ``divisor`` (dimensions of 16 or more), every ``step``-th key."""
    out = []
    for key, spec in resolve_architecture(arch_id).keys.items():
        if spec.optional or spec.component in ("ema", "scheduler"):
            continue
        shape = tuple(max(1, s // divisor) if s >= 16 else s for s in spec.shape)
        out.append((key, torch.float16 if spec.dtype.is_floating_point else spec.dtype, shape))
    return out[::step]


def write_models(folder: pathlib.Path, prefix: str, table_entries, device) -> List[pathlib.Path]:
    paths = [folder / f"{prefix}_{name}.safetensors" for name in ("base", "a", "b")]
    for i, path in enumerate(paths):
        write_model(path, table_entries, i, device)
    return paths


# --- agreement ------------------------------------------------------------------------------------

def catalogue_recipes(paths):
    """One recipe per method of the catalogue (conversions left out), on the three models."""
    nodes = [mecha.model(str(p), config="sd1-ldm") for p in paths]
    for name, spec in sorted(methods.all_methods().items()):
        if spec.route is not None:
            continue
        tensors = [p for p in spec.params if p.is_tensor]
        count = 3 if spec.variadic is not None else len(tensors)
        if any(p.space == "delta" for p in tensors):
            args = [methods.build("subtract", nodes[(i + 1) % 3], nodes[i % 3]) for i in range(count)]
        else:
            args = [nodes[i % 3] for i in range(count)]
        extra = dict(PARAMS.get(name, {}))
        if spec.fresh_seed or any(p.name == "seed" for p in spec.params):
            extra.update(SEEDED)
        yield name, methods.build(name, *args, **extra)


def compare(got, reference) -> tuple:
    """(largest difference, within tolerance) of two state dicts."""
    worst, ok = 0.0, True
    for key, ref in reference.items():
        if not ref.is_floating_point():
            ok = ok and torch.equal(got[key], ref)
            continue
        diff = float((got[key].float() - ref.float()).abs().max()) if ref.numel() else 0.0
        scale = max(float(ref.float().abs().max()) if ref.numel() else 0.0, 1.0)
        worst = max(worst, diff)
        ok = ok and (diff <= TOLERANCE * scale or (math.isnan(diff) and torch.equal(got[key].isnan(), ref.isnan())))
    return worst, ok


def agreement_rows(paths, device) -> List[Row]:
    rows = []
    for name, recipe in catalogue_recipes(paths):
        cpu = mecha.merge(recipe, device="cpu", output_dtype="fp32").state_dict
        started = time.perf_counter()
        got = mecha.merge(recipe, device=str(device), output_dtype="fp32").state_dict
        seconds = time.perf_counter() - started
        worst, ok = compare(got, cpu)
        rows.append(Row("agree", name, seconds, result=f"max|diff| {worst:.1e} {'ok' if ok else 'DIFFERS'}"))
    return rows


# --- timing ---------------------------------------------------------------------------------------

def timing_recipes(paths):
    base, a, b = (mecha.model(str(p)) for p in paths)
    return [
        ("weighted_sum", mecha.weighted_sum(a, b, alpha=0.5)),
        ("add_difference", compose.add_difference(a, b, base, alpha=1.0)),
        ("TIES", compose.add_difference_ties(base, a, b, k=0.2)),
        ("DARE", compose.add_ties_with_dare(base, a, b, probability=0.9, seed=42)),
        ("DELLA", compose.add_ties_with_dare(base, a, b, probability=0.9, della_eps=0.1, seed=42)),
    ]


def timed_merge(recipe, output: pathlib.Path, device, **options):
    """(seconds, peak VRAM MiB or None, the merge's result)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = mecha.merge(recipe, output, device=str(device), overwrite=True, hash_inputs=False, **options)
    seconds = time.perf_counter() - started
    return seconds, (torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None), result


SD_MECHA_CODE = """
import sys, time, sd_mecha
recipe = sd_mecha.deserialize(open(sys.argv[1], encoding="utf-8").read())
started = time.perf_counter()
sd_mecha.merge(recipe, output=sys.argv[2], merge_device=sys.argv[3], output_device="cpu")
print("SECONDS", time.perf_counter() - started)
"""


def sd_mecha_seconds(recipe, output: pathlib.Path, device, wanted: bool, time_left: float) -> str:
    """sd-mecha's seconds inside ``merge()`` for the same recipe, in a process of its own."""
    if not wanted:
        return "-"
    probe = subprocess.run([sys.executable, "-c", "import sd_mecha"], capture_output=True)
    if probe.returncode != 0:
        return "-"
    timeout = min(SD_MECHA_TIMEOUT_S, time_left)
    if timeout < 20:
        return "skipped"
    text = output.with_suffix(".mecha")
    text.write_text(mecha.serialize(recipe), encoding="utf-8")
    try:
        done = subprocess.run([sys.executable, "-c", SD_MECHA_CODE, str(text), str(output), str(device)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f">{timeout:.0f}"
    finally:
        output.unlink(missing_ok=True)
    for line in done.stdout.splitlines():
        if line.startswith("SECONDS "):
            return f"{float(line.split()[1]):.1f}"
    return "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:60]


def timing_rows(label, paths, work, device, args, deadline) -> List[Row]:
    rows, buffer = [], bytearray(64 << 20)
    for name, recipe in timing_recipes(paths):
        output = work / f"{label}-{name}.safetensors"
        seconds, vram, _ = timed_merge(recipe, output, device)
        floor = io_floor(paths, work, output.stat().st_size, buffer)["io_floor_s"]
        output.unlink()
        theirs = sd_mecha_seconds(recipe, output, device, args.sd_mecha, deadline - time.perf_counter())
        rows.append(Row("time", f"{name} {label}", seconds, floor, vram, theirs))
    return rows


# --- fallback -------------------------------------------------------------------------------------

def fallback_rows(small_paths, sd15_paths, work, device) -> List[Row]:
    if device.type != "cuda":
        return [Row("fallback", "VRAM budget 1 MiB", result="- (no VRAM on the CPU)"),
                Row("fallback", f"out of memory ({OOM_CAP_MIB} MiB)", result="- (no VRAM on the CPU)")]
    rows = []
    recipe = compose.add_difference_ties(*(mecha.model(str(p), config="sd1-ldm") for p in small_paths), k=0.5)
    reference = mecha.merge(recipe, device="cpu", output_dtype="fp32").state_dict
    rows.append(_fallback_row("VRAM budget 1 MiB", recipe, reference, device, vram_budget_mb=1))
    base, a, b = (mecha.model(str(p)) for p in sd15_paths)
    recipe = mecha.weighted_sum(a, b, alpha=0.5)
    reference = mecha.merge(recipe, device="cpu", output_dtype="fp32").state_dict
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(OOM_CAP_MIB * 2**20 / total, device)
    try:
        rows.append(_fallback_row(f"out of memory ({OOM_CAP_MIB} MiB)", recipe, reference, device,
                                  vram_budget_mb=8192))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    return rows


def _fallback_row(case, recipe, reference, device, **options) -> Row:
    made = []

    def recording(opts):
        made.append(placement_for(opts))
        return made[-1]
    api.placement_for, original = recording, api.placement_for
    try:
        seconds, vram, result = timed_merge(recipe, None, device, output_dtype="fp32", **options)
    finally:
        api.placement_for = original
    worst, ok = compare(result.state_dict, reference)
    keys = made[0].fallbacks
    shown = ", ".join(k.rsplit(".", 2)[-2] + "." + k.rsplit(".", 1)[-1] for k in keys[:2])
    return Row("fallback", case, seconds, vram=vram,
               result=f"{len(keys)} keys on the CPU ({shown}...); max|diff| {worst:.1e} {'ok' if ok else 'DIFFERS'}")


# --- main -----------------------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the device checked against the CPU (default cuda)")
    parser.add_argument("--small", action="store_true", help="tiny inputs: seconds on a CPU (for the tests)")
    parser.add_argument("--work", type=pathlib.Path, help="folder for the generated inputs (default: a temporary one)")
    parser.add_argument("--sd-mecha", action="store_true", help="time sd-mecha too (when sd_mecha is importable)")
    parser.add_argument("--minutes", type=float, default=7.5, help="sd-mecha runs are skipped past this (default 7.5)")
    args = parser.parse_args(argv)
    deadline = time.perf_counter() + args.minutes * 60
    device = api.placement_for(mecha.MergeOptions(device=args.device)).device  # one clear line when missing
    work = pathlib.Path(tempfile.mkdtemp(prefix="mecha-device-", dir=args.work))
    try:
        small = write_models(work, "small", entries("sd1-ldm", 16, SMALL_KEY_STEP if args.small else 1), device)
        agree = agreement_rows(small, device)
        divisor, step = (SMALL_DIVISOR, SMALL_TIMING_STEP) if args.small else (1, 1)
        sd15 = write_models(work, "sd15", entries("sd1-ldm", divisor, step), device)
        timed = timing_rows("SD1.5", sd15, work, device, args, deadline)
        fallback = fallback_rows(small, sd15, work, device)
        for path in small + sd15:
            path.unlink()
        sdxl = write_models(work, "sdxl", entries("sdxl-sgm", divisor, step), device)
        timed += timing_rows("SDXL", sdxl, work, device, args, deadline)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {device} ({name}), torch {torch.__version__}, lib_mecha {mecha.__version__}"
          f"{', small inputs' if args.small else ''}")
    print(table(agree + timed + fallback))
    return 0


if __name__ == "__main__":
    sys.exit(main())
