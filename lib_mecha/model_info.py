"""``python -m lib_mecha info MODEL``: what a model file is, from its header alone."""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict

from .arch import base as arch_base
from .engine.sources import resolve_model_path
from .io import open_model


def describe_model(name: str, model_dirs=()) -> Dict[str, Any]:
    """Architecture, components, key count, dtypes, size and embedded recipe of a model."""
    path = resolve_model_path(name, model_dirs)
    with open_model(path) as handle:
        tensors = handle.tensors
        shapes = {k: tuple(t.shape) for k, t in tensors.items()}
        found = arch_base.candidates(list(tensors), shapes)
        arch = found[0].architecture if found else None
        components: Dict[str, int] = Counter()
        for k in tensors:
            c = arch.component_of(arch.canonical(k)) if arch is not None and arch.canonical(k) else None
            components[c or "(other)"] += 1
        metadata = dict(handle.metadata)
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.glob("*.safetensors"))
    return {
        "path": str(path),
        "size_bytes": size,
        "architecture": arch.identifier if arch else None,
        "components": dict(components),
        "keys": len(tensors),
        "parameters": sum(t.numel for t in tensors.values()),
        "dtypes": dict(Counter(t.code for t in tensors.values())),
        "recipe": metadata.get("mecha_recipe"),
        "metadata_keys": sorted(metadata),
    }


def format_model_info(info: Dict[str, Any]) -> str:
    lines = [
        f"file:          {info['path']}",
        f"size:          {info['size_bytes'] / 2**20:.1f} MiB",
        f"architecture:  {info['architecture'] or 'not recognised (merged by common keys)'}",
        f"keys:          {info['keys']} ({info['parameters']:,} parameters)",
        "components:    " + ", ".join(f"{c} {n}" for c, n in info["components"].items()),
        "dtypes:        " + ", ".join(f"{d} {n}" for d, n in sorted(info["dtypes"].items())),
    ]
    if info["metadata_keys"]:
        lines.append("metadata:      " + ", ".join(info["metadata_keys"]))
    if info["recipe"]:
        lines.append("recipe:")
        lines.extend("  " + line for line in info["recipe"].splitlines())
    return "\n".join(lines)
