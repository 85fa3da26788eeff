"""The tab as a user meets it (issue 19), in Debian's chromium under this venv's gradio: forms that
follow the method, feedback next to Save, an honest ETA, every action answered, nothing cut off at
1400 px, what an overwrite puts at stake, the guide to the methods, and bad input.

The standalone tab serves tiny real SD1 checkpoints (and one SDXL one); the WebUI-only actions
(Merge & load, previews) are in test_browser_webui.py.
"""
from __future__ import annotations

import re
import shutil
import time

import pytest
import torch
from safetensors.torch import save_file

from lib_mecha.arch.demo import random_state_dict
from playwright.sync_api import expect
from ui_browser import (click, cut_off, expect_text, expect_value, fill_text, gap_between, open_page, pick,
                        pick_step, recipe_text, seen, serve_tab, set_number, value_of, wait_recipe)
from ui_helpers import SIZED, SLOW, register_sized_method, register_slow_method, write_models

pytestmark = pytest.mark.browser

# model file names of 60 characters, as real ones are
LONG_A = "realisticVisionV60B1_v51HyperVAE-inpainting-fp16.safetensors"
LONG_B = "juggernautXL_ragnarokBy-RunDiffusion-v9-pruned-x.safetensors"
LONG_LORA = "add-detail-xl_style-lora_v2.1-by-someone-rank64x.safetensors"
SD1_BLOCKS = 26


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = write_models(tmp_path_factory.mktemp("usability-models"), 8)
    for name in (LONG_A, LONG_B, LONG_LORA):
        assert len(name) == 60
    shutil.copy(folder / "a.safetensors", folder / LONG_A)
    shutil.copy(folder / "a.safetensors", folder / LONG_B)
    shutil.copy(folder / "lora_style.safetensors", folder / LONG_LORA)
    save_file(random_state_dict("sdxl-sgm", 0, dtype=torch.float16, shape_divisor=32), str(folder / "xl.safetensors"))
    return folder


@pytest.fixture(scope="module")
def save_dir(models):
    return models  # as in a WebUI: merges are saved among the checkpoints, next to their inputs


@pytest.fixture(scope="module")
def app(models, save_dir):
    from lib_mecha.host.standalone import StandaloneHost
    from lib_mecha.methods import unregister
    register_slow_method()
    register_sized_method(2.5e-6)  # about 42 s of waits over the 16.7 M elements of a model, on two threads
    host = StandaloneHost(checkpoint_dirs=[models], lora_dirs=[models], save_dir=save_dir,
                          data_dir=models.parent / "usability-data", options={"mecha_threads": 2})
    try:
        with serve_tab(host) as url:
            yield url
    finally:
        unregister(SLOW)
        unregister(SIZED)


@pytest.fixture()
def page(browser, app):
    ctx, pg = open_page(browser, app, height=800)
    try:
        yield pg
    finally:
        ctx.close()


def two_inputs(page, a="a.safetensors", b="b.safetensors"):
    pick(page, "mecha_input_0", a)
    pick(page, "mecha_input_1", b)
    wait_recipe(page, lambda t: f'model "{b}"' in t)


# --- 1. help, labels and defaults follow the method ----------------------------------------------------

def test_a_new_method_brings_its_own_help_labels_and_defaults(page):
    two_inputs(page)
    pick(page, "mecha_method", "add_difference")
    expect_text(page, "mecha_input_1", "the difference to add")
    expect_text(page, "mecha_input_1", "(a difference)")
    expect_value(page, "mecha_param_0_slider", "1")          # add_difference's own default, not 0.5
    set_number(page, "mecha_param_0_slider", 0.7)
    expect_text(page, "mecha_param_0", "Strength of the difference")

    pick(page, "mecha_method", "slerp")
    expect_value(page, "mecha_param_0_slider", "0.5")        # slerp's alpha is a mix, not a strength
    expect_text(page, "mecha_param_0", "0 keeps A, 1 gives B")
    expect(page.locator("#mecha_input_1")).not_to_contain_text("the difference to add")
    expect(page.locator("#mecha_input_1")).not_to_contain_text("(a difference)")
    expect(page.locator("#mecha_param_0")).not_to_contain_text("Strength of the difference")

    set_number(page, "mecha_param_0_slider", 0.3)            # same name, same meaning: it carries over
    wait_recipe(page, lambda t: "key=0.3" in t)
    pick(page, "mecha_method", "weighted_sum")
    expect_value(page, "mecha_param_0_slider", "0.3")
    expect_text(page, "mecha_param_0", "How much of B")


