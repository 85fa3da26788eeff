"""The recipe builder: the list of steps, and the editor of the selected step.

The editor's widgets are built once, sized for the method with the most inputs and parameters
in the catalogue; choosing a method shows, relabels and fills the ones it needs from the
method's own description (``MethodSpec``), so a newly registered method gets a form for free.
"""
from __future__ import annotations

import html
import math
from typing import Any, List, Optional, Tuple

from ..methods import all_methods, resolve
from ..methods.spec import Param
from . import model as m
from .catalog import step_label
from .recipe_io import compile_session
from .session import NONE_CHOICE, Session, builder_methods
from .widgets import keep, kind_of, message_here, message_html, update

MODE_LABELS = {m.VALUE: "one value", m.BLOCKS: "per block (MBW)", m.PATTERNS: "per key (patterns)"}
MODE_BY_LABEL = {v: k for k, v in MODE_LABELS.items()}
SLIDER_MAX_STEPS = 2000


def slot_counts() -> Tuple[int, int]:
    """(tensor inputs, value parameters) the editor needs for every registered method."""
    inputs, values = 2, 4
    for spec in all_methods().values():
        inputs = max(inputs, len(m.tensor_params(spec)))
        values = max(values, len(m.value_params(spec)))
    return inputs, values


def widget_kind(p: Param, value: Any = None) -> str:
    """Which widget edits a parameter: slider, number, check, choice or text."""
    if p.kind == "bool":
        return "check"
    if p.kind == "str":
        return "choice" if p.choices else "text"
    lo, hi = slider_range(p, value)
    if lo is None or hi is None:
        return "number"
    if p.kind == "int" and hi - lo > SLIDER_MAX_STEPS:
        return "number"
    return "slider"


def slider_range(p: Param, value: Any = None) -> Tuple[Optional[float], Optional[float]]:
    lo = p.soft_minimum if p.soft_minimum is not None else p.minimum
    hi = p.soft_maximum if p.soft_maximum is not None else p.maximum
    if lo is None or hi is None:
        return lo, hi
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = min(lo, value), max(hi, value)  # a pasted value outside the usual range stays visible
    return lo, hi


def slider_step(p: Param, lo: float, hi: float) -> float:
    if p.step:
        return p.step
    if p.kind == "int":
        return 1
    return 0.01 if hi - lo <= 10 else round((hi - lo) / 1000, 6)


def shown_number(value: Any) -> Any:
    """A value as a slider's box shows it: at most four decimals (0.9167, not 0.91666…). The
    exact value stays in the recipe until the slider is moved."""
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 4)
    return value


def param_info(p: Param) -> str:
    text = p.help or ""
    if p.minimum is not None or p.maximum is not None:
        text = (text + " " if text else "") + f"(valid: {p.range_text().removeprefix('it must be in ')})"
    return text


def step_choice(i: int, step: m.Step) -> str:
    """The step dropdown's entry: number and method (``2. weighted_sum``)."""
    return f"{i + 1}. {step.method}"


def step_title(i: int, step: m.Step, catalog) -> str:
    names = []
    for _, v in step.inputs:
        names.append(_input_short(v, catalog))
    names.extend(_input_short(v, catalog) for v in step.extra)
    title = f"{i + 1}. {step.method}({', '.join(names)})"
    if step.loras:
        title += f" + {len(step.loras)} LoRA"
    return title


def _input_short(v: m.Input, catalog) -> str:
    if v.kind == "step":
        return f"step {v.step + 1}"
    if v.kind == "model":
        label = catalog.checkpoint_label(v.path)
        base = label.replace("\\", "/").rsplit("/", 1)[-1]
        return base.split(" [")[0].removesuffix(".safetensors")
    return "?"


# the section of docs/methods.md (shown in the tab as the guide) about each method category
GUIDE_SECTIONS = {
    "linear": "Linear: weighted sum, add difference, slerp",
    "ties": "TIES, DARE, DELLA, Model Stock",
    "geometric": "Geometric",
    "cosine": "Cosine and train difference",
    "masks": "Cosine and train difference",
    "supermerger": "SuperMerger's modes",
    "spectral": "Spectral",
    "lora": "LoRA and LyCORIS",
    "slicing": "Copy region and logistics",
    "logistics": "Copy region and logistics",
}
GUIDE_ID = "mecha_guide"


