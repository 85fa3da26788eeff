"""Take the README screenshots of the tab with the browser tests' tooling (light and dark theme).

    .venvs/a1111/bin/python tests/ui/screenshots.py [--out docs/screenshots] [--webui-url URL]

Without a URL: the standalone tab over tiny generated SD1 models, with a two-step recipe (block
weights and a LoRA) -> mecha-tab-{light,dark}.png; and the tab with a WebUI host, the stand-in
WebUI of tests/webui_stub, after a Merge & load -> mecha-tab-webui-{light,dark}.png.

With ``--webui-url`` (or ``MECHA_WEBUI_URL``), e.g. ``http://127.0.0.1:7860/`` of a running A1111 or
Forge with the extension installed: only the WebUI pictures, taken from its Mecha tab (its first
two checkpoints merged and loaded; this takes as long as such a merge takes there).
Saves palette PNGs. Not a test: pytest does not collect it.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

from ui_browser import (CHROMIUM, CHROMIUM_ARGS, click, expect_value, open_page, pick, pick_step,  # noqa: E402
                        serve_tab, set_number, wait_progress)
from ui_helpers import write_models  # noqa: E402

MERGE_WAIT_MS = 15 * 60_000


def build_recipe(page) -> None:
    pick(page, "mecha_input_0", "a.safetensors")
    pick(page, "mecha_input_1", "b.safetensors")
    pick(page, "mecha_param_0_mode", "per block (MBW)")
    pick(page, "mecha_mbw_preset", "GRAD_V")
    expect_value(page, "mecha_mbw_text", re.compile(r"^0,"))
    click(page, "mecha_lora_add")
    expect_value(page, "mecha_lora_0_file", "lora_style.safetensors")
    set_number(page, "mecha_lora_0_strength", 0.6)
    click(page, "mecha_step_add")
    expect_value(page, "mecha_input_0", "[step 1]")
    pick(page, "mecha_input_1", "c.safetensors")
    set_number(page, "mecha_param_0_slider", 0.3)
    pick_step(page, 1)
    expect_value(page, "mecha_param_0_mode", "per block (MBW)")
    page.locator("#mecha_save_name textarea, #mecha_save_name input").first.fill("my-merge")
    page.wait_for_timeout(1500)


def checkpoint_labels(page, count: int):
    """The first ``count`` entries of the first input's list (the host's checkpoints)."""
    box = page.locator("#mecha_input_0 input").first
    box.click()
    options = page.locator('[data-testid="dropdown-option"]:visible')
    options.first.wait_for()
    labels = [options.nth(i).get_attribute("aria-label") for i in range(min(count, options.count()))]
    box.evaluate("(el) => el.blur()")
    page.wait_for_timeout(300)
    if len(labels) < count:
        raise SystemExit(f"the WebUI lists {len(labels)} checkpoint(s); the picture needs {count}")
    return labels


def merge_and_load(page) -> None:
    """Two of the host's checkpoints, block weights on alpha, merged and loaded into the WebUI."""
    first, second = checkpoint_labels(page, 2)
    pick(page, "mecha_input_0", first)
    pick(page, "mecha_input_1", second)
    pick(page, "mecha_param_0_mode", "per block (MBW)")
    pick(page, "mecha_mbw_preset", "GRAD_V")
    expect_value(page, "mecha_mbw_text", re.compile(r"^0,"))
    click(page, "mecha_merge")
    wait_progress(page, "done", timeout=MERGE_WAIT_MS)
    page.locator("#mecha_prompt textarea").first.fill("a lighthouse on a cliff at dusk")
    page.wait_for_timeout(1500)


def open_webui_tab(browser, url: str, dark: bool):
    """A WebUI page with its Mecha tab selected (the tab button is the one labelled Mecha)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme="dark" if dark else "light")
    page = ctx.new_page()
    page.set_default_timeout(120_000)
    page.goto(url + ("?__theme=dark" if dark else ""), wait_until="domcontentloaded")
    page.locator("button", has_text=re.compile(r"^\s*Mecha\s*$")).first.click()
    expect_value(page, "mecha_steps", re.compile(r"^1\. "))
    return ctx, page


def shrink(path: Path, colors: int = 128) -> None:
    from PIL import Image
    with Image.open(path) as img:
        img.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def shoot(page, target: Path) -> None:
    page.locator("#tab_mecha").first.screenshot(path=str(target))
    shrink(target)
    print(f"wrote {target} ({target.stat().st_size // 1024} KiB)")


def both_themes(open_tab, build, out: Path, name: str) -> None:
    """``build(page)`` on a page from ``open_tab(dark)``, then ``<name>-light.png`` and ``-dark.png``."""
    for theme in ("light", "dark"):
        ctx, page = open_tab(theme == "dark")
        try:
            build(page)
            shoot(page, out / f"{name}-{theme}.png")
        finally:
            ctx.close()


def served(browser, url: str):
    return lambda dark: open_page(browser, url, dark=dark, width=1280, height=900)


def standalone_shots(browser, out: Path, tmp: Path) -> None:
    from lib_mecha.host.standalone import StandaloneHost
    models = write_models(tmp / "models", 8)
    host = StandaloneHost(checkpoint_dirs=[models], lora_dirs=[models], save_dir=tmp / "saved",
                          data_dir=tmp / "data")
    with serve_tab(host) as url:
        both_themes(served(browser, url), build_recipe, out, "mecha-tab")


def webui_shots(browser, out: Path, url: str) -> None:
    both_themes(lambda dark: open_webui_tab(browser, url, dark), merge_and_load, out, "mecha-tab-webui")


def stand_in_shots(browser, out: Path, tmp: Path) -> None:
    """The tab with a WebUI host: the stand-in A1111 of tests/webui_stub, served standalone."""
    sys.path.insert(0, str(HERE.parent / "host"))
    from host_stub import WebUI, stand_in
    webui = WebUI("a1111", tmp / "webui")
    from lib_mecha.host.detect import make_host
    host = make_host()
    webui.pixels()
    try:
        with serve_tab(host) as url:
            both_themes(served(browser, url), merge_and_load, out, "mecha-tab-webui")
    finally:
        host.close()
        stand_in.purge()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE.parents[1] / "docs" / "screenshots"))
    parser.add_argument("--webui-url", default=os.environ.get("MECHA_WEBUI_URL", ""),
                        help="a running WebUI with the extension (default: $MECHA_WEBUI_URL)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright
    with tempfile.TemporaryDirectory(prefix="mecha-shots-") as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            if args.webui_url:
                webui_shots(browser, out, args.webui_url.rstrip("/") + "/")
            else:
                standalone_shots(browser, out, Path(tmp))
                stand_in_shots(browser, out, Path(tmp))
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
