"""Merge methods of the user's own, loaded from Python files.

Such a file defines methods with ``@lib_mecha.merge_method`` (README, "Your own merge methods").
The WebUI extension loads every ``*.py`` file of its ``user_methods`` folder before the Mecha tab
is built; the command line takes ``--methods FILE_OR_FOLDER``. A method registered this way works
in recipes, in .mecha files and in the tab like a built-in one.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Iterable, List, Union

from ..errors import MechaError
from .registry import all_methods

MODULE_PREFIX = "lib_mecha_user_methods."


class MethodFileError(MechaError):
    """A file of user methods that is missing or fails to load."""


def method_files(path: Union[str, Path]) -> List[Path]:
    """``path`` itself if it is a file, else the ``*.py`` files in it (``_``-prefixed ones skipped)."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
    raise MethodFileError(f"methods file or folder not found: {path}")


def load_method_files(paths: Iterable[Union[str, Path]]) -> List[str]:
    """Import every file of ``paths`` (files or folders) once; returns the names of the methods
    they registered. A file that fails to import raises :class:`MethodFileError` naming it."""
    before = set(all_methods())
    for path in paths:
        for file in method_files(path):
            _import(file)
    return sorted(set(all_methods()) - before)


def _import(file: Path) -> None:
    resolved = file.resolve()
    name = MODULE_PREFIX + re.sub(r"\W", "_", str(resolved))
    if name in sys.modules:  # loaded already (the WebUI's Reload UI sets the extension up again)
        return
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise MethodFileError(f"{file}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise MethodFileError(f"{file}: cannot load its merge methods: {type(e).__name__}: {e}") from e