# --- 2. feedback next to Save; 6. what an overwrite puts at stake --------------------------------------

def scroll_to_save(page):
    page.locator("#mecha_save").first.scroll_into_view_if_needed()


def test_save_feedback_progress_and_cancel_are_where_save_was_pressed(page, save_dir):
    two_inputs(page)
    pick(page, "mecha_param_0_mode", "per block (MBW)")      # the block sliders push Save far down
    expect_value(page, "mecha_mbw_text", ",".join(["0.5"] * SD1_BLOCKS))
    fill_text(page, "mecha_save_name", "../outside")
    scroll_to_save(page)
    click(page, "mecha_save")
    refusal = page.get_by_text(re.compile("leaves the save folder")).first
    expect(refusal).to_be_visible()
    expect(refusal).to_be_in_viewport()
    expect(page.locator("#mecha_save").first).to_be_in_viewport()

    pick(page, "mecha_method", SLOW)
    two_inputs(page)
    fill_text(page, "mecha_save_name", "feedback")
    scroll_to_save(page)
    click(page, "mecha_save")
    running = page.locator('.mecha-progress[data-state="running"]:not([data-done="0"])').first
    expect(running).to_be_in_viewport()
    expect(running.locator(".mecha-progress-text")).to_contain_text("save feedback.safetensors: merging")
    # gradio's own loading overlay is not on top of it, and the line is whole and large enough
    looks = seen(page, '.mecha-progress[data-state="running"] .mecha-progress-text')
    assert looks["covered"] == "" and not looks["cut"] and looks["fontSize"] >= 13, looks
    cancel = page.locator("#tab_mecha button:visible", has_text=re.compile(r"^\s*Cancel\s*$")).first
    expect(cancel).to_be_in_viewport()
    cancel.click()
    expect(page.get_by_text(re.compile(r"cancelled")).first).to_be_in_viewport()
    assert not list(save_dir.glob("feedback*"))


def test_the_overwrite_prompt_says_what_is_at_stake_and_an_input_is_never_offered(page, models, save_dir):
    two_inputs(page)
    fill_text(page, "mecha_save_name", "kept")
    click(page, "mecha_save")
    expect(page.get_by_text(re.compile(r"saved .*kept\.safetensors")).first).to_be_visible()
    click(page, "mecha_save")
    prompt = page.locator("#mecha_save_confirm_text").first
    expect(prompt).to_contain_text(f"kept.safetensors already exists in {save_dir}")
    expect(prompt).to_contain_text(re.compile(r"\(\d+\.\d MiB, last changed \d{4}-\d\d-\d\d \d\d:\d\d\)"))
    expect(prompt).to_contain_text("Overwrite replaces that file with this merge")
    click(page, "mecha_save_keep")

    before = (models / "a.safetensors").stat()
    fill_text(page, "mecha_save_name", "a")                  # the recipe's own input A
    scroll_to_save(page)
    click(page, "mecha_save")
    refusal = page.get_by_text(re.compile("is an input of this recipe")).first
    expect(refusal).to_be_in_viewport()
    expect(page.locator("#mecha_save_overwrite").first).to_be_hidden()   # not even offered
    after = (models / "a.safetensors").stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


# --- 3. an honest ETA ------------------------------------------------------------------------------

