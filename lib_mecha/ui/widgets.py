"""Shared bits of the panels: the update helper, the event wiring, and value formatting.

Every panel follows one pattern: ``build()`` creates its components inside the current gradio
context, ``outputs()`` lists the components it renders, and ``render(session)`` returns one
``gr.update`` per output, in the same order. Event handlers edit the session under its lock,
then return the renders of the panels the edit affects.
"""
from __future__ import annotations

import html
import logging
from typing import Any, Callable, List, Optional, Sequence

from ..errors import MechaError
from .compat import quiet_kw

log = logging.getLogger("lib_mecha.ui")


def update(**kw) -> Any:
    import gradio as gr
    return gr.update(**kw)


def keep() -> Any:
    """An update that changes nothing."""
    import gradio as gr
    return gr.update()


def message_html(text: str, kind: str = "info") -> str:
    """A one-line message; ``kind`` is info, warning or error (styled by style.css)."""
    if not text:
        return ""
    return f'<div class="mecha-msg mecha-msg-{kind}">{html.escape(text)}</div>'


def message_here(session, at: str) -> str:
    """The message of the last edit when it was made in panel ``at`` (else none)."""
    return session.message if session.message and session.message_at == at else ""


def kind_of(text: str) -> str:
    low = text.lower()
    if low.startswith(("warning", "not used", "model not found")):
        return "warning"
    if any(w in low for w in ("cannot", "error", "not ", "missing", "unknown", "refused", "failed", "needs",
                              "incomplete", "line ", "out of range", "busy", "running")):
        return "error"
    return "info"


class Region:
    """A named group of outputs and its render function, for :func:`wire`."""

    def __init__(self, outputs: Sequence[Any], render: Callable[[Any], List[Any]]):
        self.outputs = list(outputs)
        self.render = render


def wire(event: Callable, session_state, fn: Callable, inputs: Sequence[Any], regions: Sequence[Region],
         at: str, **kw) -> None:
    """Attach ``fn(session, *values)`` to ``event``; afterwards render ``regions``.

    The edit runs under the session's lock; a MechaError becomes the session's message, shown
    next to the control that was used: in the panel named by ``at``.
    """
    outputs = [o for r in regions for o in r.outputs]

    def handler(session, *values):
        with session.lock:
            session.message = ""
            session.message_at = at
            session.text_message = ""
            try:
                fn(session, *values)
            except MechaError as e:
                session.message = e.format_message()
            except Exception as e:  # a bug: keep the tab usable, show one line, log the traceback
                log.exception("Mecha tab: %s failed", getattr(fn, "__name__", "an edit"))
                session.message = f"unexpected error: {type(e).__name__}: {e}"
            out: List[Any] = []
            for r in regions:
                out.extend(r.render(session))
            return out if len(out) != 1 else out[0]

    options = dict(quiet_kw())
    options.update(kw)
    event(handler, inputs=[session_state, *inputs], outputs=outputs, **options)


def optional_index(value: Optional[str]) -> Optional[int]:
    """``"2. weighted_sum(a, b)"`` → 1."""
    if not value:
        return None
    head = str(value).split(".", 1)[0].strip()
    return int(head) - 1 if head.isdigit() else None
