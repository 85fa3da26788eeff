"""The tab's gradio side without a browser: it builds under this venv's gradio, ids are namespaced,
and every panel renders exactly one update per output for any method of the catalogue."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest

from lib_mecha.methods import resolve
from lib_mecha.ui import model as m
from lib_mecha.jobs import Job
from lib_mecha.ui.panel_actions import format_seconds, progress_html
from lib_mecha.ui.panel_mbw import column_sizes, column_title, columns_of
from lib_mecha.ui.panel_recipe import slider_range, widget_kind
from lib_mecha.ui.session import Session, builder_methods

gr = pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def tab(tiny_models):
    from lib_mecha.host.standalone import StandaloneHost
    from lib_mecha.ui import create_tab
    host = StandaloneHost(checkpoint_dirs=[tiny_models], lora_dirs=[tiny_models], save_dir=tiny_models / "out")
    return create_tab(host)


def test_elem_ids_are_namespaced_and_unique(tab):
    ids = [getattr(b, "elem_id", None) for b in tab.blocks.values()]
    ids = [i for i in ids if i]
    assert ids and all(i.startswith("mecha_") for i in ids)
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("method", builder_methods())
def test_every_method_renders_one_update_per_output(tab, method):
    ctx = tab.mecha_context
    s = Session()
    s.set_method(method)
    for panel in (ctx.recipe, ctx.lora, ctx.mbw, ctx.text):
        assert len(panel.render(s)) == len(panel.outputs()), panel
    shown = [u for u in ctx.recipe.render(s)[5 + ctx.recipe.n_inputs:] if u.get("visible") is True]
    assert len(shown) >= len(m.value_params(resolve(method)))


def test_block_mode_shows_one_slider_per_block(tab, catalog):
    ctx = tab.mecha_context
    s = Session()
    s.set_input("a", "a.safetensors", ctx.catalog)
    s.set_mode("alpha", m.BLOCKS, ctx.layout_for(s), ctx.arch_for(s))
    assert ctx.layout_for(s) == "sd1-supermerger_blocks" and ctx.arch_for(s) == "sd1-ldm"
    updates = ctx.mbw.render(s)
    sliders = updates[-len(ctx.mbw.all_sliders()):]
    labels = [u["label"] for u in sliders if u.get("visible")]
    assert len(labels) == 26 and labels[:2] == ["IN00", "IN01"] and "BASE" in labels and labels[-1] == "OUT11"
    assert [b for b in ctx.mbw.slider_blocks(s) if b] == labels


def test_lora_panel_warns_about_unmatched_modules(tab):
    from lib_mecha.ui import lora_support
    assert lora_support.available()
    ctx = tab.mecha_context
    s = Session()
    s.set_input("a", "a.safetensors", ctx.catalog)
    s.add_lora(None, ctx.catalog)
    warning = ctx.lora.render(s)[-1]["value"]
    assert "lora_unet_not_a_module_anywhere" in warning and "match nothing" in warning


def test_layout_columns():
    from lib_mecha.arch.layouts import resolve_layout
    sd1 = columns_of(resolve_layout("sd1-supermerger_blocks").blocks)
    assert sd1[0][0] == "IN00" and len(sd1[0]) == 12 and sd1[1] == ["BASE", "M00"] and sd1[2][-1] == "OUT11"
    sdxl = columns_of(resolve_layout("sdxl-supermerger_blocks").blocks)
    assert sdxl[1] == ["BASE", "M00", "VAE"]
    flux = columns_of(resolve_layout("flux-mecha_blocks").blocks)
    assert (len(flux[0]), len(flux[2])) == (19, 38) and column_title(flux[0]) == "DOUBLE"
    joint = resolve_layout("sd3.5_large-mecha_blocks").blocks
    halves = columns_of(joint)
    assert (len(halves[0]), len(halves[2])) == (19, 19)
    assert column_title(halves[0], joint) == "JOINT00–JOINT18"
    sizes = column_sizes()
    for ident in ("sd1-supermerger_blocks", "sdxl-supermerger_blocks", "flux-mecha_blocks"):
        assert all(len(col) <= sizes[i] for i, col in enumerate(columns_of(resolve_layout(ident).blocks)))


@pytest.mark.parametrize("method, name, kind", [
    ("weighted_sum", "alpha", "slider"), ("ties_sum", "vote_sgn", "check"), ("cast", "dtype", "choice"),
    ("omit_component", "component", "text"), ("truncate_rank", "approximate_basis_seed", "number"),
])
def test_widget_kinds(method, name, kind):
    assert widget_kind(resolve(method).param(name)) == kind


def test_a_pasted_value_outside_the_slider_range_widens_it():
    p = resolve("weighted_sum").param("alpha")
    assert slider_range(p) == (0.0, 1.0)
    assert slider_range(p, 1.5) == (0.0, 1.5)


def test_progress_bar_states():
    job = Job("save", "save x")
    assert 'data-state="running"' in progress_html(job) and "planning" in progress_html(job)
    job.planned(40, 4000)
    job.progress(1, 40, 300)
    html = progress_html(job)
    assert "8% (1 of 40 keys)" in html and "left" not in html and "width:7.5%" in html
    job.progress(10, 40, 1000)
    html = progress_html(job)
    assert "25% (10 of 40 keys)" in html and "left" in html and "width:25.0%" in html
    job.error = None
    job.finished.set()
    assert 'data-state="done"' in progress_html(job)
    from lib_mecha.errors import MergeCancelled
    job.error = MergeCancelled()
    assert 'data-state="cancelled"' in progress_html(job)
    assert progress_html(None) == ""
    assert format_seconds(75) == "1 min 15 s" and format_seconds(3.4) == "3 s"


def test_initial_render_matches_its_outputs(tab):
    fn, inputs, outputs = tab.mecha_context.initial
    s = Session()
    s.draft = (replace(s.draft[0], loras=(m.LoraEntry("lora_style.safetensors"),)),)
    assert len(fn(s)) == len(outputs)


def test_every_method_of_the_builder_has_a_section_of_the_guide():
    from lib_mecha.methods import all_methods
    from lib_mecha.ui.panel_recipe import GUIDE_SECTIONS, method_help
    from lib_mecha.ui.tab import ROOT
    guide = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    headings = {line[3:].strip() for line in guide.splitlines() if line.startswith("## ")}
    assert set(GUIDE_SECTIONS.values()) <= headings
    built_in = [n for n in builder_methods() if all_methods()[n].func.__module__.startswith("lib_mecha.methods.")]
    assert "weighted_sum" in built_in and "ties_sum" in built_in
    for name in built_in:   # not the methods other tests register (README's examples, test helpers)
        category = all_methods()[name].category
        assert category in GUIDE_SECTIONS, name
        assert f'(#mecha_guide "{GUIDE_SECTIONS[category]}")' in method_help(all_methods()[name])
        assert re.search(rf"`{name}[(`]", guide), name


def test_values_carry_over_only_to_a_parameter_of_the_same_meaning():
    step = m.new_step("weighted_sum").with_param("alpha", m.ParamValue(0.3))
    assert m.new_step("slerp", step).param("alpha") == m.ParamValue(0.3)        # 0 keeps A, 1 gives B
    assert m.new_step("add_difference", step).param("alpha") == m.ParamValue(1.0)  # a strength
    assert m.new_step("geometric_sum", step).param("alpha") == m.ParamValue(0.3)


def test_slider_boxes_show_at_most_four_decimals():
    from lib_mecha.ui.panel_recipe import shown_number
    assert shown_number(11 / 12) == 0.9167 and shown_number(0.5) == 0.5 and shown_number(3) == 3
