"""Take the README screenshots of the tab with the browser tests' tooling (light and dark theme).

    .venvs/a1111/bin/python tests/ui/screenshots.py [--out docs/screenshots]

Serves the standalone tab over tiny generated SD1 models, builds a two-step recipe with block
weights and a LoRA, and saves palette PNGs of the tab. Not a test: pytest does not collect it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

from ui_browser import (CHROMIUM, CHROMIUM_ARGS, click, expect_value, open_page, pick, pick_step,  # noqa: E402
                        serve_tab, set_number)
from ui_helpers import write_models  # noqa: E402


def build_recipe(page) -> None:
    pick(page, "mecha_input_0", "a.safetensors")
    pick(page, "mecha_input_1", "b.safetensors")
    pick(page, "mecha_param_0_mode", "per block (MBW)")
    pick(page, "mecha_mbw_preset", "GRAD_V")
    expect_value(page, "mecha_mbw_text", __import__("re").compile(r"^0,"))
    click(page, "mecha_lora_add")
    expect_value(page, "mecha_lora_0_file", "lora_style.safetensors")
    set_number(page, "mecha_lora_0_strength", 0.6)
    click(page, "mecha_step_add")
    expect_value(page, "mecha_input_0", "[step 1]")
    pick(page, "mecha_input_1", "c.safetensors")
    set_number(page, "mecha_param_0_slider", 0.3)
    pick_step(page, "1. weighted_sum(a, b) + 1 LoRA")
    expect_value(page, "mecha_param_0_mode", "per block (MBW)")
    page.locator("#mecha_save_name textarea, #mecha_save_name input").first.fill("my-merge")
    page.wait_for_timeout(1500)


def shrink(path: Path, colors: int = 128) -> None:
    from PIL import Image
    with Image.open(path) as img:
        img.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE.parents[1] / "docs" / "screenshots"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    from lib_mecha.host.standalone import StandaloneHost
    with tempfile.TemporaryDirectory(prefix="mecha-shots-") as tmp:
        models = write_models(Path(tmp) / "models", 8)
        host = StandaloneHost(checkpoint_dirs=[models], lora_dirs=[models], save_dir=Path(tmp) / "saved",
                              data_dir=Path(tmp) / "data")
        with serve_tab(host) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                for theme in ("light", "dark"):
                    ctx, page = open_page(browser, url, dark=theme == "dark", width=1280, height=900)
                    try:
                        build_recipe(page)
                        target = out / f"mecha-tab-{theme}.png"
                        page.locator("#tab_mecha").screenshot(path=str(target))
                        shrink(target)
                        print(f"wrote {target} ({target.stat().st_size // 1024} KiB)")
                    finally:
                        ctx.close()
            finally:
                browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