def test_the_eta_waits_for_a_tenth_of_the_work_then_stays_within_a_factor_of_two(page, save_dir):
    pick(page, "mecha_method", SIZED)
    two_inputs(page)
    fill_text(page, "mecha_save_name", "eta")
    click(page, "mecha_save")
    samples = []   # (time, text) of the progress line while merging
    deadline = time.monotonic() + 180
    state = None
    while time.monotonic() < deadline:
        bar = page.locator(".mecha-progress").first
        state = bar.get_attribute("data-state") if bar.count() else None
        if state in ("done", "error", "cancelled"):
            break
        text = bar.inner_text() if bar.count() else ""
        if "merging" in text:
            samples.append((time.monotonic(), text))
        page.wait_for_timeout(200)
    ended = time.monotonic()
    assert state == "done", page.locator(".mecha-progress").first.inner_text()
    first = samples[0][0]
    length = ended - first
    assert length > 8, "the merge ended too soon to judge an ETA"
    etas = [(t, seconds_left(text)) for t, text in samples]
    early = [eta for t, eta in etas if t - first < 0.05 * length]
    assert early and all(eta is None for eta in early), f"an ETA before a tenth of the work: {early}"
    # the last seconds are the many small keys, whose fixed cost per key no byte count foresees
    judged = [(eta, ended - t) for t, eta in etas if eta is not None and ended - t >= 5]
    assert len(judged) >= 5, etas
    for eta, real in judged:
        assert real / 2 <= eta <= real * 2, f"ETA {eta} s with {real:.1f} s to go; all: {etas}"
    (save_dir / "eta.safetensors").unlink()


def seconds_left(text: str):
    found = re.search(r"(?:ETA|about) (?:(\d+) min )?(\d+) s", text)  # "about 12 s left" (main had "ETA 12 s")
    if not found:
        return None
    return int(found.group(1) or 0) * 60 + int(found.group(2))


# --- 4. every action answers: the preset shown is the one applied ------------------------------------------

def test_the_preset_dropdown_shows_the_preset_the_blocks_hold(page):
    two_inputs(page)
    pick(page, "mecha_param_0_mode", "per block (MBW)")
    pick(page, "mecha_mbw_preset", "GRAD_V")
    expect_value(page, "mecha_mbw_text", re.compile(r"^0,1,0\.916667,"))
    expect_value(page, "mecha_mbw_preset", "GRAD_V")
    set_number(page, "mecha_mbw_0_0", 0.5)                  # IN00 moved: no preset holds these values
    expect_value(page, "mecha_mbw_text", re.compile(r"^0,0\.5,"))
    expect_value(page, "mecha_mbw_preset", "")


# --- 5. nothing cut off at 1400 px ---------------------------------------------------------------------

def test_nothing_is_cut_off_at_1400_px(page):
    pick(page, "mecha_method", "triple_sum")                 # three inputs
    pick(page, "mecha_input_0", LONG_A)
    pick(page, "mecha_input_1", LONG_B)
    pick(page, "mecha_input_2", "c.safetensors")
    wait_recipe(page, lambda t: 'merge "triple_sum"' in t)
    pick(page, "mecha_param_0_mode", "per block (MBW)")
    pick(page, "mecha_mbw_preset", "GRAD_V")                 # values such as 11/12 on the sliders
    expect_value(page, "mecha_mbw_text", re.compile(r"^0,1,0\.916667,"))
    click(page, "mecha_lora_add")
    pick(page, "mecha_lora_0_file", LONG_LORA)
    wait_recipe(page, lambda t: LONG_LORA in t)
    click(page, "mecha_step_add")
    expect_value(page, "mecha_input_0", "[step 1]")
    pick_step(page, 1)
    expect_value(page, "mecha_input_0", LONG_A)
    page.wait_for_timeout(500)
    assert cut_off(page) == []
    boxes = page.locator("#tab_mecha input[type=number]:visible")
    shown = [boxes.nth(i).input_value() for i in range(boxes.count())]
    assert "0.9167" in shown and not [v for v in shown if re.search(r"\.\d{5,}", v)], shown


# --- 7. the guide to the methods -----------------------------------------------------------------------

