"""Extract a LoRA: the difference between a fine-tune (or the current recipe) and its base, saved into
the host's LoRA folder. The job's progress, Cancel and outcome show under the Extract button."""
from __future__ import annotations

from typing import Any, Iterator, List

from ..host.extract import DTYPES, ExtractRequest
from . import extraction
from .panel_actions import Feedback, error_text
from .recipe_io import compile_session
from .session import Session
from .widgets import update

BY_RANK, BY_ENERGY = "rank", "energy"


class ExtractPanel:
    def __init__(self, ctx):
        self.ctx = ctx
        self.feedback = Feedback("mecha_extract")

    def build(self) -> None:
        import gradio as gr
        with gr.Accordion("Extract LoRA", open=False, elem_id="mecha_extract_panel"):
            gr.Markdown("A LoRA holding *tuned − base*: each weight's change reduced to its main directions. "
                        "Only what a LoRA can hold goes in (the UNet/DiT and text encoders' Linear and Conv "
                        "weights); it is saved into the LoRA folder.", elem_id="mecha_extract_note")
            with gr.Row():
                self.tuned = gr.Dropdown(choices=[extraction.CURRENT_RECIPE], value=extraction.CURRENT_RECIPE,
                                         label="Tuned model", elem_id="mecha_extract_tuned", scale=1)
                self.base = gr.Dropdown(choices=[], value=None, label="Base model", elem_id="mecha_extract_base",
                                        scale=1)
            with gr.Row():
                self.by = gr.Radio(choices=[BY_RANK, BY_ENERGY], value=BY_RANK, label="Size by",
                                   elem_id="mecha_extract_by", scale=1)
                self.rank = gr.Slider(1, 256, value=32, step=1, label="rank", elem_id="mecha_extract_rank", scale=2)
                self.energy = gr.Slider(0.05, 1.0, value=0.9, step=0.01, label="energy kept",
                                        visible=False, elem_id="mecha_extract_energy", scale=2)
            with gr.Row():
                self.groups = gr.CheckboxGroup(choices=list(extraction.GROUPS), value=list(extraction.GROUPS),
                                               label="Components", elem_id="mecha_extract_groups", scale=2)
                self.convolutions = gr.Checkbox(value=True, label="3×3 convolutions (LoCon)",
                                                elem_id="mecha_extract_convs", scale=1)
            with gr.Row():
                self.name = gr.Textbox(value="", label="LoRA name (in the LoRA folder)", elem_id="mecha_extract_name",
                                       scale=3, placeholder="my-lora")
                self.dtype = gr.Dropdown(choices=list(DTYPES), value="fp16", label="dtype",
                                         elem_id="mecha_extract_dtype", scale=1, min_width=100)
            with gr.Row():
                self.overwrite = gr.Checkbox(value=False, label="replace an existing file",
                                             elem_id="mecha_extract_overwrite", scale=2)
                self.run = gr.Button("Extract LoRA", variant="primary", elem_id="mecha_extract_run", scale=1)
            self.feedback.build()

    def inputs(self) -> List[Any]:
        return [self.tuned, self.base, self.by, self.rank, self.energy, self.groups, self.convolutions, self.name,
                self.dtype, self.overwrite]

    def list_outputs(self) -> List[Any]:
        return [self.tuned, self.base]

    def render_lists(self) -> List[Any]:
        """The dropdowns' choices from the catalogue (the values the user picked stay)."""
        labels = [e.label for e in self.ctx.catalog.checkpoints()]
        return [update(choices=[extraction.CURRENT_RECIPE] + labels), update(choices=labels)]

    def on_by(self, by: str) -> List[Any]:
        return [update(visible=by != BY_ENERGY), update(visible=by == BY_ENERGY)]

    def job_outputs(self) -> List[Any]:
        return [*self.feedback.outputs(), self.ctx.actions.status]

    def on_extract(self, session: Session, tuned, base, by, rank, energy, groups, convolutions, name, dtype,
                   overwrite) -> List[Any]:
        """Start the extraction, or say at once why not (the follower shows its progress)."""
        actions = self.ctx.actions
        try:
            node = self._tuned(session, tuned)
            request = ExtractRequest(name=(name or "").strip(), rank=int(rank) if by != BY_ENERGY else None,
                                     energy=float(energy) if by == BY_ENERGY else None,
                                     conv_rank=None if convolutions else 0, dtype=dtype or "fp16",
                                     overwrite=bool(overwrite))
            job = extraction.start_extract(self.ctx.host, self.ctx.catalog, node, base, request, tuple(groups or ()))
        except Exception as e:
            return actions.with_status(self.feedback.say(error_text(e), "error"))
        session.follow("extract", job)
        return actions.with_status(self.feedback.render(job, ""))

    def follow(self, session: Session) -> Iterator[List[Any]]:
        actions = self.ctx.actions
        yield from actions.follow(session, "extract", self.feedback, extraction.extract_done_message,
                                  actions.with_status)

    def _tuned(self, session: Session, label: str):
        if not label or label == extraction.CURRENT_RECIPE:
            with session.lock:
                compiled = compile_session(session)
            if compiled.node is None:
                from ..errors import MechaError
                raise MechaError(f"the current recipe cannot be extracted: {compiled.problem}")
            return compiled.node
        from ..recipe import model
        return model(self.ctx.catalog.checkpoint_name(label))
