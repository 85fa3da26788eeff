"""An X/Y/Z plot over Mecha axes, from its first axis's check to the end of its request.

The host's X/Y/Z plot script (``scripts/xyz_grid.py`` in A1111 and Forge) runs inside the host's
txt2img/img2img request, which holds the host's lock (and, on Forge, runs on its main thread):

1. before any cell, it calls each axis's ``confirm(p, values)`` with the request's processing
   object ``p``: the first Mecha axis opens a :class:`GridSession` on ``p``, remembering what the
   model holds (a merge, or the original checkpoint); every axis checks all its values there, so
   a bad value stops the grid before anything is generated or loaded;
2. for each cell it copies ``p`` and calls every axis's ``apply(copy, value, values)``, then
   generates the copy; the last Mecha axis's ``apply`` hot-loads the cell's recipe, so the host
   generates the cell from it (an error there ends the grid, as the host's own apply errors do);
3. the request closes ``p`` when it ends, normally or not (``with closing(p)`` in
   ``modules/txt2img.py``, ``img2img.py`` and ``api/api.py``): the session puts back what the model
   held before, through ``p.close``, which it wraps on that one object for that one request.

A session left open (a request that never closed its ``p``) is finished when the next grid starts,
and dropped when the user loads or restores a merge. Cells and the final restore run under the
host's lock already, so they use ``hot_load_within``/``restore_within``.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import HostError, MechaError
from .base import MergeIdentity
from .recipes import INFOTEXT_KEY

log = logging.getLogger("lib_mecha.host")
SESSION, EDITS = "mecha_grid", "mecha_grid_edits"   # attributes on the host's processing objects
MODEL_AXES = ("Checkpoint name", "Refiner checkpoint")  # the X/Y/Z plot's axes that load another model


@dataclass
class GridSession:
    host: Any
    before: Any                         # LoadedMerge the model held, or None: the original checkpoint
    options: Any                        # the merge options of every cell (the loaded merge's)
    axes: int = 0                       # Mecha axes of the grid: each one's confirm counts
    values: List[Tuple[Any, List[Any]]] = field(default_factory=list)   # (axis, its values) checked
    checked: set = field(default_factory=set)                # cell recipes already planned
    files: Dict[str, Any] = field(default_factory=dict)      # recipe files read by the recipe axis
    cells: List[Dict[str, Any]] = field(default_factory=list)
    finished: Optional[Dict[str, Any]] = None

    @property
    def base(self):
        """The recipe the axes vary (None without a loaded merge)."""
        return None if self.before is None else self.before.recipe

    def drop(self, why: str) -> None:
        """Never put anything back: the model was loaded or restored by the user since."""
        if self.finished is None:
            self.finished = {"keys": 0, "seconds": 0.0, "error": None, "dropped": why}

    def report(self) -> Dict[str, Any]:
        """Plain data for ``GET /mecha/v1/status``: what each cell merged, and the restore."""
        return {"state": "running" if self.finished is None else "done", "cells": list(self.cells),
                "restore": self.finished}


def session_for(host, p) -> GridSession:
    """The grid session of the request ``p`` (opened by the first Mecha axis's confirm)."""
    session = p.__dict__.get(SESSION)
    if session is not None:
        return session
    stale = host._grid
    if stale is not None:
        finish(stale)
    before = host.loaded_merge()
    if before is not None and host.pending_selection() is not None:
        raise HostError(f"the WebUI has {host.pending_selection()} selected and would load it for this grid, "
                        f"dropping the merge {before.ident.display_name}",
                        "press Merge & load again to merge into it, or select the merge's checkpoint back")
    session = GridSession(host, before, before.options if before is not None else _fresh_options(host))
    setattr(p, SESSION, session)
    _close_ends(p, session)
    host._grid = host._last_grid = session
    return session


def _fresh_options(host):
    import lib_mecha
    from .settings import merge_option_values
    return lib_mecha.MergeOptions(**merge_option_values(host, for_hot_load=True))


def _close_ends(p, session: GridSession) -> None:
    """``p.close()`` (the request's end) finishes the session, then closes ``p`` as before."""
    close = p.close

    def close_and_finish():
        try:
            close()
        finally:
            finish(session)
    p.close = close_and_finish


def check_axis(session: GridSession, axis, values) -> None:
    """An axis's ``confirm``: every cell its values make with the values of the Mecha axes checked
    before it is built (ranges, steps, parameters, presets, methods) and, where the keys or the
    architecture may change, planned against the loaded model. Raises the first problem, naming
    the cell's values; nothing is loaded or generated."""
    if axis.varies_merge and session.before is None:
        raise HostError(f"{axis.label}: no merge is loaded, and this axis varies the loaded merge's recipe",
                        "load one with Merge & load in the Mecha tab (or POST /mecha/v1/merge), then start the grid")
    session.axes += 1
    session.values.append((axis, list(values)))
    for cell in itertools.product(*[[(a, v) for v in vals] for a, vals in session.values]):
        try:
            recipe = cell_recipe(session, cell)
            if any(a.planned for a, _ in cell) and recipe not in session.checked:
                session.host.check_hot_load(recipe, session.options, "this cell's merge")
                session.checked.add(recipe)
        except MechaError as exc:
            where = " with ".join(f"{a.label} = {v}" for a, v in cell)
            exc.message = f"{where}: {exc.message}"
            exc.args = (exc.format_message(),)
            raise


def add_cell_value(p, axis, value) -> Optional[Tuple]:
    """Record one axis's value on a cell's copy of ``p``; returns every Mecha axis's ``(axis,
    value)`` once all are recorded (then the cell's recipe is complete), else None."""
    session = p.__dict__.get(SESSION)
    if session is None:
        raise HostError(f"{axis.label}: the X/Y/Z plot did not check this axis's values before the grid",
                        "this version of the X/Y/Z plot script is not supported")
    p.__dict__.pop("close", None)   # a cell is not the request: only the request's own p ends the grid
    edits = p.__dict__.get(EDITS, ()) + ((axis, value),)
    setattr(p, EDITS, edits)
    return edits if len(edits) == session.axes else None


def cell_recipe(session: GridSession, edits):
    """The loaded recipe with every axis's value applied (a recipe file first, then a method,
    then values), as a node whose fresh seeds are the host's."""
    recipe = session.base
    for axis, value in sorted(edits, key=lambda e: e[0].order):
        recipe = axis.variant(session, recipe, value)
    return session.host.pin_seeds(recipe)


def run_cell(p, edits) -> None:
    """Hot-load the cell's recipe into the running model and name it in the cell's infotext."""
    import lib_mecha
    session: GridSession = p.__dict__[SESSION]
    _refuse_model_axes()
    recipe = cell_recipe(session, edits)
    ident = MergeIdentity.from_recipe(lib_mecha.serialize(recipe))
    report = session.host.hot_load_within(recipe, ident, session.options)
    p.extra_generation_params = {**(p.extra_generation_params or {}), INFOTEXT_KEY: ident.short_id}
    cell = {"recipe_id": ident.short_id, "keys_merged": report.keys_merged, "keys_total": report.keys_total,
            "seconds": round(report.seconds, 3)}
    session.cells.append(cell)
    print(f"[Mecha] X/Y/Z cell {len(session.cells)}: recipe {ident.short_id}, merged {report.keys_merged} "
          f"of {report.keys_total} keys in {report.seconds:.1f} s")


def _refuse_model_axes() -> None:
    """The X/Y/Z plot names its three axes in ``shared.state.xyz_plot_x/y/z`` (``AxisInfo(axis,
    values)``) before the first cell; an axis that loads another checkpoint per cell would drop
    each cell's merge before it is generated."""
    import importlib
    try:
        state = importlib.import_module("modules.shared").state
    except ImportError:
        return
    for name in ("xyz_plot_x", "xyz_plot_y", "xyz_plot_z"):
        label = getattr(getattr(getattr(state, name, None), "axis", None), "label", None)
        if label in MODEL_AXES:
            raise HostError(f"the Mecha axes cannot be combined with the X/Y/Z plot's {label!r} axis: it loads "
                            "another model for each cell, which drops the cell's merge",
                            "vary the checkpoints in a Mecha: recipe axis instead")


def finish(session: GridSession) -> None:
    """Put back what the model held before the grid (once). Errors are logged, not raised: the
    request is ending, and the host has reloaded the checkpoint itself when a key could not be
    put back (:meth:`HotLoading.restore_within`)."""
    host = session.host
    if session.finished is not None:
        return
    started = time.perf_counter()
    session.finished = {"keys": 0, "seconds": 0.0, "error": None, "dropped": None}
    try:
        before = session.before
        if before is None:
            report = host.restore_within()
            keys = report.keys_restored if report is not None else 0
        elif host.hot_loaded() != before.ident:
            report = host.hot_load_within(before.recipe, before.ident, before.options)
            keys = report.keys_merged + report.keys_restored
        else:
            keys = 0
        session.finished["keys"] = keys
    except MechaError as exc:
        session.finished["error"] = exc.format_message()
        log.error("Mecha: putting back the model after the X/Y/Z plot failed: %s", exc.format_message())
    except Exception as exc:  # never mask the request's own outcome
        session.finished["error"] = f"{type(exc).__name__}: {exc}"
        log.error("Mecha: putting back the model after the X/Y/Z plot failed", exc_info=exc)
    finally:
        session.finished["seconds"] = round(time.perf_counter() - started, 3)
        with contextlib.suppress(Exception):
            if host._grid is session:
                host._grid = None
