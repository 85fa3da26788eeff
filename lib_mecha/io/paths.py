"""Turn a user-given output name into a path that stays inside its folder."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import PathEscape

_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_output_path(name, folder, suffix: str = ".safetensors") -> Path:
    """``folder / name`` (plus ``suffix`` when missing), refusing names that leave ``folder``.

    Subfolders are allowed ("sdxl/merged"); the folder itself may be a symlink (e.g. a models
    folder on another drive). Both ``/`` and ``\\`` count as separators, so a name is judged the
    same on every platform.

    Raises:
        PathEscape: empty name, NUL byte, absolute path or drive, a ``..`` component, a name that
            names no file ("a/"), or a symlink inside ``folder`` that leads outside it.

    Example:
        >>> safe_output_path("merged", "/models")
        PosixPath('/models/merged.safetensors')
    """
    text = os.fspath(name) if isinstance(name, os.PathLike) else name
    if not isinstance(text, str) or not text.strip():
        raise PathEscape(f"output name {name!r} is empty", "give a file name")
    if "\x00" in text:
        raise PathEscape(f"output name {text!r} contains a NUL byte")
    if text.startswith(("/", "\\")) or _DRIVE.match(text) or os.path.isabs(text):
        raise PathEscape(f"output name {text!r} is an absolute path", f"give a name inside {folder}")
    parts = re.split(r"[\\/]", text)
    if ".." in parts:
        raise PathEscape(f"output name {text!r} leaves its folder with '..'", f"give a name inside {folder}")
    if parts[-1] in ("", "."):
        raise PathEscape(f"output name {text!r} names a folder, not a file", "give a file name")
    if suffix and not parts[-1].lower().endswith(suffix.lower()):
        parts[-1] += suffix
    target = Path(folder).joinpath(*[p for p in parts if p not in ("", ".")])
    real_folder = os.path.realpath(folder)
    real_target = os.path.realpath(target)
    try:
        inside = os.path.commonpath([real_folder, real_target]) == real_folder != real_target
    except ValueError:  # different drives on Windows
        inside = False
    if not inside:
        raise PathEscape(f"output name {text!r} leads outside {folder} through a symbolic link",
                         "give a name inside the folder")
    return target
