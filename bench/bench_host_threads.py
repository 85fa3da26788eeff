"""A host thread's torch work while a merge runs in the same process (issue 16, point 3).

    python bench/bench_host_threads.py --models /tmp/mecha-bench [--root PATH] [--repeat 3]

In a WebUI the host generates images on threads of its own while a merge may run. This runs a
fixed piece of torch work (matrix products and elementwise ops, on a thread that starts its
torch work then, as a host's worker thread does) alone, and again while a merge of two
SD1.5-shaped models runs in the same process (weighted_sum into a file, the engine's defaults),
and reports the work's wall time and the intra-op thread count its thread got. ``--root`` picks
the lib_mecha to measure (a checkout of another branch, for a before/after comparison).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def host_work(result: dict) -> None:
    """On a fresh thread: torch's thread count there, and the seconds of a fixed piece of work."""
    import torch
    result["threads"] = torch.get_num_threads()
    a = torch.randn(1024, 1024)
    x = torch.randn(1 << 22)
    started = time.perf_counter()
    for _ in range(20):
        a @ a
        (x * 1.5).add_(x).mul_(0.5)
    result["seconds"] = time.perf_counter() - started


def on_new_thread() -> dict:
    result: dict = {}
    t = threading.Thread(target=host_work, args=(result,))
    t.start()
    t.join()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="/tmp/mecha-bench", type=pathlib.Path)
    parser.add_argument("--root", default=ROOT, type=pathlib.Path, help="the checkout whose lib_mecha runs")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.root))
    import lib_mecha as mecha
    sys.path.insert(0, str(ROOT / "bench"))
    from run import read_all  # noqa: E402  (bench/run.py)

    inputs = [args.models / f"sd15_{i:02d}.safetensors" for i in range(2)]
    recipe = mecha.weighted_sum(mecha.model("sd15_00"), mecha.model("sd15_01"), alpha=0.5)
    for run in range(args.repeat):
        read_all(inputs, bytearray(64 << 20))  # a warm page cache, untimed
        alone = on_new_thread()
        started = threading.Event()

        def merge(folder: str, started: threading.Event) -> None:
            mecha.merge(recipe, pathlib.Path(folder) / "out.safetensors", model_dirs=[args.models],
                        hash_inputs=False, progress=lambda *_: started.set())

        with tempfile.TemporaryDirectory(dir=args.models) as folder:
            merging = threading.Thread(target=merge, args=(folder, started))
            merge_started = time.perf_counter()
            merging.start()
            started.wait(600)
            during = on_new_thread()
            merging.join()
            merge_seconds = time.perf_counter() - merge_started
        print(f"run {run}: host work alone {alone['seconds']:.2f} s on {alone['threads']} intra-op threads; "
              f"during the merge {during['seconds']:.2f} s on {during['threads']} threads "
              f"(merge {merge_seconds:.1f} s); main thread now on {__import__('torch').get_num_threads()}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
