"""The extension's wiring into the WebUI's callbacks; ``scripts/mecha.py`` only calls :func:`setup`.

Everything registered here is undone in ``on_script_unloaded`` (Reload UI re-runs the scripts file
but keeps ``lib_mecha`` imported, webui-host §1.5): a hot-loaded merge is restored, the merge job
is cancelled, and the module state is dropped.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from .detect import make_host
from .jobs import MergeJobs
from .recipes import INFOTEXT_KEY
from .settings import options

TAB = ("Mecha", "mecha")
# Python files defining the user's own merge methods (README, "Your own merge methods")
USER_METHODS = Path(__file__).resolve().parents[2] / "user_methods"
_state: Dict[str, Any] = {}


def current_host():
    """The host adapter of the running extension (None before :func:`setup`)."""
    return _state.get("host")


def current_jobs() -> Optional[MergeJobs]:
    return _state.get("jobs")


def setup(script_callbacks, host=None) -> None:
    """Create the host adapter and register every callback of the extension."""
    from ..engine import hashes
    host = host or make_host()
    _state.update(host=host, jobs=MergeJobs(host))
    hashes.use_folder(host.data_dir())  # the input hash cache follows the host's --data-dir
    load_user_methods(USER_METHODS)  # before the tab is built, which lists every registered method
    script_callbacks.on_ui_settings(_on_ui_settings)
    script_callbacks.on_ui_tabs(_on_ui_tabs)
    script_callbacks.on_app_started(_on_app_started)
    script_callbacks.on_before_ui(_on_before_ui)
    script_callbacks.on_model_loaded(_on_model_loaded)
    script_callbacks.on_script_unloaded(_on_unloaded)


def load_user_methods(folder: Path) -> None:
    """Register the merge methods of every ``*.py`` file in ``folder``; a file that fails is named
    on the console and skipped, and the extension works without its methods."""
    from ..errors import MechaError
    from ..methods.user_files import load_method_files, method_files
    if not folder.is_dir():
        return
    for file in method_files(folder):
        try:
            names = load_method_files([file])
        except MechaError as e:
            print(f"[Mecha] {e.format_message()}", file=sys.stderr)
            continue
        if names:
            print(f"[Mecha] merge methods from {file.name}: {', '.join(names)}")


def _on_ui_settings() -> None:
    host = current_host()
    if host is not None:
        host.register_options(options())


def _on_ui_tabs():
    host = current_host()
    try:
        ui = importlib.import_module("lib_mecha.ui")
    except ImportError:
        return []
    create_tab = getattr(ui, "create_tab", None)
    if host is None or create_tab is None:
        return []
    return [(create_tab(host), *TAB)]


def _on_before_ui() -> None:
    """Our axes join the host's X/Y/Z plot before its UI reads the axis list (host/xyz.py)."""
    from .xyz import add_axes
    try:
        add_axes(current_host)
    except Exception as exc:  # the X/Y/Z plot is the host's: never break its start-up
        print(f"[Mecha] the X/Y/Z plot's Mecha axes were not added: {type(exc).__name__}: {exc}", file=sys.stderr)


def _on_app_started(demo, app) -> None:
    host, jobs = current_host(), current_jobs()
    if host is None or not hasattr(host, "name") or host.name == "standalone":
        return
    cmd_opts = importlib.import_module("modules.shared").cmd_opts
    # Our routes exist where the host's API exists, and carry the same protection (webui-host §1.8).
    if not (getattr(cmd_opts, "api", False) or getattr(cmd_opts, "nowebui", False)):
        return
    from .api import add_routes
    add_routes(app, host, jobs, getattr(cmd_opts, "api_auth", None) or "")


def _on_model_loaded(sd_model) -> None:
    host = current_host()
    notice = getattr(host, "notice_model_loaded", None)
    if notice is not None:
        notice(sd_model)


def _on_unloaded() -> None:
    host, jobs = current_host(), current_jobs()
    if jobs is not None:
        jobs.cancel()
    if host is not None:
        host.close()
    _state.clear()
    from ..engine import hashes
    hashes.use_folder(None)


def script_class():
    """An always-visible txt2img/img2img Script that adds ``Mecha recipe: <id>`` to the infotext of
    every generation made while a merge is hot-loaded (built here so that ``modules`` is only
    imported when the WebUI loads the scripts file)."""
    scripts = importlib.import_module("modules.scripts")

    class MechaRecipeInfotext(scripts.Script):
        def title(self):
            return "Mecha recipe infotext"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process(self, p, *args):
            host = current_host()
            ident = host.hot_loaded() if host is not None else None
            if ident is not None:
                p.extra_generation_params.setdefault(INFOTEXT_KEY, ident.short_id)

    return MechaRecipeInfotext
