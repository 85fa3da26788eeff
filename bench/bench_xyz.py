"""X/Y/Z plot cells over Mecha axes, and Compare's swap, on SD1.5-shaped models.

    python bench/bench_xyz.py [--models /tmp/mecha-bench] [--a sd15_00] [--b sd15_01]

Two SD1.5-shaped random fp16 checkpoints (``bench/make_models.py``, 2.1 GB each; written when
missing) are merged into a stand-in running model: model A's weights in a torch module (fp16, as
a Forge fp16 or A1111 half model), driven through the extension's own grid code
(``lib_mecha.host.grid``: each axis's confirm, then each cell's hot-load, then the model put
back at the end of the request) with the WebUI tab's hot-load options (2 threads, 256 MiB).
Generation is left out: only merge work is timed.

* full: Merge & load of weighted_sum(A, B) with block weights (FLAT_25), every key merged;
* a 5-value ``Mecha: block weights`` grid whose lists differ from the loaded merge in IN04 only;
* the same through ``Mecha: parameter`` (``1.alpha.IN04=0.1-0.9 [5]``);
* a 5-value ``Mecha: alpha (step 1)`` grid (every key of the step changes per cell), beside a
  plain Merge & load of one of its values (after a restore, so every key is merged);
* Compare's swap: the original's keys streamed back, then the merge again.

Prints a table (seconds per cell, keys merged) and writes MODELS/bench-xyz.json.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import threading
import time
from copy import copy
from types import SimpleNamespace

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

import lib_mecha  # noqa: E402
from lib_mecha.host import grid  # noqa: E402
from lib_mecha.host.base import LoadedModel, MergeIdentity  # noqa: E402
from lib_mecha.host.hot_load import HotLoading  # noqa: E402
from lib_mecha.host.recipes import RecipeStore  # noqa: E402
from lib_mecha.host.xyz_axes import AXES  # noqa: E402
from lib_mecha.live import Original  # noqa: E402
from lib_mecha.live.module import ModuleModel  # noqa: E402

SD1 = "sd1-supermerger_blocks"


class BenchHost(HotLoading):
    """A WebUI host's hot-load half over a plain module holding model A (no generation)."""

    name = "bench"

    def __init__(self, module, path: pathlib.Path, options):
        self._init_live()
        self.module, self.path, self.options = module, path, options
        self.recipes = RecipeStore(None)
        self._lock = threading.Lock()

    def run_exclusive(self, fn, *args, job="", wait=0.0):
        with self._lock:
            return fn(*args)

    def interrupted(self):
        return False

    def current_model(self):
        return LoadedModel(self.path.name, str(self.path), "sd1-ldm")

    def checkpoint_dirs(self):
        return [self.path.parent]

    def _sd_models(self):
        return SimpleNamespace(CheckpointInfo=type("CheckpointInfo", (), {}))

    def _live_model(self):
        return self.module

    def _pending_label(self, model):
        return None

    def _model_view(self, model):
        return ModuleModel(model, self.path.name)

    def _original_of(self, model):
        return Original.of(self.path, self.path.name)


class Request:
    """The host's processing object of one txt2img request (what the X/Y/Z plot copies per cell)."""

    def __init__(self):
        self.extra_generation_params = {}

    def close(self):
        pass


def load_a(path: pathlib.Path):
    from lib_mecha.io import open_model
    sys.path.insert(0, str(ROOT / "tests" / "live"))
    from live_fixtures import Tree
    with open_model(path) as f:
        return Tree({k: f.read(k) for k in f.tensors}, torch.float16)


