"""Block weights (MBW): one slider per block of the chosen layout, presets and a comma list.

One panel edits whichever value is in block mode (a step's parameter or a LoRA's strength),
chosen in "Edit". Sliders are grouped as the layout's block names suggest: the first two
numbered groups (IN / OUT, DOUBLE / SINGLE) get a column each, every other block sits in the
middle column (BASE, M00, VAE...). The slider pool is sized for the largest registered layout.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from ..arch.layouts import layout_ids, layouts_for, resolve_layout
from ..errors import MechaError
from ..methods import resolve
from . import model as m
from .panel_recipe import shown_number, slider_range
from .session import Session, check_layout
from .widgets import keep, kind_of, message_here, message_html, update

_GROUP = re.compile(r"^(.*?)(\d+)$")
COLUMNS = 3


def group_of(block: str) -> str:
    found = _GROUP.match(block)
    return found.group(1) if found else block


def columns_of(blocks: Tuple[str, ...]) -> List[List[str]]:
    """Blocks per column: first numbered group, the rest, second numbered group. A layout with
    one numbered group (SD3's joint blocks) has it split over the two outer columns."""
    groups: Dict[str, List[str]] = {}
    for b in blocks:
        groups.setdefault(group_of(b), []).append(b)
    big = [g for g, members in groups.items() if len(members) > 1][:2]
    left = groups[big[0]] if big else []
    right = groups[big[1]] if len(big) > 1 else []
    if len(big) == 1:
        half = (len(left) + 1) // 2
        left, right = left[:half], left[half:]
    middle = [b for b in blocks if b not in left and b not in right]
    return [left, middle, right]


def column_sizes() -> List[int]:
    sizes = [1, 1, 1]
    for ident in layout_ids():
        for i, col in enumerate(columns_of(resolve_layout(ident).blocks)):
            sizes[i] = max(sizes[i], len(col))
    return sizes


def column_title(col: List[str], blocks: Tuple[str, ...] = ()) -> str:
    """``IN``, ``BASE · M00 · VAE``, or ``JOINT00–JOINT18`` for part of a group."""
    if not col:
        return ""
    names = []
    for b in col:
        g = group_of(b)
        members = [x for x in col if group_of(x) == g]
        whole = [x for x in blocks if group_of(x) == g] or members
        if len(members) == 1:
            name = b
        elif len(members) < len(whole):
            name = f"{members[0]}–{members[-1]}"
        else:
            name = g
        if name not in names:
            names.append(name)
    return " · ".join(names)


def value_range(session: Session, key: Optional[str], pv: m.ParamValue) -> Tuple[float, float, float]:
    """Slider range for the target's values (its parameter's usual range)."""
    if key and key.startswith("p:"):
        _, i, name = key.split(":", 2)
        p = resolve(session.draft[int(i)].method).param(name)
    else:
        p = m.LORA_STRENGTH
    lo, hi = slider_range(p)
    lo = 0.0 if lo is None else lo
    hi = 1.0 if hi is None else hi
    for _, v in pv.blocks:
        lo, hi = min(lo, v), max(hi, v)
    return lo, hi, 0.01 if hi - lo <= 4 else 0.05


def applied_preset(pv: m.ParamValue) -> Optional[str]:
    """The preset whose values the blocks hold (the one applied, until a block is changed)."""
    from ..arch.presets import presets
    held = pv.block_map
    for name, found in presets(pv.config).items():
        if dict(found.values) == held:
            return name
    return None


def comma_text(pv: m.ParamValue) -> str:
    layout = resolve_layout(pv.config)
    values = pv.block_map
    return ",".join(m.format_number(values[b]) if b in values else "" for b in layout.blocks)


class MbwPanel:
    def __init__(self, ctx):
        self.ctx = ctx
        self.sizes = column_sizes()

    def build(self) -> None:
        import gradio as gr
        with gr.Accordion("Block weights (MBW)", open=True, elem_id="mecha_mbw_panel"):
            self.hint = gr.Markdown("", elem_id="mecha_mbw_hint")
            with gr.Group(visible=False, elem_id="mecha_mbw_controls") as self.controls:
                # one row each for what is edited and how: long layout ids and LoRA names stay whole
                self.target = gr.Dropdown(choices=[], value=None, label="Edit", elem_id="mecha_mbw_target")
                with gr.Row():
                    self.layout = gr.Dropdown(choices=list(layout_ids()), value=None, label="Layout",
                                              elem_id="mecha_mbw_layout", scale=3, min_width=240)
                    self.preset = gr.Dropdown(choices=[], value=None, label="Preset", elem_id="mecha_mbw_preset",
                                              scale=2, min_width=200)
                # between the layout and the comma list: what is wrong with either shows next to it
                self.message = gr.HTML("", elem_id="mecha_mbw_message")
                with gr.Row():
                    self.text = gr.Textbox(value="", label="Values in block order (comma list; empty = default)",
                                           elem_id="mecha_mbw_text", scale=5)
                    self.apply = gr.Button("Apply", elem_id="mecha_mbw_apply", scale=0, min_width=80)
            self.titles = []
            self.sliders: List[List[Any]] = []
            with gr.Row(elem_id="mecha_mbw_sliders"):
                for c in range(COLUMNS):
                    with gr.Column(min_width=120):
                        self.titles.append(gr.Markdown("", elem_id=f"mecha_mbw_title_{c}"))
                        self.sliders.append([
                            gr.Slider(0, 1, value=0, step=0.01, label="", visible=False,
                                      elem_id=f"mecha_mbw_{c}_{k}")
                            for k in range(self.sizes[c])])

    def all_sliders(self) -> List[Any]:
        return [s for col in self.sliders for s in col]

    def slider_blocks(self, session: Session) -> List[Optional[str]]:
        """The block each slider of :meth:`all_sliders` edits for the current target."""
        pv = session.target_value()
        out: List[Optional[str]] = []
        cols = columns_of(resolve_layout(pv.config).blocks) if pv is not None and pv.config else [[], [], []]
        for c, col in enumerate(self.sliders):
            for k in range(len(col)):
                out.append(cols[c][k] if k < len(cols[c]) else None)
        return out

    def text_outputs(self) -> List[Any]:
        return [self.target, self.text]

    def render_text(self, session: Session) -> List[Any]:
        targets = session.mbw_targets()
        key = session.current_target()
        pv = session.target_value()
        label = next((lb for lb, k in targets if k == key), None)
        if message_here(session, "mbw"):
            text = keep()  # the list that was refused stays, to be fixed
        else:
            text = update(value=comma_text(pv) if pv is not None and pv.config else "")
        return [update(choices=[lb for lb, _ in targets], value=label), text]

    def render_preset(self, session: Session) -> List[Any]:
        pv = session.target_value()
        return [update(value=applied_preset(pv) if pv is not None and pv.config else None)]

    def render_message(self, session: Session) -> Any:
        """The last edit's error here, else a layout that does not fit the step's models."""
        own = message_here(session, "mbw")
        if own:
            return update(value=message_html(own, kind_of(own)))
        pv = session.target_value()
        if pv is not None and pv.config:
            try:
                check_layout(pv.config, self.ctx.arch_at(session), session.target_step())
            except MechaError as e:
                return update(value=message_html(e.format_message(), "error"))
        return update(value="")

    def outputs(self) -> List[Any]:
        return [self.hint, self.controls, *self.text_outputs(), self.layout, self.preset, *self.titles,
                *self.all_sliders()]

    def render(self, session: Session) -> List[Any]:
        out = [update(value=self.hint_text(session)), update(visible=bool(session.mbw_targets()))]
        out.extend(self.render_text(session))
        key = session.current_target()
        pv = session.target_value()
        if pv is None or not pv.config:
            out.append(update(value=None))
            out.append(update(choices=[], value=None))
            out.extend(update(value="") for _ in self.titles)
            out.extend(update(visible=False) for _ in self.all_sliders())
            return out
        from ..arch.presets import presets
        layout = resolve_layout(pv.config)
        arch = self.ctx.arch_at(session)
        fitting = list(layouts_for(arch) if arch else layout_ids())
        out.append(update(choices=fitting + ([] if layout.identifier in fitting else [layout.identifier]),
                          value=layout.identifier))
        out.append(update(choices=list(presets(layout.identifier)), value=applied_preset(pv)))
        cols = columns_of(layout.blocks)
        for c in range(COLUMNS):
            out.append(update(value=f"**{column_title(cols[c], layout.blocks)}**" if cols[c] else ""))
        lo, hi, step = value_range(session, key, pv)
        values = pv.block_map
        for block in self.slider_blocks(session):
            if block is None:
                out.append(update(visible=False))
            else:
                v = values.get(block, pv.value)
                empty = block not in values
                out.append(update(visible=True, minimum=lo, maximum=hi, step=step, value=shown_number(v),
                                  label=f"{block}{' (default)' if empty else ''}"))
        return out

    def hint_text(self, session: Session) -> str:
        if not session.mbw_targets():
            return ("Set a parameter's values to *per block (MBW)* (or tick *per block* on a LoRA) to give each "
                    "block of the model its own value.")
        pv = session.target_value()
        if pv is not None and pv.config:
            layout = resolve_layout(pv.config)
            fits = all(len(col) <= len(self.sliders[c]) for c, col in enumerate(columns_of(layout.blocks)))
            if not fits:
                return f"{layout.identifier} has more blocks than sliders here: use the comma list."
            return f"{layout.label or layout.identifier}"
        return ""

    def keep_all(self) -> List[Any]:
        return [keep() for _ in self.outputs()]
