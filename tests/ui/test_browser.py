"""The standalone tab in Debian's chromium (Playwright), under this venv's gradio.

Models are tiny real SD1 checkpoints (every key, 1/8 of each dimension) written by the fixture.
REQUIRE_BROWSER=1 turns a missing chromium into a failure instead of a skip.
"""
from __future__ import annotations

import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import lib_mecha
from lib_mecha import deserialize, serialize
from lib_mecha.arch.block_weights import blocks
from lib_mecha.methods import build
from lib_mecha.recipe import model

from ui_browser import (click, expect_step, expect_text, expect_value, fill_text, open_page, pick, pick_step,
                        recipe_text, serve_tab, set_number, value_of, wait_progress, wait_recipe)
from ui_helpers import SLOW, register_slow_method, write_models

pytestmark = pytest.mark.browser

SD1 = "sd1-supermerger_blocks"
BLOCKS = ("BASE", *[f"IN{i:02d}" for i in range(12)], "M00", *[f"OUT{i:02d}" for i in range(12)])
# the comma list typed into the tab: OUT11 left empty (it takes the default, 0.5)
TYPED = [0.1] + [0.25] * 12 + [0.5] + [0.75] * 11 + [None]
COMMA = ",".join("" if v is None else str(v) for v in TYPED)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("browser-models"), 8)


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("browser-saved")


@pytest.fixture(scope="module")
def app(models, save_dir):
    from lib_mecha.host.standalone import StandaloneHost
    from lib_mecha.methods import unregister
    register_slow_method()
    host = StandaloneHost(checkpoint_dirs=[models], lora_dirs=[models], save_dir=save_dir,
                          data_dir=save_dir.parent / "mecha-data", options={"mecha_threads": 2})
    try:
        with serve_tab(host) as url:
            yield url
    finally:
        unregister(SLOW)


@pytest.fixture()
def page(browser, app):
    ctx, pg = open_page(browser, app)
    try:
        yield pg
    finally:
        ctx.close()


def expected_recipe():
    values = {b: v for b, v in zip(BLOCKS, TYPED) if v is not None}
    values["M00"] = 0.9
    first = lib_mecha.weighted_sum(model("a.safetensors"), model("b.safetensors"),
                                   alpha=blocks(SD1, values, default=0.5))
    with_lora = build("apply_lora", first, model("lora_style.safetensors"), 0.6)
    return lib_mecha.weighted_sum(with_lora, model("c.safetensors"), alpha=0.3)


def build_two_steps(page):
    """Step 1: a × b with block weights and a LoRA; step 2: the result with c."""
    pick(page, "mecha_input_0", "a.safetensors")
    expect_text(page, "mecha_text_message", "input 'b'")
    pick(page, "mecha_input_1", "b.safetensors")
    wait_recipe(page, lambda t: 'merge "weighted_sum"' in t)
    pick(page, "mecha_param_0_mode", "per block (MBW)")
    expect_value(page, "mecha_mbw_text", ",".join(["0.5"] * 26))
    fill_text(page, "mecha_mbw_text", COMMA)
    click(page, "mecha_mbw_apply")
    expect_text(page, "mecha_mbw_2_11", "OUT11 (default)")  # the sliders show the applied list
    expect_value(page, "mecha_mbw_text", COMMA)
    expect_text(page, "mecha_mbw_0_0", "IN00")
    set_number(page, "mecha_mbw_1_1", 0.9)             # middle column: BASE, M00
    expect_value(page, "mecha_mbw_text", COMMA.replace(",0.5,", ",0.9,"))
    click(page, "mecha_lora_add")
    expect_value(page, "mecha_lora_0_file", "lora_style.safetensors")
    expect_text(page, "mecha_lora_warning", "lora_unet_not_a_module_anywhere")
    set_number(page, "mecha_lora_0_strength", 0.6)
    wait_recipe(page, lambda t: "key=0.6" in t)
    click(page, "mecha_step_add")
    expect_value(page, "mecha_input_0", "[step 1]")
    pick(page, "mecha_input_1", "c.safetensors")
    wait_recipe(page, lambda t: 'model "c.safetensors"' in t)
    set_number(page, "mecha_param_0_slider", 0.3)
    return wait_recipe(page, lambda t: t == serialize(expected_recipe()))


