"""Status line, Merge & load / Restore, Save (with overwrite confirmation), progress and Cancel,
and the preview panel.

A job button has two listeners: a quick one that starts the job (or says at once why not: a
job is running, the name is refused) and, chained after it, one that follows the job, yielding
its progress until it ends. So the button is free again at once, and a second press always gets
an answer. Each button's progress, Cancel and messages appear next to it (:class:`Feedback`).
"""
from __future__ import annotations

import html
import logging
import time
from typing import Any, Callable, Iterator, List, Optional

from ..errors import MechaError, OutputExists
from . import actions
from ..jobs import RUNNER, Job
from .recipe_io import compile_session
from .session import Session
from .widgets import keep, kind_of, message_html, update

POLL = 0.25
log = logging.getLogger("lib_mecha.ui")


def progress_html(job: Optional[Job]) -> str:
    """The progress bar of a job: what it does, the share done, an ETA; or its outcome."""
    if job is None:
        return ""
    if not job.finished.is_set():
        pct = job.fraction * 100
        eta = job.eta()
        parts = [f"{job.label}: {job.phase}"]
        if job.total:
            parts.append(f"{pct:.0f}% ({job.done} of {job.total} keys)")
        if eta is not None:
            parts.append(f"about {format_seconds(eta)} left")
        state = "running"
    else:
        pct = 100.0 if job.error is None else job.fraction * 100
        state = "done" if job.error is None else ("cancelled" if job.cancelled else "error")
        word = {"done": "done", "cancelled": "cancelled", "error": "failed"}[state]
        parts = [f"{job.label}: {word} after {format_seconds(job.elapsed)}"]
    text = html.escape(" · ".join(parts))
    return (f'<div class="mecha-progress" data-state="{state}" data-done="{job.done}" data-total="{job.total}">'
            f'<div class="mecha-progress-bar" style="width:{pct:.1f}%"></div>'
            f'<div class="mecha-progress-text">{text}</div></div>')


def error_text(e: BaseException) -> str:
    """A readable line for any failure: the MechaError's message, or the type of a bug (logged)."""
    if isinstance(e, MechaError):
        return e.format_message()
    log.error("Mecha tab: unexpected error", exc_info=e)
    return f"unexpected error: {type(e).__name__}: {e}"


def format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def outcome_kind(job: Job, message: str) -> str:
    if job.error is None:
        return "warning" if "; warning: " in message else "info"
    return "warning" if job.cancelled else "error"


class Feedback:
    """Progress bar, Cancel and message of one place of the tab (Merge & load, Save)."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def build(self) -> None:
        import gradio as gr
        with gr.Row(elem_id=f"{self.prefix}_progress_row", elem_classes=["mecha-feedback"]):
            self.progress = gr.HTML("", elem_id=f"{self.prefix}_progress")
            self.cancel = gr.Button("Cancel", variant="stop", elem_id=f"{self.prefix}_cancel", size="sm", scale=0,
                                    min_width=90, visible=False)
        self.message = gr.HTML("", elem_id=f"{self.prefix}_message")

    def outputs(self) -> List[Any]:
        return [self.progress, self.cancel, self.message]

    def render(self, job: Optional[Job], message: Optional[str] = None, kind: Optional[str] = None) -> List[Any]:
        """The job's bar and Cancel; ``message=None`` leaves the message as it is."""
        running = job is not None and not job.finished.is_set()
        return [update(value=progress_html(job)), update(visible=running), self._message(message, kind)]

    def say(self, message: str, kind: Optional[str] = None) -> List[Any]:
        """Only a message; the bar stays as it is (a refused second job leaves the first one's)."""
        return [keep(), keep(), self._message(message, kind)]

    @staticmethod
    def _message(message: Optional[str], kind: Optional[str]) -> Any:
        if message is None:
            return keep()
        return update(value=message_html(message, kind or kind_of(message)) if message else "")


