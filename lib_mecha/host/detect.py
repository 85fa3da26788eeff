"""Which host are we in? Feature detection first; version strings only confirm (webui-host §7.1)."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Optional


def _spec(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _forge_version() -> Optional[str]:
    try:
        return str(importlib.import_module("modules_forge.forge_version").version)
    except Exception:
        return None


def detect_flavour() -> str:
    """``"forge2"``, ``"neo"``, ``"forge1"``, ``"a1111"`` or ``"standalone"``."""
    if "modules" not in sys.modules and not _spec("modules.sd_models"):
        return "standalone"
    try:
        sd_models = importlib.import_module("modules.sd_models")
    except Exception:
        return "standalone"
    version = _forge_version()
    if _spec("backend.loader") and hasattr(sd_models, "forge_model_reload"):
        if version == "neo" or not hasattr(sd_models, "load_model"):
            return "neo"
        return "forge2"
    if _spec("ldm_patched") and hasattr(sd_models, "load_model"):
        return "forge1"
    return "a1111"


def make_host(flavour: Optional[str] = None, **standalone_args):
    """A Host for ``flavour`` (detected when None). ``standalone_args`` go to StandaloneHost."""
    flavour = flavour or detect_flavour()
    if flavour == "forge2":
        from .forge import Forge2Host
        return Forge2Host()
    if flavour == "neo":
        from .neo import NeoHost
        return NeoHost()
    if flavour == "forge1":
        from .forge1 import Forge1Host
        return Forge1Host()
    if flavour == "a1111":
        from .a1111 import A1111Host
        return A1111Host()
    from .standalone import StandaloneHost
    return StandaloneHost(**standalone_args)
