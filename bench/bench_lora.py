"""Bake 4 LoRAs into an SD1.5-shaped model, against a plain weighted_sum of two such models.

    python bench/make_models.py --count 2          # the SD1.5-shaped checkpoints, once
    python bench/bench_lora.py [--models /tmp/mecha-bench] [--rank 32] [--repeat 2]

The LoRAs are kohya-format, rank ``--rank`` (alpha rank/2), fp16, on the modules kohya's
default LoRA trains: every transformer block's attention, feed-forward and proj_in/proj_out in
the UNet, and every CLIP layer's q/k/v/out and MLP (192 + 72 modules). Each case writes a
.safetensors file with lib_mecha's defaults; the best of ``--repeat`` runs is reported (the page
cache is warm after the first). The target is bake ≤ 1.2 × weighted_sum.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import lib_mecha  # noqa: E402
from lib_mecha.arch import resolve_architecture  # noqa: E402
from lib_mecha.lora import bake, lora  # noqa: E402
from lib_mecha.lora.save import kohya_names  # noqa: E402

TRAINED = (".attn1.", ".attn2.", ".ff.net.", ".proj_in.", ".proj_out.", ".self_attn.", ".mlp.")


def make_loras(folder: pathlib.Path, count: int, rank: int):
    arch = resolve_architecture("sd1-ldm")
    names = kohya_names(arch)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"lora_{i}_r{rank}.safetensors"
        paths.append(path)
        if path.exists():
            continue
        gen = torch.Generator().manual_seed(100 + i)
        tensors = {}
        for key, spec in arch.keys.items():
            if not key.endswith(".weight") or len(spec.shape) not in (2, 4) or not any(t in key for t in TRAINED):
                continue
            if key not in names or "token_embedding" in key or "position_embedding" in key:
                continue
            name = names[key][0][0]
            out, rest = spec.shape[0], spec.shape[1:]
            inner = 1
            for d in rest:
                inner *= d
            up = torch.randn(out, rank, generator=gen) * 0.01
            down = torch.randn(rank, inner, generator=gen) * 0.01
            if len(spec.shape) == 4:
                up, down = up.reshape(out, rank, 1, 1), down.reshape(rank, *rest)
            tensors[f"{name}.lora_up.weight"] = up.half()
            tensors[f"{name}.lora_down.weight"] = down.half()
            tensors[f"{name}.alpha"] = torch.tensor(rank / 2, dtype=torch.float16)
        save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank)})
    return paths


def timed(recipe, output: pathlib.Path, repeat: int) -> float:
    best = None
    for _ in range(repeat):
        if output.exists():
            output.unlink()
        t = time.perf_counter()
        lib_mecha.merge(recipe, str(output))
        elapsed = time.perf_counter() - t
        best = elapsed if best is None else min(best, elapsed)
    output.unlink()
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("/tmp/mecha-bench"))
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    a, b = args.models / "sd15_00.safetensors", args.models / "sd15_01.safetensors"
    if not (a.exists() and b.exists()):
        print(f"missing {a} / {b}: run bench/make_models.py --count 2 first", file=sys.stderr)
        return 2
    loras = make_loras(args.models / "loras", 4, args.rank)
    out = args.models / "out"
    out.mkdir(exist_ok=True)
    ws = timed(lib_mecha.methods.build("weighted_sum", lib_mecha.model(str(a)), lib_mecha.model(str(b)), 0.5),
               out / "ws.safetensors", args.repeat)
    baked = timed(bake(lib_mecha.model(str(a)), *(lora(str(p), 0.8) for p in loras)),
                  out / "bake4.safetensors", args.repeat)
    result = {"weighted_sum_s": round(ws, 2), "bake_4_loras_s": round(baked, 2), "ratio": round(baked / ws, 3),
              "rank": args.rank, "target_ratio": 1.2}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if baked / ws <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
