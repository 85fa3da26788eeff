"""The command line. Flags of ``merge`` are generated from :class:`MergeOptions`' fields.

Every user error ends as one line on stderr and a non-zero exit code
(:attr:`MechaError.exit_code`); a traceback means a bug.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import List, Optional

from .cli_extract import add_parser as add_extract_parser
from .cli_extract import cmd_extract
from .engine.options import MergeOptions
from .errors import MechaError, MergeCancelled
from .progress_bar import terminal_job


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(MergeOptions):
        flags = f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),)
        kw = {"dest": f.name, "help": f.metadata.get("help", ""), "default": None}
        if f.type in ("bool", bool):
            kw["action"] = "store_true"
        elif f.name == "model_dirs":
            kw["action"] = "append"
        else:
            kw["type"] = f.metadata.get("type") or (int if isinstance(f.default, int) else str)
            if f.metadata.get("choices"):
                kw["choices"] = list(f.metadata["choices"])
        parser.add_argument(*flags, **kw)


def _add_methods_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", action="append", default=[], dest="method_files", metavar="FILE_OR_FOLDER",
                        help="Python file (or folder of them) defining your own merge methods (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_mecha", description="Streaming model merging.")
    sub = parser.add_subparsers(dest="command", required=True)

    merge = sub.add_parser("merge", help="merge a .mecha recipe into a .safetensors file")
    merge.add_argument("recipe", help="a .mecha recipe file")
    merge.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    merge.add_argument("--no-hash", action="store_true", help="do not record the inputs' sha256 in the output")
    merge.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_methods_flag(merge)
    _add_option_flags(merge)

    add_extract_parser(sub)

    info = sub.add_parser("info", help="describe a model: architecture, components, keys, dtypes, recipe")
    info.add_argument("model")
    info.add_argument("--json", action="store_true", help="machine-readable output")

    methods = sub.add_parser("methods", help="list the merge methods")
    methods.add_argument("--json", action="store_true", help="machine-readable output")
    _add_methods_flag(methods)

    ui = sub.add_parser("ui", help="serve the Mecha tab on localhost without a WebUI")
    ui.add_argument("--models-dir", action="append", default=[], help="folder of models (repeatable)")
    ui.add_argument("--port", type=int, default=7861)
    ui.add_argument("--host", default="127.0.0.1")
    _add_methods_flag(ui)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "method_files", None):
            from .methods import load_method_files
            load_method_files(args.method_files)
        return {"merge": cmd_merge, "extract": cmd_extract, "info": cmd_info, "methods": cmd_methods,
                "ui": cmd_ui}[args.command](args)
    except MechaError as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return MergeCancelled.exit_code


def cmd_merge(args) -> int:
    from . import merge
    from .recipe_text import deserialize_path
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(MergeOptions)
                 if getattr(args, f.name) is not None}
    if overrides.get("overwrite") is False:
        overrides.pop("overwrite")
    options = MergeOptions().with_(**overrides)
    recipe = deserialize_path(Path(args.recipe))
    with terminal_job(args.quiet) as (progress, cancel):
        result = merge(recipe, args.output, options=options, cancel=cancel, progress=progress,
                       hash_inputs=not args.no_hash)
    if result.skipped:
        print(f"warning: {result.skipped_summary()}", file=sys.stderr)
    for message in result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    print(f"wrote {result.path} ({len(result.keys)} keys, {result.bytes / 2**20:.1f} MiB, {result.seconds:.1f} s)")
    return 0


def cmd_info(args) -> int:
    from .model_info import describe_model, format_model_info
    info = describe_model(args.model)
    print(json.dumps(info, indent=2) if args.json else format_model_info(info))
    return 0


def cmd_methods(args) -> int:
    from .methods import describe_all
    described = describe_all()
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    category = None
    for m in described:
        if m["category"] != category:
            category = m["category"]
            print(f"\n[{category}]")
        params = ", ".join(_param_text(p) for p in m["params"])
        print(f"  {m['name']}({params})")
        print(f"      {m['help']}")
    return 0


def _param_text(p) -> str:
    text = ("*" if p["variadic"] else "") + p["name"]
    if not p["required"]:
        text += f"={p['default']!r}"
    return text


def cmd_ui(args) -> int:
    try:
        from .ui.standalone import serve
    except ImportError as e:
        raise MechaError(f"the standalone tab is not available: {e}") from e
    return serve(model_dirs=args.models_dir, host=args.host, port=args.port)
