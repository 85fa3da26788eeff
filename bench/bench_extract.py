"""Extract a LoRA from two SD1.5-shaped checkpoints: wall time, CPU time and peak private memory.

    python bench/make_models.py --out /tmp/mecha-bench --count 2     # the checkpoints, once
    python bench/bench_extract.py [--models /tmp/mecha-bench] [--rank 64] [--repeat 1] [--cli-args=...]

Each run is ``python -m lib_mecha extract sd15_01 sd15_00 -o OUT --rank R --no-hash`` in a fresh
process, measured as bench/run.py measures merges (RssAnon polled every 10 ms: what the process
allocates, page cache excluded). The inputs are read once, untimed, before the first run, and a
weighted_sum of the same two models is timed beside it for scale. The models are random, so every
weight's difference has full rank: each SVD does its full work, as for a real fine-tune.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys

from run import BUFFER, ROOT, read_all, recipe_text, run_measured  # bench/run.py


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("/tmp/mecha-bench"))
    parser.add_argument("--out", type=pathlib.Path, help="output folder (default: MODELS/out)")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--cli-args", default="", help="extra flags for `python -m lib_mecha extract`")
    args = parser.parse_args(argv)
    out_dir = args.out or args.models / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    inputs = [args.models / "sd15_01.safetensors", args.models / "sd15_00.safetensors"]
    read_all(inputs, bytearray(BUFFER))  # warm page cache for both commands

    output = out_dir / f"extract_r{args.rank}.safetensors"
    extract = [python, "-m", "lib_mecha", "extract", "sd15_01", "sd15_00", "-o", str(output), "--rank",
               str(args.rank), "--models-dir", str(args.models), "--no-hash", "--overwrite", "--quiet",
               *shlex.split(args.cli_args)]
    recipe = out_dir / "ws.mecha"
    recipe.write_text(recipe_text("ws", ["sd15_00", "sd15_01"]))
    merged = out_dir / "ws.safetensors"
    merge = [python, "-m", "lib_mecha", "merge", str(recipe), "-o", str(merged), "--models-dir", str(args.models),
             "--no-hash", "--overwrite", "--quiet"]
    rows = []
    for label, cmd, path in ((f"extract rank {args.rank}", extract, output), ("weighted_sum of 2", merge, merged)):
        for i in range(args.repeat):
            result = run_measured(cmd, out_dir / f"bench-extract-{i}.log")
            if result["exit_code"] != 0:
                print((out_dir / f"bench-extract-{i}.log").read_text(), file=sys.stderr)
                return 1
            result.update(case=label, output_mb=path.stat().st_size / 2**20)
            rows.append(result)
            print(f"{label:<22} wall {result['wall_s']:7.1f} s  cpu {result['user_s'] + result['sys_s']:7.1f} s  "
                  f"peak private {result['peak_rss_anon_mb']:7.0f} MB  VmHWM {result['vm_hwm_mb']:7.0f} MB  "
                  f"output {result['output_mb']:7.1f} MB")
        path.unlink()
    print("command:", " ".join(shlex.quote(str(c)) for c in extract))
    (out_dir / "bench-extract.json").write_text(json.dumps({"rows": rows, "root": str(ROOT)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
