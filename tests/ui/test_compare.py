"""Compare in the tab: the original checkpoint's preview beside the loaded merge's (same seed and
settings), optionally their difference, the merge loaded again afterwards; against the stand-in
A1111 and Forge 2.x, from the panel's handler and in Debian's chromium (both gradio stacks)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import lib_mecha
from lib_mecha.recipe import model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))
from host_stub import options  # noqa: E402

from lib_mecha.host.base import MergeIdentity, PreviewParams  # noqa: E402
from lib_mecha.ui import actions  # noqa: E402

RECIPE = lib_mecha.weighted_sum(model("model-a.safetensors"), model("model-b.safetensors"), alpha=0.4)


@pytest.fixture()
def host(webui_host):
    """The WebUI's host adapter in this module (the standalone one elsewhere in tests/ui)."""
    return webui_host


def load_merge(host):
    ident = MergeIdentity.from_recipe(lib_mecha.serialize(RECIPE), "compared")
    host.hot_load(RECIPE, ident, options(host))
    return ident


def test_compare_shows_the_original_and_the_merge_and_keeps_the_merge(webui, host):
    from lib_mecha.ui.panel_actions import ActionsPanel
    original = webui.pixels(seed=11)
    with pytest.raises(lib_mecha.MechaError, match="no merge is loaded"):
        actions.compare(host, PreviewParams(seed=11, steps=1, width=8, height=8, prompt="a cat"))
    ident = load_merge(host)
    merged = webui.pixels(seed=11)
    images, timing = actions.compare(host, PreviewParams(seed=11, steps=1, width=8, height=8, prompt="a cat",
                                                         cfg_scale=7.0), show_difference=True)
    assert [caption.split(" ")[0] for _, caption in images] == ["original", "merge", "difference"]
    assert images[0][0].tobytes() == original and images[1][0].tobytes() == merged
    assert images[2][1].startswith("difference ×")
    assert timing.startswith("seed 11; original back in ") and " keys), merge again in " in timing
    assert host.hot_loaded() == ident and webui.pixels(seed=11) == merged
    # the panel's handler, with a random seed: both sides get the same concrete one
    panel = ActionsPanel(type("Ctx", (), {"host": host})())
    gallery, message = panel.on_compare("a cat", "", -1, 1, 7.0, 8, 8, "Euler a", False)
    assert len(gallery["value"]) == 2 and re.search(r"original and merge compared: seed \d+; ", message["value"])
    assert host.hot_loaded() == ident


def test_the_difference_of_identical_images_says_so():
    from PIL import Image
    image = Image.new("RGB", (4, 4), (10, 20, 30))
    diff, caption = actions.difference_image(image, image.copy())
    assert caption == "difference: none (identical pixels)" and diff.getextrema() == ((0, 0),) * 3


# --- in the browser -------------------------------------------------------------------------------------

@pytest.mark.browser
@pytest.mark.parametrize("webui", ["a1111"], indirect=True)
def test_compare_in_the_browser(webui, host, browser):
    from ui_browser import click, expect_text, fill_text, open_page, serve_tab, set_number
    webui.pixels(seed=5)
    ident = load_merge(host)
    with serve_tab(host) as url:
        ctx, page = open_page(browser, url)
        try:
            fill_text(page, "mecha_prompt", "a cat")
            set_number(page, "mecha_seed", 5)
            set_number(page, "mecha_preview_steps", 1)
            click(page, "mecha_compare_diff")
            click(page, "mecha_compare")
            expect_text(page, "mecha_preview_message", re.compile(
                r"original and merge compared: seed 5; original back in [\d.]+ s \(\d+ keys\), merge again in"))
            gallery = page.locator("#mecha_gallery")
            for caption in ("original checkpoint", "merge", "difference"):
                expect_text(page, "mecha_gallery", caption)
            assert gallery.locator("img").count() >= 3
        finally:
            ctx.close()
    assert host.hot_loaded() == ident
