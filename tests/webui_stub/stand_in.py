"""Install the stand-in WebUI for one test: ``install("a1111" | "forge2", root)``.

Purges any earlier stand-in (``modules``, ``backend``, ``modules_forge``, ``launch``) and lib_mecha's
host modules from ``sys.modules``, puts this folder (and, for Forge, ``forge/``) first on
``sys.path``, and points the WebUI's folders at ``root``. Returns the imported ``modules`` package.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PURGE = ("modules", "backend", "modules_forge", "launch", "networks")


def purge() -> None:
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in PURGE):
            del sys.modules[name]
    for extra in (str(HERE), str(HERE / "forge")):
        while extra in sys.path:
            sys.path.remove(extra)
    os.environ.pop("STUB_WEBUI_ROOT", None)


def install(flavour: str, root: os.PathLike):
    purge()
    root = Path(root)
    (root / "models" / "Stable-diffusion").mkdir(parents=True, exist_ok=True)
    (root / "models" / "Lora").mkdir(parents=True, exist_ok=True)
    (root / "models" / "VAE").mkdir(parents=True, exist_ok=True)
    os.environ["STUB_WEBUI_ROOT"] = str(root)
    if flavour == "forge2":
        sys.path.insert(0, str(HERE / "forge"))
    sys.path.insert(0, str(HERE))
    flav = importlib.import_module("modules._flavour")
    flav.FLAVOUR = flavour
    return importlib.import_module("modules")
