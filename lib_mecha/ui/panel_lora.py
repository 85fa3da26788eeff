"""LoRA/LyCORIS files added to the selected step's result, each with a strength.

A strength can also vary by block (edited in the Block weights panel). Keys of a LoRA that match
nothing in the model are reported as a warning after a merge, never dropped silently.
"""
from __future__ import annotations

from typing import Any, List

from . import lora_support
from . import model as m
from .session import Session
from .widgets import kind_of, message_here, message_html, update

MAX_LORAS = 6


class LoraPanel:
    def __init__(self, ctx):
        self.ctx = ctx

    def build(self) -> None:
        import gradio as gr
        with gr.Accordion("LoRA / LyCORIS", open=True, elem_id="mecha_lora_panel"):
            self.note = gr.Markdown("", elem_id="mecha_lora_note")
            self.rows = []
            for j in range(MAX_LORAS):
                with gr.Group(visible=False, elem_id=f"mecha_lora_{j}") as group:
                    # the file on a line of its own: LoRA names are as long as checkpoint names
                    row = {"group": group,
                           "file": gr.Dropdown(choices=[], value=None, label=f"LoRA {j + 1}", allow_custom_value=True,
                                               elem_id=f"mecha_lora_{j}_file")}
                    with gr.Row():
                        row.update({
                            "strength": gr.Slider(-1.0, 2.0, value=1.0, step=0.05, label="strength",
                                                  elem_id=f"mecha_lora_{j}_strength", scale=3),
                            "blocks": gr.Checkbox(value=False, label="per block", elem_id=f"mecha_lora_{j}_blocks",
                                                  scale=1, min_width=100),
                            "remove": gr.Button("✕", elem_id=f"mecha_lora_{j}_remove", scale=0, min_width=40),
                        })
                self.rows.append(row)
            with gr.Row():
                self.add = gr.Button("+ Add LoRA", elem_id="mecha_lora_add", scale=0, min_width=120)
            self.message = gr.HTML("", elem_id="mecha_lora_message")
            self.warning = gr.HTML("", elem_id="mecha_lora_warning")

    def outputs(self) -> List[Any]:
        out = [self.note]
        for row in self.rows:
            out.extend(row[k] for k in ("group", "file", "strength", "blocks"))
        out.append(self.add)
        out.append(self.warning)
        return out

    def render(self, session: Session) -> List[Any]:
        step = session.step
        choices = [e.label for e in self.ctx.catalog.loras()]
        note = f"Added to the result of step {session.selected + 1}."
        if not lora_support.available():
            note += " *This lib_mecha cannot bake LoRAs: a step with a LoRA cannot be merged.*"
        if not choices:
            note += " No LoRA files were found in the LoRA folders."
        out = [update(value=note)]
        for j in range(len(self.rows)):
            if j < len(step.loras):
                entry = step.loras[j]
                label = self.ctx.catalog.lora_label(entry.path)
                shown = choices if label in choices else choices + [label]
                blocks = entry.strength.mode == m.BLOCKS
                out.extend([update(visible=True), update(choices=shown, value=label),
                            update(value=entry.strength.value,
                                   label="strength (empty blocks)" if blocks else "strength"),
                            update(value=blocks)])
            else:
                out.extend([update(visible=False), update(value=None), update(value=1.0), update(value=False)])
        out.append(update(interactive=len(step.loras) < len(self.rows)))
        out.append(update(value=self.warnings(session)))
        return out

    def render_message(self, session: Session) -> Any:
        own = message_here(session, "lora")
        return update(value=message_html(own, kind_of(own)))

    def warnings(self, session: Session) -> str:
        """Unmatched modules (or a LoRA for another model) of the selected step's LoRAs."""
        step = session.step
        if not step.loras or not lora_support.available():
            return ""
        arch = self.ctx.arch_for(session)
        first = session.first_model()
        base = self.ctx.catalog.checkpoint(first) if first else None
        parts = []
        for entry in step.loras:
            found = self.ctx.catalog.lora(entry.path)
            report = lora_support.check(found.path if found else entry.path, arch, base.path if base else None)
            if report:
                parts.append(message_html(report, "warning"))
        return "".join(parts)
