"""Our axes in the host's own X/Y/Z plot (``scripts/xyz_grid.py`` of A1111 and Forge).

Added in ``on_before_ui``, the way other extensions add axes (webui-host §4.4): the host loads
each scripts file as a module named after the file, kept out of ``sys.modules``
(``modules/script_loading.py``), and lists every Script class in ``modules.scripts.scripts_data``
as ``ScriptClassData(script_class, path, basedir, module)``; the X/Y/Z plot's module holds
``AxisOption(label, type, apply, format_value=, confirm=, cost=, choices=, prepare=)`` and the list
``axis_options`` that its ``Script.ui()`` reads when the UI is built, after ``on_before_ui``.
Reload UI runs the script again with a fresh list; labels already in a list are not added again.

When the script is missing, renamed, or its ``AxisOption`` takes other arguments, no axis is
added and nothing else changes. What each axis does is in :mod:`.xyz_axes` and :mod:`.grid`.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any, Callable, Optional

from ..errors import HostError, MechaError
from . import grid
from .xyz_axes import AXES, Axis

XYZ_MODULE = "xyz_grid.py"
log = logging.getLogger("lib_mecha.host")
HostGetter = Callable[[], Any]


def find_xyz_module():
    """The host's X/Y/Z plot module, or None."""
    try:
        scripts = importlib.import_module("modules.scripts")
    except ImportError:
        return None
    for data in list(getattr(scripts, "scripts_data", None) or ()):
        if getattr(getattr(data, "script_class", None), "__module__", None) != XYZ_MODULE:
            continue
        module = getattr(data, "module", None)
        if isinstance(getattr(module, "axis_options", None), list) and callable(getattr(module, "AxisOption", None)):
            return module
    return None


def add_axes(current_host: HostGetter) -> int:
    """Append our axes to the X/Y/Z plot's list; returns how many were added."""
    module = find_xyz_module()
    if module is None:
        return 0
    have = {getattr(option, "label", None) for option in module.axis_options}
    added = 0
    for axis in AXES:
        if axis.label in have:
            continue
        try:
            option = module.AxisOption(axis.label, axis.kind, _apply(axis), format_value=_format(axis),
                                       confirm=_confirm(axis, current_host), cost=axis.cost,
                                       choices=_choices(axis, current_host), prepare=_prepare(axis))
        except TypeError as exc:   # another AxisOption than A1111's and Forge's
            log.warning("Mecha: the X/Y/Z plot's AxisOption differs (%s); its Mecha axes are left out", exc)
            return added
        module.axis_options.append(option)
        added += 1
    return added


def _webui_host(current_host: HostGetter):
    host = current_host()
    if host is None or not hasattr(host, "hot_load_within"):
        raise HostError("the Mecha axes need the Mecha extension running in the WebUI")
    return host


def _confirm(axis: Axis, current_host: HostGetter):
    def confirm(p, values):
        grid.check_axis(grid.session_for(_webui_host(current_host), p), axis, values)
    return confirm


def _apply(axis: Axis):
    def apply(p, value, values):
        edits = grid.add_cell_value(p, axis, value)
        if edits is not None:
            grid.run_cell(p, edits)
    return apply


def _prepare(axis: Axis):
    if axis.prepare is None:
        return None

    def prepare(text):
        try:
            return axis.prepare(text)
        except MechaError as exc:
            exc.message = f"{axis.label}: {exc.message}"
            exc.args = (exc.format_message(),)
            raise
    return prepare


def _format(axis: Axis):
    def format_value(p, option, value):
        return axis.shown(value)
    return format_value


def _choices(axis: Axis, current_host: HostGetter) -> Optional[Callable[[], list]]:
    if axis.choices is None:
        return None

    def choices():
        try:
            return axis.choices(current_host())
        except Exception as exc:  # a list for a dropdown must never break the host's UI
            log.warning("Mecha: listing the values of %s failed: %s", axis.label, exc)
            return []
    return choices
