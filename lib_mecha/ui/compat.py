"""The small part of gradio that differs between 3.41 (A1111) and 4.40 (Forge): chosen at runtime.

Only keyword arguments common to both versions are used anywhere else in the tab; the few that
differ go through these helpers (webui-host §5.2).
"""
from __future__ import annotations

from typing import Any, Dict, Optional


def gradio_major() -> int:
    import gradio
    return int(gradio.__version__.split(".")[0])


def js_kw(code: Optional[str]) -> Dict[str, Any]:
    """The keyword that attaches client-side JS to an event: ``_js`` in gradio 3, ``js`` in 4."""
    if not code:
        return {}
    return {"_js" if gradio_major() < 4 else "js": code}


def job_kw() -> Dict[str, Any]:
    """Listener keywords for job buttons (merge, save, cancel) and the listeners following a job.

    gradio's own loading overlay is hidden: it would cover the tab's progress bar. gradio 4 runs
    one event per listener at a time by default, so a second click on Merge would wait in the
    queue and start a second merge when the first ends; with no limit the click runs at once and
    the tab's job guard refuses it with a message. gradio 3 has no such limit.
    """
    kw: Dict[str, Any] = {"show_progress": "hidden"}
    if gradio_major() >= 4:
        kw["concurrency_limit"] = None
    return kw


def quiet_kw() -> Dict[str, Any]:
    """Listener keywords for the many small edit events: no spinner over the edited widget, and
    (gradio 4, which runs different listeners in parallel) one shared queue, so that edits are
    applied, and their renders delivered, in the order they were made."""
    kw: Dict[str, Any] = {"show_progress": "hidden"}
    if gradio_major() >= 4:
        kw.update(concurrency_id="mecha_edit", concurrency_limit=1)
    return kw
