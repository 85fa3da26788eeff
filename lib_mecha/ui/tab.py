"""The Mecha tab: lays out the panels and wires their events to the session.

:func:`create_tab` returns a ``gr.Blocks`` for the WebUI's ``on_ui_tabs`` (the WebUI puts it in a
tab whose element id is ``tab_mecha``); :func:`build_tab` builds the same content inside the
caller's Blocks (the standalone server wraps it in its own ``tab_mecha``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

from .catalog import Catalog
from .compat import job_kw, quiet_kw
from .panel_actions import ActionsPanel
from .panel_extract import ExtractPanel
from .panel_lora import LoraPanel
from .panel_mbw import MbwPanel
from .panel_recipe import GUIDE_ID, MODE_BY_LABEL, RecipePanel
from .panel_text import TextPanel, download_path, read_upload
from .session import Session, guarded
from .widgets import Region, keep, message_html, optional_index, update, wire

ROOT = Path(__file__).resolve().parents[2]


class TabContext:
    """What every panel needs: the host, its model lists, and the other panels."""

    def __init__(self, host):
        self.host = host
        self.catalog = Catalog(host)
        self.recipe = RecipePanel(self)
        self.lora = LoraPanel(self)
        self.mbw = MbwPanel(self)
        self.text = TextPanel(self)
        self.actions = ActionsPanel(self)
        self.extract = ExtractPanel(self)

    def layout_for(self, session: Session):
        """The block layout for the selected step's models (its first model's architecture)."""
        from ..arch.layouts import layouts_for
        arch = self.arch_for(session)
        found = layouts_for(arch) if arch else ()
        return found[0] if found else None

    def arch_for(self, session: Session, step: Optional[int] = None):
        """The architecture of a step's models (its first model's); the selected step by default."""
        first = session.first_model(step)
        return self.catalog.architecture_of(first) if first else None

    def arch_at(self, session: Session):
        """The architecture of the models of the step whose value the block weights panel edits."""
        return self.arch_for(session, session.target_step())


def build_tab(host) -> TabContext:
    """Build the tab's components and events inside the current gradio Blocks context."""
    import gradio as gr
    ctx = TabContext(host)
    state = gr.State(Session())
    ctx.actions.build()
    with gr.Row(elem_id="mecha_main"):
        with gr.Column(scale=1, elem_id="mecha_left"):
            ctx.recipe.build()
            ctx.lora.build()
            ctx.text.build()
            with gr.Accordion("Guide to the merge methods", open=False, elem_id=GUIDE_ID):
                gr.Markdown(read_asset("docs/methods.md"), elem_id="mecha_guide_text")
        with gr.Column(scale=1, elem_id="mecha_right"):
            ctx.mbw.build()
            ctx.actions.build_save()
            ctx.extract.build()
            ctx.actions.build_preview()
    _wire(ctx, state)
    return ctx


class _Regions:
    """The groups of components an event re-renders."""

    def __init__(self, ctx: TabContext):
        r, lo, mb, tx = ctx.recipe, ctx.lora, ctx.mbw, ctx.text
        # each panel's message line: the last edit's error next to the control, and what is wrong there
        self.notes = Region([r.message, lo.message, mb.message],
                            lambda s: [r.render_message(s), lo.render_message(s), mb.render_message(s)])
        # everything; what a value change touches (not the input widgets themselves)
        self.full = [Region(r.outputs(), r.render), Region(lo.outputs(), lo.render), Region(mb.outputs(), mb.render),
                     Region(tx.outputs(), tx.render), self.notes]
        self.light = [Region(r.step_outputs(), r.render_steps), Region(mb.text_outputs(), mb.render_text),
                      Region(tx.outputs(), tx.render), self.notes]
        # a new input may change the architecture, hence the layouts the block weights panel offers
        self.new_input = [Region(r.step_outputs(), r.render_steps), Region(mb.outputs(), mb.render),
                          Region(tx.outputs(), tx.render), self.notes]
        self.extract_lists = Region(ctx.extract.list_outputs(), lambda s: ctx.extract.render_lists())


def _wire(ctx: TabContext, state) -> None:
    regions = _Regions(ctx)
    _wire_steps(ctx, state, regions)
    _wire_values(ctx, state, regions)
    _wire_loras(ctx, state, regions)
    _wire_blocks(ctx, state, regions)
    _wire_text(ctx, state, regions)
    _wire_actions(ctx, state)
    _wire_first_render(ctx, state, regions)