class ActionsPanel:
    def __init__(self, ctx):
        self.ctx = ctx
        self.merging = Feedback("mecha")          # ids mecha_progress, mecha_cancel, mecha_message
        self.saving = Feedback("mecha_save")

    @property
    def hot(self) -> bool:
        return actions.can_hot_load(self.ctx.host)

    def build(self) -> None:
        import gradio as gr
        with gr.Group(elem_id="mecha_actions"):
            with gr.Row():
                self.status = gr.HTML("", elem_id="mecha_status")
                self.status_refresh = gr.Button("↻", elem_id="mecha_status_refresh", scale=0, min_width=40)
            with gr.Column(visible=self.hot, elem_id="mecha_hot_actions"):
                with gr.Row():
                    self.merge = gr.Button("Merge & load", variant="primary", elem_id="mecha_merge", scale=1)
                    self.restore = gr.Button("Restore original", elem_id="mecha_restore", scale=1)
                self.merging.build()

    def build_save(self) -> None:
        import gradio as gr
        with gr.Accordion("Save", open=True, elem_id="mecha_save_panel"):
            self.save_name = gr.Textbox(value="", label="File name", elem_id="mecha_save_name",
                                        placeholder="my-merge (written as my-merge.safetensors in the save folder)")
            with gr.Row():
                self.save_dtype = gr.Dropdown(choices=list(actions.DTYPES), value="fp16", label="dtype",
                                              elem_id="mecha_save_dtype", scale=1, min_width=110)
                self.save_vae = gr.Dropdown(choices=[actions.KEEP_VAE], value=actions.KEEP_VAE, label="VAE",
                                            elem_id="mecha_save_vae", scale=2, min_width=160)
            with gr.Row():
                self.save_ema = gr.Checkbox(value=True, label="Prune EMA weights", elem_id="mecha_save_prune_ema",
                                            scale=2)
                self.save = gr.Button("Save", variant="primary", elem_id="mecha_save", scale=1)
            with gr.Group(visible=False, elem_id="mecha_save_confirm") as self.confirm:
                self.confirm_text = gr.HTML("", elem_id="mecha_save_confirm_text")
                with gr.Row():
                    self.overwrite = gr.Button("Overwrite", variant="stop", elem_id="mecha_save_overwrite")
                    self.keep_file = gr.Button("Keep the file", elem_id="mecha_save_keep")
            self.saving.build()

    def build_preview(self) -> None:
        import gradio as gr
        with gr.Accordion("Preview", open=True, visible=self.hot, elem_id="mecha_preview_panel"):
            self.prompt = gr.Textbox(value="", lines=2, label="Prompt", elem_id="mecha_prompt")
            self.negative = gr.Textbox(value="", lines=1, label="Negative prompt", elem_id="mecha_negative")
            with gr.Row():
                self.seed = gr.Number(value=-1, label="Seed", precision=0, elem_id="mecha_seed", min_width=90)
                self.steps = gr.Slider(1, 60, value=20, step=1, label="Steps", elem_id="mecha_preview_steps")
                self.cfg = gr.Slider(1, 20, value=7, step=0.5, label="CFG", elem_id="mecha_cfg")
            with gr.Row():
                # the WebUI's own size sliders start at 64 and move by 8
                self.width = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id="mecha_width")
                self.height = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id="mecha_height")
            names = actions.samplers(self.ctx.host) if self.hot else []
            self.sampler = gr.Dropdown(choices=names, value=default_sampler(names), label="Sampler",
                                       elem_id="mecha_sampler")
            self.generate = gr.Button("Generate preview", variant="primary", elem_id="mecha_generate")
            with gr.Row(elem_id="mecha_compare_row"):
                self.compare = gr.Button("Compare with the original", elem_id="mecha_compare", scale=2)
                self.compare_diff = gr.Checkbox(value=False, label="Show the difference", elem_id="mecha_compare_diff",
                                                scale=1)
            self.preview_message = gr.HTML("", elem_id="mecha_preview_message")
            self.gallery = gr.Gallery(value=[], label="Preview", columns=2, height=360, elem_id="mecha_gallery")

    # --- status and lists --------------------------------------------------------------------------

    def status_html(self) -> str:
        try:
            text = actions.status_text(self.ctx.host, self.ctx.catalog)
        except MechaError as e:
            text = e.format_message()
        return f'<div class="mecha-status">{html.escape(text)}</div>'

    def vae_choices(self) -> List[str]:
        """Keep the merge's own VAE, a VAE file, or the VAE of a checkpoint."""
        labels = [e.label for e in self.ctx.catalog.vaes()]
        labels += [e.label for e in self.ctx.catalog.checkpoints() if e.label not in labels]
        return [actions.KEEP_VAE] + labels

    def sampler_update(self) -> Any:
        """The host's samplers, re-read when the page loads (extensions may add some after start)."""
        if not self.hot:
            return keep()
        return update(choices=actions.samplers(self.ctx.host))

    # --- outputs of the job buttons --------------------------------------------------------------

    def merge_outputs(self) -> List[Any]:
        return [*self.merging.outputs(), self.status]

    def save_outputs(self) -> List[Any]:
        return [*self.saving.outputs(), self.status, self.confirm, self.confirm_text]

    def _status(self) -> Any:
        return update(value=self.status_html())

    def with_status(self, feedback: List[Any]) -> List[Any]:
        """A place's feedback updates, then the status line's (for Merge & load and extraction)."""
        return feedback + [self._status()]

    def _save_updates(self, feedback: List[Any], confirm: Optional[str] = None) -> List[Any]:
        """``confirm=None`` hides the overwrite prompt; a text shows it."""
        return feedback + [self._status(), update(visible=confirm is not None),
                           update(value=message_html(confirm, "warning") if confirm else "")]

    # --- merge & load ----------------------------------------------------------------------------

    def on_merge(self, session: Session, save_dtype: Optional[str] = None) -> List[Any]:
        """Start merging and hot-loading; answer at once (the follower shows the progress)."""
        with session.lock:
            compiled = compile_session(session)
        if compiled.node is None:
            return self.with_status(self.merging.say(compiled.problem, "error"))
        try:
            job = actions.start_merge(self.ctx.host, self.ctx.catalog, compiled.node, compiled.text,
                                      save_dtype=save_dtype or None)
        except Exception as e:
            return self.with_status(self.merging.say(error_text(e), "error"))
        session.follow("merge", job)
        return self.with_status(self.merging.render(job, ""))

    def follow_merge(self, session: Session) -> Iterator[List[Any]]:
        yield from self.follow(session, "merge", self.merging, actions.merge_done_message, self.with_status)

    def on_restore(self) -> Iterator[List[Any]]:
        """Say at once that the original comes back (streaming it back takes a while), then how it went."""
        yield self.with_status(self.merging.say("restoring the original checkpoint…", "info"))
        try:
            message, kind = actions.restore(self.ctx.host), "info"
        except Exception as e:
            message, kind = error_text(e), "error"
        yield self.with_status(self.merging.say(message, kind))

    # --- save --------------------------------------------------------------------------------------

    def on_save(self, session: Session, name: str, dtype: str, prune_ema: bool, vae: str,
                overwrite: bool = False) -> List[Any]:
        """Start saving; or ask before replacing a file; or say why not, next to the Save button."""
        with session.lock:
            compiled = compile_session(session)
            arch = self.ctx.catalog.architecture_of(session.first_model(len(session.draft) - 1) or "")
        if compiled.node is None:
            return self._save_updates(self.saving.say(compiled.problem, "error"))
        request = actions.SaveRequest(name=(name or "").strip(), dtype=dtype or "fp16", prune_ema=bool(prune_ema),
                                      vae=vae or actions.KEEP_VAE, overwrite=overwrite)
        try:
            job = actions.start_save(self.ctx.host, self.ctx.catalog, compiled.node, request, arch)
        except OutputExists as e:
            with session.lock:
                session.pending_save = request
            return self._save_updates(self.saving.say(""), confirm=actions.overwrite_question(e.path))
        except Exception as e:
            return self._save_updates(self.saving.say(error_text(e), "error"))
        session.follow("save", job)
        return self._save_updates(self.saving.render(job, ""))

    def follow_save(self, session: Session) -> Iterator[List[Any]]:
        yield from self.follow(session, "save", self.saving, actions.save_done_message, self._save_updates)

    def on_overwrite(self, session: Session) -> List[Any]:
        with session.lock:
            request, session.pending_save = session.pending_save, None
        if request is None:
            return self._save_updates(self.saving.say("nothing to overwrite: press Save first", "error"))
        return self.on_save(session, request.name, request.dtype, request.prune_ema, request.vae, overwrite=True)

    def on_keep(self, session: Session) -> List[Any]:
        with session.lock:
            session.pending_save = None
        return self._save_updates(self.saving.say("kept the existing file; nothing saved", "info"))

    # --- following and cancelling ------------------------------------------------------------------

    def follow(self, session: Session, place: str, feedback: Feedback, done_message: Callable[[Job], str],
               wrap: Callable[[List[Any]], List[Any]]) -> Iterator[List[Any]]:
        """Yield the progress of the jobs started from ``place`` until they end, then each outcome.

        Messages are left alone while a job runs: one may say why a second press was refused."""
        answered = False
        while True:
            job = session.take_followed(place)
            if job is None:
                break
            while not job.finished.wait(POLL):
                yield wrap(feedback.render(job))
            message = done_message(job)
            yield wrap(feedback.render(job, message, outcome_kind(job, message)))
            answered = True
        if not answered:  # another listener follows this place's job already
            yield [keep() for _ in wrap(feedback.say(""))]

    def on_cancel(self, feedback: Feedback) -> List[Any]:
        if RUNNER.cancel():
            return feedback.say("cancelling: the job stops after the key in progress", "warning")
        return feedback.say("nothing to cancel: no merge or save is running", "info")

    # --- preview -----------------------------------------------------------------------------------

    @staticmethod
    def preview_params(prompt, negative, seed, steps, cfg, width, height, sampler):
        from ..host.base import PreviewParams
        return PreviewParams(prompt=prompt or "", negative_prompt=negative or "", seed=int(seed or -1),
                             steps=int(steps), cfg_scale=float(cfg), width=int(width), height=int(height),
                             sampler_name=sampler or "Euler a")

    def on_compare(self, prompt, negative, seed, steps, cfg, width, height, sampler, show_difference):
        params = self.preview_params(prompt, negative, seed, steps, cfg, width, height, sampler)
        try:
            images, timing = actions.compare(self.ctx.host, params, bool(show_difference))
        except Exception as e:
            return [update(), update(value=message_html(error_text(e), "error"))]
        return [update(value=images), update(value=message_html(f"original and merge compared: {timing}", "info"))]

    def on_generate(self, prompt, negative, seed, steps, cfg, width, height, sampler):
        params = self.preview_params(prompt, negative, seed, steps, cfg, width, height, sampler)
        started = time.monotonic()
        try:
            images = actions.preview(self.ctx.host, params)
        except Exception as e:
            return [update(), update(value=message_html(error_text(e), "error"))]
        took = time.monotonic() - started
        return [update(value=[(img, info) for img, info in images]),
                update(value=message_html(f"{len(images)} preview image(s) in {format_seconds(took)}", "info"))]


def default_sampler(names: List[str]) -> Optional[str]:
    """The WebUI's default, "Euler a", when the host has it; else its first sampler."""
    if "Euler a" in names:
        return "Euler a"
    return names[0] if names else None
