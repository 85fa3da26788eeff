"""Demo data for tools/demo: small SD1 models, a recipe, and a check of the merged result.

    python tools/demo_models.py prepare DEMO_DIR   # models (only when missing) + DEMO_DIR/recipe.mecha
    python tools/demo_models.py check DEMO_DIR     # recompute sampled keys of DEMO_DIR/out.safetensors

The models carry every key of the real ``sd1-ldm`` table with every dimension divided by
SHAPE_DIVISOR, so they are a few MB each yet are detected, planned and merged exactly like a
real SD1.5 checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # lib_mecha from this checkout

SHAPE_DIVISOR = 16
MODELS = {"demo_a": 1, "demo_b": 2, "demo_c": 3}  # file stem -> seed
ALPHA_MIX = 0.4
ALPHA_DIFF = 0.5
STAMP = {"arch": "sd1-ldm", "shape_divisor": SHAPE_DIVISOR, "models": MODELS, "format": 1}


def build_recipe():
    """demo_a and demo_b mixed 60/40, plus half of demo_c's difference from demo_a."""
    import lib_mecha as mecha

    a, b, c = (mecha.model(name) for name in MODELS)
    mix = mecha.weighted_sum(a, b, alpha=ALPHA_MIX)
    return mecha.add_difference(mix, c, a, alpha=ALPHA_DIFF)


def prepare(demo: pathlib.Path) -> None:
    from safetensors.torch import save_file

    from lib_mecha.arch.demo import random_state_dict

    demo.mkdir(parents=True, exist_ok=True)
    stamp_path = demo / "models.json"
    fresh = stamp_path.is_file() and json.loads(stamp_path.read_text()) == STAMP
    for name, seed in MODELS.items():
        path = demo / f"{name}.safetensors"
        if fresh and path.is_file():
            print(f"model  {path} (kept)")
            continue
        sd = random_state_dict("sd1-ldm", seed, shape_divisor=SHAPE_DIVISOR)
        tmp = path.with_name(path.name + ".tmp")
        save_file(sd, str(tmp))
        os.replace(tmp, path)  # an interrupted run never leaves a half-written model behind
        print(f"model  {path} ({len(sd)} keys, {path.stat().st_size / 2**20:.1f} MiB)")
    stamp_path.write_text(json.dumps(STAMP, indent=1))

    import lib_mecha as mecha

    recipe_path = demo / "recipe.mecha"
    recipe_path.write_text(mecha.serialize(build_recipe()), encoding="utf-8")
    print(f"recipe {recipe_path}:")
    print("    " + recipe_path.read_text(encoding="utf-8").replace("\n", "\n    "))


def check(demo: pathlib.Path) -> int:
    """Recompute a sample of keys with plain torch and compare with the merged file."""
    import torch
    from safetensors import safe_open

    out_path = demo / "out.safetensors"
    with safe_open(str(out_path), "pt") as out:
        keys = sorted(out.keys())
        sample = keys[:: max(1, len(keys) // 25)]
        worst = 0.0
        for key in sample:
            inputs = []
            for name in MODELS:
                with safe_open(str(demo / f"{name}.safetensors"), "pt") as f:
                    inputs.append(f.get_tensor(key))
            got = out.get_tensor(key)
            if not got.dtype.is_floating_point:
                if not torch.equal(got, inputs[0]):
                    print(f"check FAILED: integer key {key} was not copied unchanged", file=sys.stderr)
                    return 1
                continue
            a, b, c = (t.float() for t in inputs)
            expected = torch.lerp(a, b, ALPHA_MIX) + ALPHA_DIFF * (c - a)
            err = (got.float() - expected).abs().max().item()
            tol = 2e-3 * max(1.0, expected.abs().max().item())  # fp16 output rounding
            if err > tol:
                print(f"check FAILED: {key}: max abs error {err:.3g} > {tol:.3g}", file=sys.stderr)
                return 1
            worst = max(worst, err)
    print(f"check  {len(sample)} of {len(keys)} keys recomputed with plain torch: "
          f"max abs error {worst:.2g} (fp16 output)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["prepare", "check"])
    parser.add_argument("demo_dir", type=pathlib.Path)
    args = parser.parse_args(argv)
    if args.action == "prepare":
        prepare(args.demo_dir)
        return 0
    return check(args.demo_dir)


if __name__ == "__main__":
    sys.exit(main())
