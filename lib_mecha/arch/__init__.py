"""Architectures: key tables generated from each network's definition, detection, block layouts.

Importing this package registers the built-in architectures; each table is generated the first
time it is resolved.
"""
from __future__ import annotations

from .base import (Architecture, KeySpec, all_architectures, architecture_ids, candidates, detect,
                   register_architecture, resolve_architecture)


def _lazy(module: str):
    def factory():
        import importlib
        return importlib.import_module(f"{__name__}.{module}").build()
    return factory


def _register_builtins():
    from .base import _factories
    for ident, module in (("sd1-ldm", "sd1"),):
        if ident not in _factories:
            register_architecture(ident, _lazy(module))


_register_builtins()

__all__ = ["Architecture", "KeySpec", "all_architectures", "architecture_ids", "candidates", "detect",
           "register_architecture", "resolve_architecture"]
