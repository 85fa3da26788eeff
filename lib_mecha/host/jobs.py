"""Merge jobs run for the REST routes (and usable by the UI): one at a time, with status.

A job reads a .mecha text, checks that every model it names lies inside the host's model folders,
merges with the settings' options, then either hot-loads the result (under the host's lock) or
saves it into the checkpoint folder and refreshes the host's lists.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import Busy, MechaError, MergeCancelled, ModelNotFound, PathEscape
from .base import MergeIdentity
from .paths import output_path, require_inside
from .settings import merge_option_values

HOT_LOAD, FILE = "hot-load", "file"


def check_recipe_paths(node, host) -> None:
    """Every model of the recipe must resolve to a file inside the host's model folders.

    Raises :class:`PathEscape` for a path outside them and :class:`ModelNotFound` when a relative
    name matches no file in the checkpoint/LoRA folders.
    """
    from ..recipe import models_of
    roots = host.model_roots()
    search = [*host.checkpoint_dirs(), *host.lora_dirs()]
    for node_ in models_of(node):
        path = str(node_.path)
        if os.path.isabs(path):
            require_inside(path, roots, "model")
            continue
        if ".." in path.replace("\\", "/").split("/"):
            raise PathEscape(f"model {path!r} climbs out of the model folders", "remove '..' from the name")
        names = [path] if path.lower().endswith((".safetensors", ".ckpt", ".pt")) else [path + ".safetensors", path]
        found = [os.path.join(str(d), n) for d in search for n in names if os.path.isfile(os.path.join(str(d), n))]
        if not found:
            raise ModelNotFound(path, [str(d) for d in search])
        require_inside(found[0], roots, "model")


class MergeJobs:
    """Runs at most one merge at a time. ``status()`` is safe to call from any thread."""

    def __init__(self, host):
        self.host = host
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._status: Dict[str, Any] = {"state": "idle"}
        self._thread: Optional[threading.Thread] = None

    def status(self) -> Dict[str, Any]:
        with self._lock:
            out = dict(self._status)
        out["hot_loaded"] = _ident_dict(self.host.hot_loaded())
        return out

    def _update(self, **changes) -> None:
        with self._lock:
            self._status.update(changes)

    def cancel(self) -> bool:
        """Ask the running merge to stop; True if one was running."""
        running = self.status().get("state") == "running"
        if running:
            self._cancel.set()
        return running

    def start(self, recipe_text: str, target: str = HOT_LOAD, name: Optional[str] = None,
              folder: Optional[str] = None, overwrite: bool = False, wait: bool = True) -> Dict[str, Any]:
        """Validate, then merge (in this thread when ``wait``, else in a background thread).

        Raises the MechaError of a bad request before anything runs; errors during the merge
        end up in the status (and are raised too when ``wait``).
        """
        import lib_mecha
        node = lib_mecha.deserialize(recipe_text)
        check_recipe_paths(node, self.host)
        output = None
        if target == FILE:
            base = self.host.default_save_dir()
            folder_path = Path(os.path.abspath(base / folder)) if folder else base
            output = output_path(name or "", folder_path, self.host.checkpoint_dirs(), overwrite=overwrite)
        elif target != HOT_LOAD:
            raise MechaError(f"unknown merge target {target!r}", f"use {HOT_LOAD!r} or {FILE!r}")
        display = Path(output).stem if output else (Path(name).stem if name else None)
        ident = MergeIdentity.from_recipe(recipe_text, display)
        self.host.run_exclusive(lambda: None, job="the merge")  # Busy while a generation runs
        with self._lock:
            if self._status.get("state") == "running":
                raise Busy("another merge is running", "wait for it, or cancel it")
            job_id = uuid.uuid4().hex[:12]
            self._status = {"state": "running", "job": job_id, "target": target, "done": 0, "total": 0,
                            "bytes": 0, "message": "", "started": time.time(), "recipe_id": ident.short_id}
            self._cancel.clear()
        args = (node, ident, target, output, overwrite)
        if wait:
            self._run(*args, reraise=True)
            return self.status()
        self._thread = threading.Thread(target=self._run, args=args, name="mecha-merge", daemon=True)
        self._thread.start()
        return self.status()

    def _run(self, node, ident, target, output, overwrite, reraise=False) -> None:
        import lib_mecha
        t0 = time.time()
        try:
            values = merge_option_values(self.host, for_hot_load=(target == HOT_LOAD))
            values["overwrite"] = bool(overwrite)
            options = lib_mecha.MergeOptions(**values)
            if output is not None:
                Path(output).parent.mkdir(parents=True, exist_ok=True)  # validated inside the save folder
            result = lib_mecha.merge(node, None if output is None else str(output), options=options,
                                     progress=lambda d, t, b=0: self._update(done=d, total=t, bytes=b),
                                     cancel=self._cancel)
            self.host.recipes.remember(ident)
            if target == HOT_LOAD:
                self._update(message="hot-loading")
                self.host.hot_load(result.state_dict, ident, wait=600.0)
                info: Dict[str, Any] = {"hot_loaded": _ident_dict(ident)}
            else:
                self.host.run_exclusive(self.host.refresh_checkpoints, job="refresh", wait=600.0)
                info = {"path": str(result.path or output)}
            info["skipped"] = len(getattr(result, "skipped", ()) or ())
            self._update(state="done", result=info, seconds=round(time.time() - t0, 3), message="")
        except Exception as exc:
            cancelled = isinstance(exc, MergeCancelled)
            message = exc.format_message() if isinstance(exc, MechaError) else f"{type(exc).__name__}: {exc}"
            self._update(state="cancelled" if cancelled else "error", message=message,
                         seconds=round(time.time() - t0, 3))
            if reraise:
                raise


def _ident_dict(ident: Optional[MergeIdentity]) -> Optional[Dict[str, str]]:
    if ident is None:
        return None
    return {"name": ident.display_name, "recipe_id": ident.short_id, "hash": ident.h10}