def method_help(spec) -> str:
    d = spec.describe()
    lines = [f"**{d['label']}** · `{d['name']}` · {d['category']}", "", d["help"] or ""]
    for note in d["notes"]:
        lines.append(f"\n*sd-mecha note:* {note}")
    if spec.stochastic:
        lines.append("\n*Random: the seed parameter makes it reproducible.*")
    section = GUIDE_SECTIONS.get(d["category"])
    # a link within the page: mecha.js opens the guide below at that section (docs/methods.md)
    title = f' "{section}"' if section else ""
    lines.append(f"\n[Guide to the methods{': ' + section if section else ''} ›](#{GUIDE_ID}{title})")
    return "\n".join(lines)


class RecipePanel:
    """Steps list, method, inputs and parameter widgets of the selected step."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.n_inputs, self.n_values = slot_counts()

    def build(self) -> None:
        import gradio as gr
        methods = builder_methods()
        with gr.Group(elem_id="mecha_recipe_panel"):
            # the dropdown picks a step by number and method; the list under it gives every step's
            # inputs whole, however long the model names (a radio list would do both, but gradio
            # 4.40's Radio reports its own re-renders as user input)
            self.steps = gr.Dropdown(choices=[], value=None, label="Step", elem_id="mecha_steps",
                                     info="The result of the last step is the merge; pick a step to edit it.")
            self.steps_list = gr.HTML("", elem_id="mecha_steps_list")
            with gr.Row():
                self.add_step = gr.Button("+ Add step", elem_id="mecha_step_add", size="sm", min_width=90)
                self.remove_step = gr.Button("Remove step", elem_id="mecha_step_remove", size="sm", min_width=90)
                self.refresh = gr.Button("↻ Lists", elem_id="mecha_refresh", size="sm", min_width=70)
            self.method = gr.Dropdown(choices=methods, value=methods[0] if methods else None, label="Method",
                                      elem_id="mecha_method")
            self.help = gr.Markdown("", elem_id="mecha_method_help")
            # one input per line: model names of 60 characters and more stay readable
            self.inputs = [gr.Dropdown(choices=[], value=None, label=f"input {k + 1}", allow_custom_value=True,
                                       elem_id=f"mecha_input_{k}", visible=k < 2)
                           for k in range(self.n_inputs)]
            self.extra = gr.Dropdown(choices=[], value=[], multiselect=True, label="models",
                                     elem_id="mecha_inputs_extra", visible=False)
            self.message = gr.HTML("", elem_id="mecha_step_message")
            self.slots = []
            for j in range(self.n_values):
                with gr.Group(visible=False, elem_id=f"mecha_param_{j}") as group:
                    with gr.Row():
                        slot = {
                            "group": group,
                            "slider": gr.Slider(0, 1, value=0, step=0.01, label="", visible=False,
                                                elem_id=f"mecha_param_{j}_slider", scale=3),
                            "number": gr.Number(value=0, label="", visible=False, elem_id=f"mecha_param_{j}_number",
                                                scale=3),
                            "check": gr.Checkbox(value=False, label="", visible=False,
                                                 elem_id=f"mecha_param_{j}_check", scale=3),
                            "choice": gr.Dropdown(choices=[], value=None, label="", visible=False,
                                                  elem_id=f"mecha_param_{j}_choice", scale=3),
                            "text": gr.Textbox(value="", label="", visible=False, elem_id=f"mecha_param_{j}_text",
                                               scale=3),
                            "mode": gr.Dropdown(choices=list(MODE_LABELS.values()), value=MODE_LABELS[m.VALUE],
                                                label="values", visible=False, elem_id=f"mecha_param_{j}_mode",
                                                scale=1, min_width=210),
                        }
                    slot["patterns"] = gr.Textbox(value="", lines=3, label="pattern: value (one per line)",
                                                  placeholder="model.diffusion_model.input_blocks.*: 0.2\n"
                                                              "re:attn2\\.to_[kv]: 0.8",
                                                  visible=False, elem_id=f"mecha_param_{j}_patterns")
                self.slots.append(slot)

    # --- rendering ---------------------------------------------------------------------------

    def step_outputs(self) -> List[Any]:
        return [self.steps, self.steps_list]

    def render_steps(self, session: Session) -> List[Any]:
        selected = min(session.selected, len(session.draft) - 1)
        choices = [step_choice(i, s) for i, s in enumerate(session.draft)]
        rows = "".join(f'<div class="mecha-step{" mecha-step-selected" if i == selected else ""}">'
                       f'{html.escape(step_title(i, s, self.ctx.catalog))}</div>'
                       for i, s in enumerate(session.draft))
        return [update(choices=choices, value=choices[selected]),
                update(value=f'<div class="mecha-steps">{rows}</div>')]

    def outputs(self) -> List[Any]:
        out = [*self.step_outputs(), self.method, self.help, *self.inputs, self.extra]
        for slot in self.slots:
            out.extend(slot[k] for k in ("group", "slider", "number", "check", "choice", "text", "mode", "patterns"))
        return out

    def input_choices(self, session: Session) -> List[str]:
        labels = [e.label for e in self.ctx.catalog.checkpoints()]
        return labels + [step_label(i) for i in range(session.selected)]

    def render(self, session: Session) -> List[Any]:
        step = session.step
        spec = resolve(step.method)
        catalog = self.ctx.catalog
        out = self.render_steps(session)
        out.append(update(choices=builder_methods(), value=step.method))
        out.append(update(value=method_help(spec)))
        choices = self.input_choices(session)
        tensors = m.tensor_params(spec)
        for k in range(len(self.inputs)):
            if k < len(tensors):
                p = tensors[k]
                value = session.input_label(step.input(p.name), catalog)
                shown = choices if value is None or value in choices else choices + [value]
                label = p.label or p.name
                if p.space == "delta":
                    label += " (a difference)"
                out.append(update(visible=True, label=label, choices=shown, value=value, info=p.help or ""))
            else:
                out.append(update(visible=False, value=None))
        var = spec.variadic
        if var is not None and var.is_tensor:
            values = [session.input_label(v, catalog) for v in step.extra]
            shown = choices + [v for v in values if v not in choices]
            label = (var.label or var.name) + (" (differences)" if var.space == "delta" else "")
            out.append(update(visible=True, label=label, choices=shown, value=values, info=var.help or ""))
        else:
            out.append(update(visible=False, value=[]))
        params = m.value_params(spec)
        for j in range(len(self.slots)):
            if j < len(params):
                out.extend(self._render_slot(params[j], step.param(params[j].name)))
            else:
                out.extend([update(visible=False)] + [keep()] * 7)
        return out

    def _render_slot(self, p: Param, pv: m.ParamValue) -> List[Any]:
        kind = widget_kind(p, pv.value)
        label = p.label or p.name
        info = param_info(p)
        if pv.mode == m.BLOCKS:
            label += " — value of empty blocks"
            info = "Per block: edit the blocks in the Block weights panel."
        elif pv.mode == m.PATTERNS:
            label += " — value of keys no pattern matches"
        hidden = update(visible=False)
        slider = number = check = choice = text = hidden
        if kind == "slider":
            lo, hi = slider_range(p, pv.value)
            slider = update(visible=True, minimum=lo, maximum=hi, step=slider_step(p, lo, hi),
                            value=shown_number(pv.value), label=label, info=info)
        elif kind == "number":
            number = update(visible=True, value=shown_number(pv.value), label=label, info=info)
        elif kind == "check":
            check = update(visible=True, value=bool(pv.value), label=label, info=info)
        elif kind == "choice":
            options = [str(c) for c in p.choices]
            if p.nullable or p.default is None:
                options = [NONE_CHOICE] + options
            value = NONE_CHOICE if pv.value is None else str(pv.value)
            choice = update(visible=True, choices=options, value=value, label=label, info=info)
        else:
            text = update(visible=True, value="" if pv.value is None else str(pv.value), label=label, info=info)
        mode = update(visible=p.per_key, value=MODE_LABELS[pv.mode])
        patterns = update(visible=pv.mode == m.PATTERNS, value=pv.patterns)
        return [update(visible=True), slider, number, check, choice, text, mode, patterns]

    def render_message(self, session: Session) -> Any:
        """The last edit's error, else what is wrong with the recipe (an incomplete one is no error)."""
        own = message_here(session, "recipe")
        if own:
            return update(value=message_html(own, kind_of(own)))
        problem = compile_session(session).problem
        return update(value="" if problem.startswith("incomplete") else message_html(problem, "error"))

    # --- events ------------------------------------------------------------------------------

    def param_name(self, session: Session, j: int) -> Optional[str]:
        params = m.value_params(session.spec())
        return params[j].name if j < len(params) else None

    def input_name(self, session: Session, k: int) -> Optional[str]:
        tensors = m.tensor_params(session.spec())
        return tensors[k].name if k < len(tensors) else None