def test_the_method_help_opens_the_guide_at_the_methods_family(page):
    pick(page, "mecha_method", "ties_sum")
    link = page.locator("#mecha_method_help a").first
    expect(link).to_contain_text("TIES, DARE, DELLA, Model Stock")
    link.click()
    heading = page.locator("#mecha_guide h2", has_text="TIES, DARE, DELLA, Model Stock").first
    expect(heading).to_be_visible()
    expect(heading).to_be_in_viewport()
    expect(page.locator("#mecha_guide").first).to_contain_text("apply_stock is inverted")


# --- bad input: a clear message next to the control, nothing lost ----------------------------------------

def test_nonsense_in_the_recipe_box_is_named_and_the_builder_keeps_its_recipe(page):
    two_inputs(page)
    before = recipe_text(page)
    fill_text(page, "mecha_recipe_text", "merge me please")
    click(page, "mecha_text_load")
    expect_text(page, "mecha_text_message", re.compile(r"line 1"))
    assert gap_between(page, "#mecha_text_message", "#mecha_recipe_text") < 120
    assert recipe_text(page) == "merge me please"            # left for fixing
    expect_value(page, "mecha_steps", re.compile(r"^1\. weighted_sum"))
    expect_value(page, "mecha_input_1", "b.safetensors")
    set_number(page, "mecha_param_0_slider", 0.25)           # the next edit shows the builder's recipe
    assert wait_recipe(page, lambda t: "key=0.25" in t) == before.replace("key=0.5", "key=0.25")


def test_a_checkpoint_in_a_difference_input_is_named_next_to_it_and_the_recipe_text_stays(page):
    two_inputs(page)
    before = recipe_text(page)
    pick(page, "mecha_method", "add_difference")             # b is now a checkpoint where a difference goes
    message = page.get_by_text(re.compile(r"add_difference: parameter 'b' expects a delta")).first
    expect(message).to_be_visible()
    page.locator("#mecha_input_1").first.scroll_into_view_if_needed()
    expect(message).to_be_in_viewport()
    assert page.locator("#mecha_input_1").first.bounding_box()["y"] < message.bounding_box()["y"]
    assert gap_between(page, "#mecha_input_1", "#mecha_step_message") < 150
    page.wait_for_timeout(500)
    assert recipe_text(page) == before                       # not blank while the error shows


def test_block_weights_of_another_architecture_are_named_and_kept(page):
    two_inputs(page)
    pick(page, "mecha_param_0_mode", "per block (MBW)")
    pick(page, "mecha_mbw_preset", "GRAD_V")
    expect_value(page, "mecha_mbw_text", re.compile(r"^0,1,0\.916667,"))
    values = value_of(page, "mecha_mbw_text")

    # another layout's list: 21 values (SDXL's) for SD1's 26 blocks
    sdxl_list = ",".join(["0.2"] * 21)
    fill_text(page, "mecha_mbw_text", sdxl_list)
    click(page, "mecha_mbw_apply")
    refusal = page.get_by_text(re.compile("21 values for the 26 blocks of sd1-supermerger_blocks")).first
    expect(refusal).to_be_visible()
    assert gap_between(page, refusal, "#mecha_mbw_text") < 120
    assert value_of(page, "mecha_mbw_text") == sdxl_list    # left for fixing
    expect_value(page, "mecha_mbw_preset", "GRAD_V")         # the blocks did not change

    # the step's models become SDXL ones: the SD1 block values no longer fit, and say so
    two_inputs(page, "xl.safetensors", "xl.safetensors")
    mismatch = page.get_by_text(re.compile("block layout sd1-supermerger_blocks is for sd1-ldm models, "
                                           "but step 1's models are sdxl-sgm")).first
    expect(mismatch).to_be_visible()
    assert gap_between(page, mismatch, "#mecha_mbw_layout") < 150
    expect_value(page, "mecha_mbw_text", values)             # nothing lost
    pick(page, "mecha_mbw_layout", "sdxl-supermerger_blocks")
    expect(page.get_by_text(re.compile("block layout .* is for")).first).to_be_hidden()
    expect_value(page, "mecha_mbw_text", ",".join(["0.5"] * 21))