def _wire_steps(ctx: TabContext, state, regions: _Regions) -> None:
    """The steps list, the method and the inputs of the selected step."""
    r, ac, cat, full = ctx.recipe, ctx.actions, ctx.catalog, regions.full
    wire(r.steps.input, state, lambda s, v: s.select(optional_index(v) if optional_index(v) is not None
                                                    else s.selected), [r.steps], full, at="recipe")
    wire(r.add_step.click, state, lambda s: s.add_step(), [], full, at="recipe")
    wire(r.remove_step.click, state, lambda s: s.remove_step(), [], full, at="recipe")

    def refresh(s: Session) -> None:
        host_refresh = getattr(ctx.host, "refresh_checkpoints", None)
        if host_refresh is not None:
            guarded(s, host_refresh)
        cat.refresh()
    wire(r.refresh.click, state, refresh, [], full + [Region([ac.save_vae], lambda s: [
        update(choices=ac.vae_choices())]), regions.extract_lists], at="recipe")
    wire(r.method.input, state, lambda s, v: s.set_method(v) if v else None, [r.method], full, at="recipe")

    for k, widget in enumerate(r.inputs):
        def set_input(s, label, k=k):
            name = r.input_name(s, k)
            if name:
                s.set_input(name, label, cat)
        wire(widget.input, state, set_input, [widget], regions.new_input, at="recipe")
    wire(r.extra.input, state, lambda s, labels: s.set_extra(labels, cat), [r.extra], regions.new_input,
         at="recipe")


def _wire_values(ctx: TabContext, state, regions: _Regions) -> None:
    """Each parameter slot: its value widgets, its mode and its patterns."""
    r, light = ctx.recipe, regions.light
    for j, slot in enumerate(r.slots):
        for kind in ("slider", "number", "check", "choice", "text"):
            def set_value(s, v, j=j):
                name = r.param_name(s, j)
                if name:
                    s.set_value(name, v)
            wire(slot[kind].input, state, set_value, [slot[kind]], light, at="recipe")

        def set_mode(s, label, j=j):
            name = r.param_name(s, j)
            if name:
                s.set_mode(name, MODE_BY_LABEL.get(label, "value"), ctx.layout_for(s), ctx.arch_for(s))
        wire(slot["mode"].input, state, set_mode, [slot["mode"]], regions.full, at="recipe")

        def set_patterns(s, text, j=j):
            name = r.param_name(s, j)
            if name:
                s.set_patterns(name, text)
        wire(slot["patterns"].input, state, set_patterns, [slot["patterns"]], light, at="recipe")


def _wire_loras(ctx: TabContext, state, regions: _Regions) -> None:
    lo, cat, full = ctx.lora, ctx.catalog, regions.full
    wire(lo.add.click, state, lambda s: s.add_lora(None, cat), [], full, at="lora")
    for j, row in enumerate(lo.rows):
        wire(row["file"].input, state, lambda s, v, j=j: s.set_lora(j, v, cat), [row["file"]], full, at="lora")
        wire(row["strength"].input, state, lambda s, v, j=j: s.set_lora_strength(j, v), [row["strength"]],
             regions.light, at="lora")
        wire(row["blocks"].input, state, lambda s, v, j=j: s.set_lora_blocks(j, bool(v), ctx.layout_for(s)),
             [row["blocks"]], full, at="lora")
        wire(row["remove"].click, state, lambda s, j=j: s.remove_lora(j), [], full, at="lora")


def _wire_blocks(ctx: TabContext, state, regions: _Regions) -> None:
    r, mb, tx, notes = ctx.recipe, ctx.mbw, ctx.text, regions.notes
    mbw_full = [Region(mb.outputs(), mb.render), Region(r.outputs(), r.render), Region(tx.outputs(), tx.render),
                notes]

    def pick_target(s: Session, label) -> None:
        for lb, key in s.mbw_targets():
            if lb == label:
                s.mbw_target = key
    wire(mb.target.input, state, pick_target, [mb.target], mbw_full, at="mbw")
    wire(mb.layout.input, state, lambda s, v: s.set_layout(v, ctx.arch_at(s)), [mb.layout], mbw_full, at="mbw")
    wire(mb.preset.input, state, lambda s, v: s.apply_preset(v), [mb.preset], mbw_full, at="mbw")
    wire(mb.apply.click, state, lambda s, v: s.set_blocks_text(v), [mb.text], mbw_full, at="mbw")
    wire(mb.text.submit, state, lambda s, v: s.set_blocks_text(v), [mb.text], mbw_full, at="mbw")
    for index, slider in enumerate(mb.all_sliders()):
        def set_block(s, v, index=index):
            blocks = mb.slider_blocks(s)
            if index < len(blocks) and blocks[index]:
                s.set_block(blocks[index], v)
        wire(slider.input, state, set_block, [slider], [Region(mb.text_outputs(), mb.render_text),
                                                       Region([mb.preset], mb.render_preset),
                                                       Region(tx.outputs(), tx.render), notes], at="mbw")