def test_two_steps_with_block_weights_and_a_lora_saved_and_pasted_back(page, models, save_dir):
    text = build_two_steps(page)
    assert text == serialize(expected_recipe())

    # save: fp32, EMA pruned
    fill_text(page, "mecha_save_name", "ui-merge")
    pick(page, "mecha_save_dtype", "fp32")
    click(page, "mecha_save")
    wait_progress(page, "done", "mecha_save")
    expect_text(page, "mecha_save_message", "saved ")
    expect_text(page, "mecha_save_message", "warning: 1 of 2 modules")  # the stray LoRA module, named
    expect_text(page, "mecha_save_message", "lora_unet_not_a_module_anywhere")
    path = save_dir / "ui-merge.safetensors"
    saved = load_file(str(path))
    pruned = build("omit_component", expected_recipe(), "ema")
    reference = lib_mecha.merge(pruned, model_dirs=[str(models)], output_dtype="fp32").state_dict
    assert saved.keys() == reference.keys()
    for key, tensor in reference.items():
        assert torch.equal(saved[key], tensor), key
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    stored = deserialize(meta["mecha_recipe"])
    assert stored.method == "omit_component"
    assert 'merge "apply_lora"' in meta["mecha_recipe"] and "M00=0.9" in meta["mecha_recipe"]

    # change the builder, then paste the recipe back: the builder is rebuilt exactly
    click(page, "mecha_step_remove")
    wait_recipe(page, lambda t: 'model "c.safetensors"' not in t)
    fill_text(page, "mecha_recipe_text", text)
    click(page, "mecha_text_load")
    expect_text(page, "mecha_text_message", "loaded a recipe of 2 step(s)")
    assert wait_recipe(page, lambda t: t == text) == text
    expect_step(page, "2. weighted_sum(step 1, c)")
    expect_value(page, "mecha_input_0", "[step 1]")
    expect_value(page, "mecha_input_1", "c.safetensors")
    assert float(value_of(page, "mecha_param_0_slider")) == 0.3
    pick_step(page, 1)
    expect_value(page, "mecha_input_0", "a.safetensors")
    expect_value(page, "mecha_param_0_mode", "per block (MBW)")
    expect_value(page, "mecha_lora_0_file", "lora_style.safetensors")
    assert float(value_of(page, "mecha_lora_0_strength")) == 0.6
    expect_value(page, "mecha_mbw_text", COMMA.replace(",0.5,", ",0.9,"))
    assert recipe_text(page) == text

    # the finalized recipe embedded in the file reads back too (absolute paths, configs)
    fill_text(page, "mecha_recipe_text", meta["mecha_recipe"])
    click(page, "mecha_text_load")
    expect_text(page, "mecha_text_message", "loaded a recipe of 3 step(s)")
    shown = wait_recipe(page, lambda t: 'merge "omit_component"' in t)
    assert deserialize(shown) == stored


def test_broken_paste_upload_and_overwrite_confirmation(page, tmp_path, save_dir):
    assert page.evaluate("() => window.mechaTabStarted === true")  # javascript/mecha.js ran
    pick(page, "mecha_input_0", "a.safetensors")
    pick(page, "mecha_input_1", "c.safetensors")
    before = wait_recipe(page, lambda t: 'model "c.safetensors"' in t)
    broken = before.replace('merge "weighted_sum" &0 &1', 'merge "weighted_summ" &0 &1')
    fill_text(page, "mecha_recipe_text", broken)
    page.locator("#mecha_recipe_text textarea").press("Control+Enter")  # mecha.js: load the text
    expect_text(page, "mecha_text_message", re.compile(r"line \d+, column \d+: unknown merge method 'weighted_summ'"))
    assert recipe_text(page) == broken  # left for fixing
    expect_step(page, "1. weighted_sum(a, c)")
    pick(page, "mecha_input_1", "b.safetensors")  # the next edit shows the builder's recipe again
    wait_recipe(page, lambda t: 'model "b.safetensors"' in t and "weighted_summ" not in t)

    uploaded = serialize(lib_mecha.n_average(model("c.safetensors"), model("b.safetensors"), model("a.safetensors")))
    path = tmp_path / "average.mecha"
    path.write_text(uploaded + "\n", encoding="utf-8")
    page.set_input_files("#mecha_text_upload input[type=file]", str(path))
    expect_step(page, "1. n_average(c, b, a)")
    assert wait_recipe(page, lambda t: t == uploaded) == uploaded
    expect_value(page, "mecha_method", "n_average")

    # save, then save again under the same name: the tab asks before overwriting
    fill_text(page, "mecha_save_name", "average")
    click(page, "mecha_save")
    wait_progress(page, "done", "mecha_save")
    first = (save_dir / "average.safetensors").stat().st_mtime_ns
    click(page, "mecha_save")
    expect_text(page, "mecha_save_confirm_text", "average.safetensors already exists in")
    click(page, "mecha_save_keep")
    expect_text(page, "mecha_save_message", "kept the existing file; nothing saved")
    assert (save_dir / "average.safetensors").stat().st_mtime_ns == first
    click(page, "mecha_save")
    expect_text(page, "mecha_save_confirm_text", "Overwrite replaces that file")
    click(page, "mecha_save_overwrite")
    expect_text(page, "mecha_save_message", re.compile(r"saved .*average\.safetensors"))
    assert (save_dir / "average.safetensors").stat().st_mtime_ns != first
    with safe_open(str(save_dir / "average.safetensors"), "pt") as f:
        assert 'merge "n_average"' in f.metadata()["mecha_recipe"]