def run_grid(host, label: str, values) -> dict:
    """One grid over one axis: confirm, the cells, the end of the request."""
    axis = next(a for a in AXES if a.label == label)
    p = Request()
    started = time.perf_counter()
    values = axis.prepare(values) if axis.prepare is not None and isinstance(values, str) else values
    grid.check_axis(grid.session_for(host, p), axis, values)
    confirm = time.perf_counter() - started
    for value in values:
        cell = copy(p)
        grid.run_cell(cell, grid.add_cell_value(cell, axis, value))
    p.close()
    report = host.grid_report()
    cells = report["cells"]
    return {"grid": label, "confirm_seconds": round(confirm, 2), "cell_seconds": [c["seconds"] for c in cells],
            "cell_keys": [c["keys_merged"] for c in cells], "restore_seconds": report["restore"]["seconds"],
            "restore_keys": report["restore"]["keys"],
            "merge_seconds_total": round(sum(c["seconds"] for c in cells) + report["restore"]["seconds"], 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("/tmp/mecha-bench"))
    parser.add_argument("--a", default="sd15_00")
    parser.add_argument("--b", default="sd15_01")
    args = parser.parse_args(argv)
    folder = args.models.resolve()
    a, b = folder / f"{args.a}.safetensors", folder / f"{args.b}.safetensors"
    if not (a.is_file() and b.is_file()):
        from make_models import main as make
        make(["--out", str(folder), "--count", "2"])
    options = lib_mecha.MergeOptions(model_dirs=(str(folder),), threads=2, memory_budget_mb=256)
    host = BenchHost(load_a(a), a, options)
    from lib_mecha.arch.presets import preset
    flat = preset(SD1, "FLAT_25").as_dict()

    def ws(alpha):
        return lib_mecha.weighted_sum(lib_mecha.model(a.name), lib_mecha.model(b.name), alpha=alpha)

    def hot_load(recipe, name):
        started = time.perf_counter()
        report = host.hot_load(recipe, MergeIdentity.from_recipe(lib_mecha.serialize(recipe), name), options)
        return {"seconds": round(time.perf_counter() - started, 2), "keys": report.keys_merged}
    rows = {"full Merge & load (block weights)": hot_load(ws(lib_mecha.blocks(SD1, flat)), "base")}
    print(rows, flush=True)
    lists = [",".join(str(v if k == "IN04" else flat[k]) for k in flat) for v in (0.1, 0.3, 0.5, 0.7, 0.9)]
    grids = [run_grid(host, "Mecha: block weights", lists)]
    print(grids[-1], flush=True)
    grids.append(run_grid(host, "Mecha: parameter", "1.alpha.IN04=0.1-0.9 [5]"))
    print(grids[-1], flush=True)
    grids.append(run_grid(host, "Mecha: alpha (step 1)", [0.2, 0.3, 0.4, 0.5, 0.6]))
    print(grids[-1], flush=True)
    started = time.perf_counter()
    restore = host.restore()
    rows["Compare: original back"] = {"seconds": round(time.perf_counter() - started, 2),
                                      "keys": restore.keys_restored}
    rows["Compare: merge again (= a plain Merge & load of the block-weight merge)"] = hot_load(
        ws(lib_mecha.blocks(SD1, flat)), "base")
    host.restore()
    rows["plain Merge & load of alpha 0.4"] = hot_load(ws(0.4), "alpha 0.4")
    full = rows["full Merge & load (block weights)"]["seconds"]
    print("\n| what | seconds | keys merged |\n|---|---|---|")
    for what, r in rows.items():
        print(f"| {what} | {r['seconds']} | {r['keys']} |")
    print("\n| grid (5 cells) | confirm s | merge s per cell | keys per cell | put back after (s, keys) "
          "| merge s in all | in full merges |\n|---|---|---|---|---|---|---|")
    for g in grids:
        print(f"| {g['grid']} | {g['confirm_seconds']} | {', '.join(str(s) for s in g['cell_seconds'])} | "
              f"{', '.join(str(k) for k in g['cell_keys'])} | {g['restore_seconds']}, {g['restore_keys']} | "
              f"{g['merge_seconds_total']} | {g['merge_seconds_total'] / full:.2f} |")
    (folder / "bench-xyz.json").write_text(json.dumps({"rows": rows, "grids": grids}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
