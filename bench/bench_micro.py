"""The small measurements behind choices in the code, each against the alternative it replaced.

    python bench/bench_micro.py [--cases selected,sort,...] [--repeat 5]

Each case times two or more ways of doing one thing on the calling thread, with torch on one
intra-op thread (as on a merge's threads), and prints ns per element (best of ``--repeat``).
bench/README.md lists what each case stands for in the code.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best_ns(fn, n: int, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times) / n * 1e9


def selected(repeat):
    """methods/_trim.py _selected: numpy's boolean indexing against torch's, 256 K, 1 % kept."""
    g = torch.Generator().manual_seed(0)
    x, mask = torch.randn(1 << 18, generator=g), torch.rand(1 << 18, generator=g) < 0.01
    return {"numpy x[mask]": best_ns(lambda: torch.from_numpy(x.numpy()[mask.numpy()]), x.numel(), repeat),
            "torch x[mask]": best_ns(lambda: x[mask], x.numel(), repeat)}


def count_nonzero(repeat):
    """methods/_trim.py _count_nonzero: a comparison into floats and its sum, against count_nonzero."""
    x = torch.randn(1 << 18) * (torch.rand(1 << 18) < 0.2)
    out = torch.empty_like(x)
    return {"ne(out=float).sum()": best_ns(lambda: int(torch.ne(x, 0, out=out).sum()), x.numel(), repeat),
            "count_nonzero": best_ns(lambda: int(torch.count_nonzero(x)), x.numel(), repeat)}


def comparisons(repeat):
    """methods/dare.py _kept_ (and TIES's float arithmetic): a comparison into a float buffer,
    against a bool mask turned into floats and heaviside."""
    x, out = torch.rand(1 << 18) + 1, torch.empty(1 << 18)
    return {"lt(out=float)": best_ns(lambda: torch.lt(x, 1.3, out=out), x.numel(), repeat),
            "(x < c).float()": best_ns(lambda: (x < 1.3).float(), x.numel(), repeat),
            "heaviside": best_ns(lambda: torch.heaviside(1.3 - x, torch.tensor(0.0)), x.numel(), repeat)}


def row_sums(repeat):
    """methods/_rows.py SHORT_ROW and _RowBuffers: rows of 3 summed by column adds, against
    torch.sum(dim=-1); a product into a reused buffer, against a fresh one."""
    x = torch.randn(1 << 18, 3)
    out, product = torch.empty(1 << 18), torch.empty(1 << 18, 3)

    def columns():
        torch.add(x[:, 0], x[:, 1], out=out).add_(x[:, 2])
    return {"column adds": best_ns(columns, x.numel(), repeat),
            "sum(dim=-1)": best_ns(lambda: torch.sum(x, dim=-1, out=out), x.numel(), repeat),
            "mul(out=buffer)": best_ns(lambda: torch.mul(x, x, out=product), x.numel(), repeat),
            "x * x (fresh)": best_ns(lambda: x * x, x.numel(), repeat)}


def sqrt_of_zeros(repeat):
    """methods/_rows.py _TINY: the square root of mostly-zero rows, against ordinary values."""
    zeros, values = torch.zeros(1 << 18), torch.rand(1 << 18) + 0.5
    out = torch.empty(1 << 18)
    return {"sqrt of zeros": best_ns(lambda: torch.sqrt(zeros, out=out), zeros.numel(), repeat),
            "sqrt of zeros raised to tiny": best_ns(lambda: torch.sqrt(zeros.clamp(min=torch.finfo().tiny), out=out),
                                                     zeros.numel(), repeat),
            "sqrt of values": best_ns(lambda: torch.sqrt(values, out=out), values.numel(), repeat)}


def largest_magnitude(repeat):
    """methods/_values.py largest_magnitude: one aminmax pass against vector_norm(inf)."""
    x = torch.randn(1 << 20)
    return {"aminmax": best_ns(lambda: torch.aminmax(x), x.numel(), repeat),
            "vector_norm(inf)": best_ns(lambda: torch.linalg.vector_norm(x, float("inf")), x.numel(), repeat)}


def uniform(repeat):
    """methods/seeding.py: SFC64 bits under the exponent of 1.0, against torch's uniform_."""
    from lib_mecha.methods.seeding import Draws
    draws, out = Draws(1, "key", "stream"), torch.empty(1 << 18)
    g = torch.Generator().manual_seed(1)
    return {"Draws.uniform": best_ns(lambda: draws.uniform(out, 0), out.numel(), repeat),
            "torch uniform_": best_ns(lambda: out.uniform_(generator=g), out.numel(), repeat)}


def sort(repeat):
    """methods/_rank_transfer.py: torch's stable sort of float32 values against 32- and 16-bit keys."""
    x = torch.randn(1 << 22)
    keys32, keys16 = x.view(torch.int32).clone(), (x.half().view(torch.int16)).clone()
    return {"float32": best_ns(lambda: torch.sort(x, stable=True), x.numel(), repeat),
            "int32": best_ns(lambda: torch.sort(keys32, stable=True), x.numel(), repeat),
            "int16": best_ns(lambda: torch.sort(keys16, stable=True), x.numel(), repeat)}


def ranks(repeat):
    """methods/dare.py EXACT_RANKS_UP_TO: DELLA's exact ranks (argsort) against a histogram."""
    out = {}
    for n in (1 << 16, 1 << 20):
        x = torch.rand(n)
        out[f"argsort {n}"] = best_ns(lambda x=x: torch.argsort(x, stable=True), n, repeat)
        out[f"histogram {n}"] = best_ns(
            lambda x=x: torch.bincount(x.half().view(torch.int16).to(torch.int32), minlength=1 << 15), n, repeat)
    return out


def fft_batches(repeat):
    """methods/_fft_passes.py batches_slowly: a batch of 16 complex FFTs against one at a time."""
    out = {}
    for length in (49408, 12352, 4099, 49152):
        x = torch.randn(16, length, dtype=torch.complex64)

        def one_by_one(x=x):
            for row in x:
                torch.fft.ifft(torch.fft.fft(row))
        out[f"{length} batch"] = best_ns(lambda x=x: torch.fft.ifft(torch.fft.fft(x, dim=1), dim=1), x.numel(), repeat)
        out[f"{length} one by one"] = best_ns(one_by_one, x.numel(), repeat)
    return out


def fresh_memory(repeat):
    """memory.py: a fresh key-sized tensor (its pages faulted in) against a reused one, written once."""
    n = 1 << 24
    reused = torch.empty(n)
    reused.fill_(1.0)
    return {"fresh torch.empty + fill": best_ns(lambda: torch.empty(n).fill_(1.0), n, repeat),
            "reused + fill": best_ns(lambda: reused.fill_(1.0), n, repeat)}


CASES = {f.__name__: f for f in (selected, count_nonzero, comparisons, row_sums, sqrt_of_zeros, largest_magnitude,
                                  uniform, sort, ranks, fft_batches, fresh_memory)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="", help="comma-separated (default all): " + ", ".join(CASES))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    np.random.seed(0)
    for name in [c for c in args.cases.split(",") if c] or list(CASES):
        for label, ns in CASES[name](args.repeat).items():
            print(f"{name:18s} {label:32s} {ns:8.2f} ns per element", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
