"""Status line, Merge & load / Restore, Save (with overwrite confirmation), progress and Cancel,
and the preview panel. Merge and Save are generator handlers: they start a job, then yield the
progress bar until it ends, so the tab never blocks and Cancel stays clickable."""
from __future__ import annotations

import html
import logging
import time
from typing import Any, Iterator, List, Optional

from ..errors import MechaError, OutputExists
from . import actions
from ..jobs import RUNNER, Job
from .recipe_io import compile_session
from .session import Session
from .widgets import keep, kind_of, message_html, update

POLL = 0.25
log = logging.getLogger("lib_mecha.ui")


def progress_html(job: Optional[Job]) -> str:
    """The progress bar of a job: fraction, keys, ETA; or its outcome."""
    if job is None:
        return ""
    if not job.finished.is_set():
        pct = job.fraction * 100
        eta = job.eta()
        parts = [f"{job.label}: {job.phase}"]
        if job.total:
            parts.append(f"{job.done}/{job.total} keys ({pct:.0f}%)")
        if eta is not None:
            parts.append(f"ETA {format_seconds(eta)}")
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


class ActionsPanel:
    def __init__(self, ctx):
        self.ctx = ctx

    @property
    def hot(self) -> bool:
        return actions.can_hot_load(self.ctx.host)

    def build(self) -> None:
        import gradio as gr
        with gr.Group(elem_id="mecha_actions"):
            with gr.Row():
                self.status = gr.HTML("", elem_id="mecha_status")
                self.status_refresh = gr.Button("↻", elem_id="mecha_status_refresh", scale=0, min_width=40)
            with gr.Row(visible=self.hot, elem_id="mecha_hot_actions"):
                self.merge = gr.Button("Merge & load", variant="primary", elem_id="mecha_merge", scale=1)
                self.restore = gr.Button("Restore original", elem_id="mecha_restore", scale=1)
            with gr.Row(elem_id="mecha_progress_row"):
                self.progress = gr.HTML("", elem_id="mecha_progress")
                self.cancel = gr.Button("Cancel", variant="stop", elem_id="mecha_cancel", size="sm", scale=0,
                                        min_width=90)
            self.message = gr.HTML("", elem_id="mecha_message")

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
                self.width = gr.Slider(256, 2048, value=512, step=64, label="Width", elem_id="mecha_width")
                self.height = gr.Slider(256, 2048, value=512, step=64, label="Height", elem_id="mecha_height")
                self.sampler = gr.Textbox(value="Euler a", label="Sampler", elem_id="mecha_sampler", min_width=90)
            self.generate = gr.Button("Generate preview", variant="primary", elem_id="mecha_generate")
            with gr.Row(elem_id="mecha_compare_row"):
                self.compare = gr.Button("Compare with the original", elem_id="mecha_compare", scale=2)
                self.compare_diff = gr.Checkbox(value=False, label="Show the difference", elem_id="mecha_compare_diff",
                                                scale=1)
            self.gallery = gr.Gallery(value=[], label="Preview", columns=2, height=360, elem_id="mecha_gallery")

    # --- status --------------------------------------------------------------------------------

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

    # --- job outputs -----------------------------------------------------------------------------

    def job_outputs(self) -> List[Any]:
        return [self.progress, self.message, self.status, self.confirm, self.confirm_text]

    def _job_updates(self, job: Optional[Job], message: Optional[str] = "", kind: Optional[str] = None,
                     confirm: Optional[str] = None) -> List[Any]:
        """Updates of the job outputs; ``message=None`` leaves the message line as it is."""
        if message is None:
            shown = keep()
        else:
            shown = update(value=message_html(message, kind or kind_of(message)) if message else "")
        return [update(value=progress_html(job)), shown,
                update(value=self.status_html()),
                update(visible=confirm is not None),
                update(value=message_html(confirm, "warning") if confirm else "")]

    def refused(self, e: BaseException) -> List[Any]:
        """The job outputs for a job that could not start: why, as an error line."""
        return self._job_updates(RUNNER.busy(), error_text(e), "error")

    def follow(self, job: Job, done_message) -> Iterator[List[Any]]:
        """Yield the progress bar until ``job`` ends, then its outcome."""
        first = True
        while not job.finished.wait(POLL):
            # later polls leave the message line alone: it may show why a second job was refused
            yield self._job_updates(job, "" if first else None)
            first = False
        message = done_message(job)
        if job.error is None:
            kind = "warning" if "; warning: " in message else "info"
        else:
            kind = "warning" if job.cancelled else "error"
        yield self._job_updates(job, message, kind)

    def on_merge(self, session: Session, save_dtype: Optional[str] = None) -> Iterator[List[Any]]:
        with session.lock:
            compiled = compile_session(session)
        if compiled.node is None:
            yield self._job_updates(RUNNER.busy(), compiled.problem, "error")
            return
        try:
            job = actions.start_merge(self.ctx.host, self.ctx.catalog, compiled.node, compiled.text,
                                      save_dtype=save_dtype or None)
        except Exception as e:
            yield self._job_updates(RUNNER.busy(), error_text(e), "error")
            return
        yield from self.follow(job, actions.merge_done_message)

    def on_save(self, session: Session, name: str, dtype: str, prune_ema: bool, vae: str,
                overwrite: bool = False) -> Iterator[List[Any]]:
        with session.lock:
            compiled = compile_session(session)
            arch = self.ctx.catalog.architecture_of(session.first_model(len(session.draft) - 1) or "")
        if compiled.node is None:
            yield self._job_updates(RUNNER.busy(), compiled.problem, "error")
            return
        request = actions.SaveRequest(name=(name or "").strip(), dtype=dtype or "fp16", prune_ema=bool(prune_ema),
                                      vae=vae or actions.KEEP_VAE, overwrite=overwrite)
        try:
            job = actions.start_save(self.ctx.host, self.ctx.catalog, compiled.node, request, arch)
        except OutputExists as e:
            with session.lock:
                session.pending_save = request
            yield self._job_updates(RUNNER.busy(), "", confirm=f"{e.path} exists. Overwrite it?")
            return
        except Exception as e:
            yield self._job_updates(RUNNER.busy(), error_text(e), "error")
            return
        yield from self.follow(job, actions.save_done_message)

    def on_overwrite(self, session: Session) -> Iterator[List[Any]]:
        with session.lock:
            request, session.pending_save = session.pending_save, None
        if request is None:
            yield self._job_updates(RUNNER.busy(), "nothing to overwrite: press Save first", "error")
            return
        yield from self.on_save(session, request.name, request.dtype, request.prune_ema, request.vae, overwrite=True)

    def on_keep(self, session: Session) -> List[Any]:
        with session.lock:
            session.pending_save = None
        return self._job_updates(RUNNER.current if RUNNER.busy() else None, "kept the existing file; nothing saved",
                                 "info")

    def on_cancel(self) -> List[Any]:
        if RUNNER.cancel():
            return self._job_updates(RUNNER.current, "cancelling: the job stops after the key in progress", "warning")
        return self._job_updates(None, "no merge is running", "info")

    def on_restore(self) -> List[Any]:
        try:
            message, kind = actions.restore(self.ctx.host), "info"
        except Exception as e:
            message, kind = error_text(e), "error"
        return self._job_updates(RUNNER.busy(), message, kind)

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
