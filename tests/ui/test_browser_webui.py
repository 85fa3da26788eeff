"""The tab inside a WebUI, in Debian's chromium under this venv's gradio: the stand-in A1111 of
tests/webui_stub with the real host adapter. A second Merge & load is answered, the merge's
progress sits by its button, uncovered, and the preview takes sizes from 64 px and the host's own
samplers (modules/sd_samplers.py ``visible_sampler_names``)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ui_browser import (click, expect_text, expect_value, gap_between, open_page, pick, serve_tab,
                        seen, set_number, wait_progress, wait_recipe)
from ui_helpers import SLOW, register_slow_method

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))
from host_stub import WebUI, stand_in  # noqa: E402

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    w = WebUI("a1111", tmp_path_factory.mktemp("webui"))
    yield w
    from lib_mecha.host import extension
    extension._state.clear()
    stand_in.purge()


@pytest.fixture(scope="module")
def previews(webui):
    """The tab served over the stand-in's host; yields its URL and the preview requests it made."""
    from lib_mecha.host.detect import make_host
    from lib_mecha.methods import unregister
    register_slow_method(delay=1.0)  # the stand-in's models have 11 keys: a merge of several seconds
    host = make_host()
    webui.pixels()  # the stand-in loads its model lazily; hot-loading compares against the live one
    asked = []
    generate = host.generate

    def recorded(params, *args, **kwargs):
        asked.append(params)
        return generate(params, *args, **kwargs)
    host.generate = recorded
    # A1111 shows a loaded checkpoint with its short hash: "model-a.safetensors [0dbca370ec]"
    labels = {ref.name: ref.label for ref in host.list_checkpoints()}
    try:
        with serve_tab(host) as url:
            yield url, asked, labels
    finally:
        host.close()
        unregister(SLOW)


@pytest.fixture()
def page(browser, previews):
    ctx, pg = open_page(browser, previews[0])
    try:
        yield pg
    finally:
        ctx.close()


def two_models(page, labels):
    pick(page, "mecha_input_0", labels["model-a.safetensors"])
    pick(page, "mecha_input_1", labels["model-b.safetensors"])
    wait_recipe(page, lambda t: 'model "model-b.safetensors"' in t)


def test_a_second_merge_and_load_is_answered_and_the_progress_is_by_the_button(page, previews):
    pick(page, "mecha_method", SLOW)
    two_models(page, previews[2])
    click(page, "mecha_merge")
    page.wait_for_selector('#mecha_progress .mecha-progress[data-state="running"]')
    click(page, "mecha_merge")
    busy = page.get_by_text(re.compile(r"a merge is running \(merge & load")).first
    expect(busy).to_be_visible()
    assert gap_between(page, "#mecha_merge", busy) < 250   # under the button's progress bar, not elsewhere
    assert seen(page, "#mecha_progress .mecha-progress-text")["covered"] == ""  # not under gradio's overlay
    click(page, "mecha_cancel")
    wait_progress(page, "cancelled")
    expect_text(page, "mecha_message", "cancelled")


def test_previews_from_64_px_with_the_hosts_samplers(page, previews):
    asked = previews[1]
    two_models(page, previews[2])
    click(page, "mecha_merge")
    wait_progress(page, "done")
    expect_value(page, "mecha_sampler", "Euler a")
    pick(page, "mecha_sampler", "DPM++ 2M")
    set_number(page, "mecha_width", 64)
    set_number(page, "mecha_height", 64)
    page.wait_for_timeout(300)
    click(page, "mecha_generate")
    expect_text(page, "mecha_preview_message", "1 preview image(s)")
    assert (asked[-1].width, asked[-1].height, asked[-1].sampler_name) == (64, 64, "DPM++ 2M")
    click(page, "mecha_restore")
    expect_text(page, "mecha_message", "restored the original checkpoint")