def test_cancel_midway_leaves_no_file_and_a_second_save_is_refused(page, save_dir):
    pick(page, "mecha_method", SLOW)
    expect_text(page, "mecha_method_help", "Slow lerp (test)")
    pick(page, "mecha_input_0", "a.safetensors")
    pick(page, "mecha_input_1", "b.safetensors")
    wait_recipe(page, lambda t: f'merge "{SLOW}"' in t)
    fill_text(page, "mecha_save_name", "cancelled")
    click(page, "mecha_save")
    page.wait_for_selector('#mecha_save_progress .mecha-progress[data-state="running"]:not([data-done="0"])')
    click(page, "mecha_save")  # a second save while the first runs: answered at once
    expect_text(page, "mecha_save_message", "a save is running (save cancelled.safetensors")
    click(page, "mecha_save_cancel")
    wait_progress(page, "cancelled", "mecha_save")
    expect_text(page, "mecha_save_message", "cancelled")
    done = int(page.locator("#mecha_save_progress .mecha-progress").get_attribute("data-done"))
    total = int(page.locator("#mecha_save_progress .mecha-progress").get_attribute("data-total"))
    assert 0 < done < total
    assert sorted(p.name for p in save_dir.iterdir() if "cancelled" in p.name) == []


def test_extract_a_lora_from_the_current_recipe_into_the_lora_folder(page, models):
    from lib_mecha.lora import extract_lora
    pick(page, "mecha_input_0", "a.safetensors")
    pick(page, "mecha_input_1", "b.safetensors")
    wait_recipe(page, lambda t: 'model "b.safetensors"' in t)
    page.locator("#mecha_extract_panel .label-wrap").first.click()   # the panel starts closed
    expect_value(page, "mecha_extract_tuned", "(the current recipe)")
    pick(page, "mecha_extract_base", "a.safetensors")
    set_number(page, "mecha_extract_rank", 3)

    fill_text(page, "mecha_extract_name", "../escape")
    click(page, "mecha_extract_run")
    expect_text(page, "mecha_extract_message", "leaves the save folder")   # next to the Extract button
    assert not (models.parent / "escape.safetensors").exists()

    fill_text(page, "mecha_extract_name", "from-recipe")
    click(page, "mecha_extract_run")
    wait_progress(page, "done", "mecha_extract")
    expect_text(page, "mecha_extract_message", re.compile(r"saved LoRA .*from-recipe\.safetensors"))
    expect_text(page, "mecha_extract_message", "<lora:from-recipe:1>")
    saved = load_file(str(models / "from-recipe.safetensors"))
    recipe = lib_mecha.weighted_sum(model("a.safetensors"), model("b.safetensors"), alpha=0.5)
    reference = extract_lora(recipe, model("a.safetensors"), models.parent / "reference.safetensors", rank=3,
                             model_dirs=[str(models)], hash_inputs=False)
    expected = load_file(str(reference.path))
    assert saved.keys() == expected.keys() and len(saved) > 100
    for key, tensor in expected.items():
        assert torch.equal(saved[key], tensor), key

    click(page, "mecha_lora_add")   # the new LoRA is in the tab's LoRA list at once
    pick(page, "mecha_lora_0_file", "from-recipe.safetensors")
    wait_recipe(page, lambda t: 'model "from-recipe.safetensors"' in t)
