"""Path rules shared by every host: what is inside the model folders, and safe output names."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, List, Optional

from ..errors import OutputExists, PathEscape

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._\- ()\[\]+]")


def unique_dirs(dirs: Iterable[Optional[os.PathLike]]) -> List[Path]:
    """Absolute, de-duplicated folders, in order; ``None`` and empty entries are skipped."""
    out: List[Path] = []
    for d in dirs:
        if not d:
            continue
        p = Path(os.path.abspath(os.path.expanduser(str(d))))
        if p not in out:
            out.append(p)
    return out


def is_inside(path: os.PathLike, roots: Iterable[os.PathLike]) -> bool:
    """True when ``path`` (symlinks resolved) lies in one of ``roots``."""
    real = Path(os.path.realpath(str(path)))
    for root in roots:
        r = Path(os.path.realpath(str(root)))
        if real == r or r in real.parents:
            return True
    return False


def is_listed_under(path: os.PathLike, roots: Iterable[os.PathLike]) -> bool:
    """True when ``path`` lies in one of ``roots`` as the host walks them: by its name, following
    no link, so a symbolic link inside a model folder counts as inside wherever it leads (the
    WebUI lists and loads such files), and a name with a ``..`` part never does; or, failing
    that, when its real location lies in a root's real location."""
    text = str(path)
    if ".." in re.split(r"[\\/]", text):
        return False
    spelled = os.path.normcase(os.path.abspath(text))
    for root in roots:
        r = os.path.normcase(os.path.abspath(str(root)))
        if spelled == r or spelled.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return is_inside(text, roots)


def require_inside(path: os.PathLike, roots: Iterable[os.PathLike], what: str = "path") -> Path:
    """``path`` if it lies inside ``roots`` (symbolic links resolved: for where files are
    written), else :class:`PathEscape` naming it."""
    roots = list(roots)
    if not is_inside(path, roots):
        raise _outside(path, roots, what)
    return Path(path)


def require_model_file(path: os.PathLike, roots: Iterable[os.PathLike]) -> Path:
    """``path`` if the host could list it from ``roots`` (:func:`is_listed_under`: for inputs,
    which may be links to a shared model store), else :class:`PathEscape` naming it."""
    roots = list(roots)
    if not is_listed_under(path, roots):
        raise _outside(path, roots, "model")
    return Path(path)


def _outside(path, roots, what: str) -> PathEscape:
    shown = ", ".join(str(r) for r in roots) or "(none)"
    return PathEscape(f"{what} {str(path)!r} is outside the model folders", f"use a file under one of: {shown}")


def clean_model_name(name: str) -> str:
    """A file stem made of harmless characters (for sentinel names and infotexts)."""
    stem = _SAFE_NAME.sub("_", name).strip(" .")
    return stem[:120] or "merge"


def output_path(name: str, folder: os.PathLike, roots: Iterable[os.PathLike], overwrite: bool = False,
                suffix: str = ".safetensors") -> Path:
    """Where a save named ``name`` goes inside ``folder``.

    ``name`` may contain sub-folders but must stay inside ``folder``, which itself must lie in
    ``roots``. The suffix is added when missing.

    Raises:
        PathEscape: the name is absolute, climbs out with ``..``, or the folder is outside ``roots``.
        OutputExists: the file exists and ``overwrite`` is false.
    """
    raw = str(name).strip()
    if not raw:
        raise PathEscape("save name is empty", "type a file name")
    if os.path.isabs(raw) or raw.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", raw):
        raise PathEscape(f"save name {raw!r} is an absolute path", "give a name relative to the save folder")
    parts = re.split(r"[\\/]+", raw)
    if any(p in ("..", "") for p in parts):
        raise PathEscape(f"save name {raw!r} leaves the save folder", "remove '..' and empty parts")
    if not raw.lower().endswith(suffix):
        raw += suffix
    base = require_inside(folder, roots, "save folder")
    target = Path(os.path.abspath(os.path.join(str(base), *re.split(r"[\\/]+", raw))))
    require_inside(target.parent if target.parent.exists() else base, [base], "save name")
    if not is_inside(target, [base]):
        raise PathEscape(f"save name {name!r} leaves the save folder {str(base)!r}")
    if target.exists() and not overwrite:
        raise OutputExists(target)
    return target
