"""Write SD1.5-shaped random fp16 checkpoints for the benchmarks (about 2.1 GB each).

    python bench/make_models.py [--out /tmp/mecha-bench] [--count 8] [--seed 0]

Each file holds the real ``sd1-ldm`` key table (CLIP-L, VAE, UNet and the int64 position ids;
no EMA, no scheduler buffers: 1131 keys, like a pruned SD1.5 checkpoint), with N(0, 0.02²) noise.
Files are streamed one chunk at a time through lib_mecha's SafetensorsWriter, so memory stays
at a few tens of MB whatever the model size. Existing files of the right size are kept, so a
rerun only writes what is missing. The folder must be outside the repository.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import shutil
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from lib_mecha.arch import resolve_architecture  # noqa: E402
from lib_mecha.io import SafetensorsWriter  # noqa: E402
from lib_mecha.io.writer import build_header  # noqa: E402

CHUNK = 4 << 20  # elements per generated chunk: 16 MB of fp32 noise in flight
SKIPPED_COMPONENTS = ("ema", "scheduler")


def model_name(index: int) -> str:
    return f"sd15_{index:02d}"


def sd15_entries():
    """(key, dtype, shape) of a pruned SD1.5 checkpoint: floats as fp16, integer buffers as declared."""
    arch = resolve_architecture("sd1-ldm")
    entries = []
    for key, spec in arch.keys.items():
        if spec.component in SKIPPED_COMPONENTS:
            continue
        dtype = torch.float16 if spec.dtype.is_floating_point else spec.dtype
        entries.append((key, dtype, tuple(spec.shape)))
    return entries


def file_size(entries) -> int:
    header, _ = build_header(entries)
    return 8 + len(header) + sum(math.prod(shape) * torch.empty((), dtype=dtype).element_size()
                                 for _, dtype, shape in entries)


def write_model(path: pathlib.Path, entries, seed: int, device: torch.device = torch.device("cpu")) -> None:
    """N(0, 0.02²) noise in every float key (drawn on ``device``: fast on a GPU), streamed to the file."""
    gen = torch.Generator(device=device).manual_seed(seed)
    with SafetensorsWriter(path, entries, overwrite=True, fsync=False) as writer:
        for key, dtype, shape in entries:
            numel = math.prod(shape)
            if not dtype.is_floating_point:
                writer.write(key, torch.arange(numel, dtype=dtype).reshape(shape))
                continue
            for start in range(0, numel, CHUNK):
                n = min(CHUNK, numel - start)
                chunk = torch.randn(n, generator=gen, device=device).mul_(0.02).to(dtype)
                writer.write_range(key, start, chunk.cpu())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("/tmp/mecha-bench"),
                        help="folder for the models, outside the repository (default /tmp/mecha-bench)")
    parser.add_argument("--count", type=int, default=8, help="number of models (default 8: n_average of 8)")
    parser.add_argument("--seed", type=int, default=0, help="model i uses seed + i")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    if out == ROOT or ROOT in out.parents:
        parser.error(f"--out {out} is inside the repository; use a folder outside it")
    out.mkdir(parents=True, exist_ok=True)

    entries = sd15_entries()
    size = file_size(entries)
    todo = [i for i in range(args.count)
            if not ((out / f"{model_name(i)}.safetensors").is_file()
                    and (out / f"{model_name(i)}.safetensors").stat().st_size == size)]
    need = len(todo) * size
    free = shutil.disk_usage(out).free
    print(f"{args.count} models of {len(entries)} keys, {size / 1e9:.2f} GB each, in {out}: "
          f"{len(todo)} to write ({need / 1e9:.1f} GB; {free / 1e9:.1f} GB free)")
    if need > free - (1 << 30):
        print(f"error: not enough space in {out}: {need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free",
              file=sys.stderr)
        return 1
    for i in todo:
        path = out / f"{model_name(i)}.safetensors"
        started = time.perf_counter()
        write_model(path, entries, args.seed + i)
        print(f"  {path}: {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
