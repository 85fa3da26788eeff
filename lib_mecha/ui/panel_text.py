"""The recipe as .mecha text: always the current recipe; paste or upload one to rebuild the builder."""
from __future__ import annotations

import os
import tempfile
from typing import Any, List, Optional

from .recipe_io import compile_session, load_text
from .session import Session
from .widgets import keep, kind_of, message_here, message_html, update


def read_upload(value) -> str:
    """The text of an uploaded file (``gr.File(type="binary")`` gives bytes in both gradio versions)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else b""
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif hasattr(value, "read"):
        data = value.read()
    else:
        with open(getattr(value, "name", value), "rb") as f:
            data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return ""


def download_path(text: str, folder: Optional[str] = None) -> str:
    """A ``recipe.mecha`` file holding ``text``, in a fresh temporary folder (gradio serves it)."""
    folder = folder or tempfile.mkdtemp(prefix="mecha-")
    path = os.path.join(folder, "recipe.mecha")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return path


class TextPanel:
    def __init__(self, ctx):
        self.ctx = ctx

    def build(self) -> None:
        import gradio as gr
        with gr.Accordion(".mecha recipe", open=True, elem_id="mecha_text_panel"):
            self.text = gr.Textbox(value="", lines=10, max_lines=40, label="Recipe (.mecha)",
                                   elem_id="mecha_recipe_text", show_copy_button=True,
                                   placeholder="The recipe of the builder appears here. Paste a .mecha recipe and "
                                               "press 'Load into builder' to rebuild the builder from it.")
            self.message = gr.HTML("", elem_id="mecha_text_message")
            with gr.Row():
                self.load = gr.Button("Load into builder", elem_id="mecha_text_load", scale=1)
                self.download = gr.Button("Download .mecha", elem_id="mecha_text_download", scale=1)
            with gr.Row():
                self.upload = gr.File(label="Upload a .mecha", file_types=[".mecha", ".txt"], type="binary",
                                      elem_id="mecha_text_upload", scale=1, height=110)
                self.file = gr.File(label="Download", visible=False, interactive=False, elem_id="mecha_text_file",
                                    scale=1, height=110)

    def outputs(self) -> List[Any]:
        return [self.text, self.message]

    def render(self, session: Session) -> List[Any]:
        compiled = compile_session(session)
        parts = []
        if session.text_message:
            parts.append(message_html(session.text_message, kind_of(session.text_message)))
        if compiled.problem:
            parts.append(message_html(compiled.problem, "warning" if compiled.problem.startswith("incomplete")
                                      else "error"))
        parts.extend(message_html(w, "warning") for w in compiled.warnings)
        own = message_here(session, "text")
        if own:
            parts.insert(0, message_html(own, kind_of(own)))
        # a recipe that does not compile leaves the last one in the box: the problem is shown,
        # and what the user had is not wiped out by a half-made edit
        text = update(value=compiled.text) if compiled.node is not None else keep()
        return [text, update(value="".join(parts))]

    def render_message_only(self, session: Session) -> List[Any]:
        """After a failed paste: the user's text stays in the box for fixing; only the message changes."""
        return [update(), update(value=message_html(session.text_message, "error"))]

    def load_from(self, session: Session, text: str) -> bool:
        return load_text(session, text, self.ctx.catalog)