def _wire_text(ctx: TabContext, state, regions: _Regions) -> None:
    """The .mecha text box: load, upload and download."""
    tx, full = ctx.text, regions.full

    def load(s: Session, text: str) -> None:
        tx.load_from(s, text)
    # after a failed paste the user's text stays in the box, to be fixed
    text_load = full[:3] + [Region(tx.outputs(), lambda s: tx.render_message_only(s) if _failed(s)
                                   else tx.render(s)), regions.notes]
    wire(tx.load.click, state, load, [tx.text], text_load, at="text")
    wire(tx.upload.upload, state, lambda s, f: load(s, read_upload(f)), [tx.upload], full, at="text")

    def download(s: Session):
        from .recipe_io import compile_session
        with s.lock:
            compiled = compile_session(s)
        if not compiled.text:
            return [update(visible=False), update(value=message_html(compiled.problem or "nothing to download",
                                                                     "error"))]
        return [update(value=download_path(compiled.text), visible=True), keep()]
    tx.download.click(download, inputs=[state], outputs=[tx.file, tx.message])


def _wire_actions(ctx: TabContext, state) -> None:
    """Each job button starts its job, then a chained listener follows it (panel_actions)."""
    ac, ex = ctx.actions, ctx.extract
    merging, saving = ac.merge_outputs(), ac.save_outputs()
    ac.merge.click(ac.on_merge, inputs=[state, ac.save_dtype], outputs=merging, **job_kw()).then(  # preview == Save
        ac.follow_merge, inputs=[state], outputs=merging, **job_kw())
    ac.restore.click(ac.on_restore, inputs=[], outputs=merging, **job_kw())
    ac.merging.cancel.click(lambda: ac.on_cancel(ac.merging), inputs=[], outputs=ac.merging.outputs(), **job_kw())
    save_inputs = [state, ac.save_name, ac.save_dtype, ac.save_ema, ac.save_vae]
    for event in (ac.save.click, ac.save_name.submit):
        event(ac.on_save, inputs=save_inputs, outputs=saving, **job_kw()).then(
            ac.follow_save, inputs=[state], outputs=saving, **job_kw())
    ac.overwrite.click(ac.on_overwrite, inputs=[state], outputs=saving, **job_kw()).then(
        ac.follow_save, inputs=[state], outputs=saving, **job_kw())
    ac.keep_file.click(ac.on_keep, inputs=[state], outputs=saving, **job_kw())
    ac.saving.cancel.click(lambda: ac.on_cancel(ac.saving), inputs=[], outputs=ac.saving.outputs(), **job_kw())
    ex.by.change(ex.on_by, inputs=[ex.by], outputs=[ex.rank, ex.energy], **quiet_kw())
    extracting = ex.job_outputs()
    ex.run.click(ex.on_extract, inputs=[state, *ex.inputs()], outputs=extracting, **job_kw()).then(
        ex.follow, inputs=[state], outputs=extracting, **job_kw())
    ex.feedback.cancel.click(lambda: ac.on_cancel(ex.feedback), inputs=[], outputs=ex.feedback.outputs(), **job_kw())
    preview_inputs = [ac.prompt, ac.negative, ac.seed, ac.steps, ac.cfg, ac.width, ac.height, ac.sampler]
    ac.generate.click(ac.on_generate, inputs=preview_inputs, outputs=[ac.gallery, ac.preview_message])
    ac.compare.click(ac.on_compare, inputs=preview_inputs + [ac.compare_diff], outputs=[ac.gallery, ac.preview_message])


def _wire_first_render(ctx: TabContext, state, regions: _Regions) -> None:
    """The initial session, the lists and the status."""
    ac, full, extract_lists = ctx.actions, regions.full, regions.extract_lists
    init_outputs: List[Any] = [o for region in full for o in region.outputs] + [ac.status, ac.save_vae, ac.sampler,
                                                                                 *extract_lists.outputs]

    def initial(s: Session):
        with s.lock:
            out = [u for region in full for u in region.render(s)]
        return out + [update(value=ac.status_html()), update(choices=ac.vae_choices()), ac.sampler_update(),
                      *extract_lists.render(s)]
    ctx.initial = (initial, [state], init_outputs)
    # also bound to the status line's refresh button, which mecha.js clicks when the tab is shown
    ac.status_refresh.click(initial, inputs=[state], outputs=init_outputs, **quiet_kw())


def _failed(s: Session) -> bool:
    return bool(s.text_message) and not s.text_message.startswith(("loaded", "model not found"))


def attach_initial(blocks, ctx: TabContext) -> None:
    """Render the session when the page loads (needs the tab's top-level Blocks)."""
    fn, inputs, outputs = ctx.initial
    blocks.load(fn, inputs=inputs, outputs=outputs, **quiet_kw())


def read_asset(name: str) -> str:
    path = ROOT / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def create_tab(host):
    """The Mecha tab for the WebUI's ``on_ui_tabs`` (the WebUI adds style.css and javascript/)."""
    import gradio as gr
    with gr.Blocks(analytics_enabled=False) as blocks:
        ctx = build_tab(host)
        attach_initial(blocks, ctx)
    blocks.mecha_context = ctx  # for tests and the scripts file; not used by gradio
    return blocks


__all__ = ["build_tab", "create_tab"]
