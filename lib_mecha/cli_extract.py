"""``python -m lib_mecha extract``: a LoRA from the difference of two models, either of which may be a
``.mecha`` recipe (a merge extracted without saving it first)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .progress_bar import terminal_job

DTYPES = ("fp16", "bf16", "fp32")


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``extract`` subcommand on the command line's subparsers."""
    p = sub.add_parser("extract", help="extract a LoRA holding TUNED - BASE",
                       description="Extract a LoRA holding the difference TUNED - BASE, each weight's change "
                                   "factorised by SVD. Only Linear and Conv weights of the UNet/DiT and text "
                                   "encoders go in (no biases, norms, embeddings, VAE or EMA).")
    p.add_argument("tuned", help="the fine-tune: a .safetensors model, or a .mecha recipe")
    p.add_argument("base", help="the model it was tuned from: a .safetensors model, or a .mecha recipe")
    p.add_argument("-o", "--output", required=True, help="the LoRA .safetensors file to write")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--rank", type=int, default=None,
                      help="rank of every module (default 32; lower for keys whose change has fewer directions)")
    size.add_argument("--energy", type=float, default=None,
                      help="per module, the smallest rank keeping this fraction (0-1] of the change's energy")
    p.add_argument("--conv-rank", type=int, default=None,
                   help="rank of the convolutions larger than 1x1 (default: as --rank; 0 leaves them out)")
    p.add_argument("--dtype", choices=DTYPES, default="fp16", help="dtype of the LoRA's tensors")
    p.add_argument("--components", nargs="+", default=None, metavar="COMPONENT",
                   help="only these components (diffuser, clip_l, clip_g, t5xxl...; default: all a LoRA patches)")
    p.add_argument("--models-dir", action="append", default=[], dest="model_dirs", metavar="DIR",
                   help="folder searched for model names (repeatable)")
    p.add_argument("--device", default=None, help="device the differences are computed on (cpu, cuda...)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (keys in flight)")
    p.add_argument("--memory-budget-mb", type=int, default=None, help="upper bound for tensors in flight, in MiB")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (never an input)")
    p.add_argument("--no-hash", action="store_true", help="do not record the inputs' sha256 in the output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _input(name: str):
    """A model name or path as it is, or the recipe of a ``.mecha`` file."""
    if name.lower().endswith(".mecha"):
        from .recipe_text import deserialize_path
        return deserialize_path(Path(name))
    return name


def cmd_extract(args) -> int:
    from .lora.extract import extract_lora
    rank = args.rank if args.rank is not None or args.energy is not None else 32
    options = {k: v for k, v in (("device", args.device), ("threads", args.threads),
                                 ("memory_budget_mb", args.memory_budget_mb)) if v is not None}
    with terminal_job(args.quiet) as (progress, cancel):
        saved = extract_lora(_input(args.tuned), _input(args.base), args.output, rank=rank, energy=args.energy,
                             conv_rank=args.conv_rank, components=args.components, dtype=args.dtype,
                             overwrite=args.overwrite, progress=progress, cancel=cancel,
                             hash_inputs=not args.no_hash, model_dirs=args.model_dirs, **options)
    for message in saved.warnings:
        print(f"warning: {message}", file=sys.stderr)
    print(f"wrote {saved.path} ({saved.modules} modules, rank up to {saved.max_rank}, "
          f"at least {saved.min_energy:.1%} of each change's energy kept)")
    return 0
