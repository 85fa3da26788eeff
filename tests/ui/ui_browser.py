"""Playwright helpers for the standalone tab (used by the browser tests and the screenshot script).

Debian's chromium (/usr/bin/chromium) is driven headless; every request that does not go to the
tab's own loopback server is aborted (gradio pages reference Google Fonts and cdnjs).
"""
from __future__ import annotations

import os
import re
import socket
from contextlib import contextmanager

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000


def _patient_expect() -> None:
    """Playwright's expect() waits 5 s by default; the shared test machine can be much slower."""
    try:
        from playwright.sync_api import expect
    except ImportError:  # the browser tests skip without Playwright
        return
    expect.set_options(timeout=TIMEOUT_MS)


_patient_expect()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_tab(host):
    """The standalone tab of ``host`` on a free loopback port; yields its URL."""
    from lib_mecha.ui.standalone import launch
    port = free_port()
    demo = launch(host, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        # the browser has gone: uvicorn need not wait for connections it may still count as open
        # (gradio 3's server thread sometimes waited for ever on one)
        server = getattr(demo, "server", None)
        if server is not None:
            server.force_exit = True
        demo.close()


def open_page(browser, url: str, dark: bool = False, width: int = 1400, height: int = 1000):
    ctx = browser.new_context(viewport={"width": width, "height": height},
                              color_scheme="dark" if dark else "light")
    page = ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(url) else r.abort())
    page.goto(url + ("?__theme=dark" if dark else ""), wait_until="domcontentloaded")
    page.wait_for_selector("#mecha_method")
    # the first render (page load event) has arrived: edits made before it could be overwritten
    expect_value(page, "mecha_steps", re.compile(r"^1\. "))
    return ctx, page


# --- the steps: a dropdown (number and method) and the list of titles under it -------------------------

def expect_step(page, title, timeout: int = TIMEOUT_MS) -> None:
    """The selected step is the one titled ``title`` (``2. weighted_sum(step 1, c)``; a string
    or a pattern): the dropdown shows its number and method, the list its whole title."""
    from playwright.sync_api import expect
    selected = page.locator("#mecha_steps_list .mecha-step-selected")
    if isinstance(title, re.Pattern):
        expect(selected).to_have_text(title, timeout=timeout)
        return
    expect(selected).to_have_text(title, timeout=timeout)
    expect_value(page, "mecha_steps", title.split("(", 1)[0], timeout=timeout)


def pick_step(page, number: int) -> None:
    """Select step ``number`` (1, 2...) in the step dropdown."""
    box = page.locator("#mecha_steps input").first
    box.click()
    page.locator(f'[data-testid="dropdown-option"][aria-label^="{number}. "]:visible').first.click()
    expect_value(page, "mecha_steps", re.compile(rf"^{number}\. "))


# --- widgets --------------------------------------------------------------------------------------

def value_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input, #{elem_id} textarea").first.input_value()


def pick(page, elem_id: str, value: str) -> None:
    """Choose ``value`` in a dropdown (both gradio versions list options as dropdown-option).

    The value is typed first, so the list is filtered down to it: a long list never has to
    scroll (gradio 4 closes an open list when the page scrolls under it)."""
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(value)
    option = page.locator(f'[data-testid="dropdown-option"][aria-label="{value}"]:visible').first
    option.click()


def set_number(page, elem_id: str, value) -> None:
    """Type a value into a slider's (or a Number's) number box and confirm it."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def fill_text(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(text)


def click(page, elem_id: str) -> None:
    page.locator(f"#{elem_id}").first.click()


def expect_value(page, elem_id: str, value, timeout: int = TIMEOUT_MS) -> None:
    from playwright.sync_api import expect
    target = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    if isinstance(value, re.Pattern):
        expect(target).to_have_value(value, timeout=timeout)
    else:
        expect(target).to_have_value(str(value), timeout=timeout)


def expect_text(page, elem_id: str, text, timeout: int = TIMEOUT_MS) -> None:
    from playwright.sync_api import expect
    target = page.locator(f"#{elem_id}").first  # gradio 3 repeats an HTML block's id inside it
    if isinstance(text, re.Pattern):
        expect(target).to_contain_text(text, timeout=timeout)
    else:
        expect(target).to_contain_text(text, timeout=timeout)


def recipe_text(page) -> str:
    return page.locator("#mecha_recipe_text textarea").input_value()


def wait_recipe(page, predicate, timeout: int = TIMEOUT_MS) -> str:
    """The .mecha text once ``predicate(text)`` holds (the server updates it after each edit)."""
    import time
    deadline = time.monotonic() + timeout / 1000
    text = ""
    while time.monotonic() < deadline:
        text = recipe_text(page)
        if predicate(text):
            return text
        page.wait_for_timeout(100)
    raise AssertionError(f"the .mecha text never reached the expected state; last text:\n{text}")


def progress_state(page, place: str = "mecha") -> str:
    """The state of the progress bar of ``place`` (``mecha``: Merge & load, ``mecha_save``: Save)."""
    node = page.locator(f"#{place}_progress .mecha-progress")
    return node.get_attribute("data-state") if node.count() else ""


def wait_progress(page, state: str, place: str = "mecha", timeout: int = TIMEOUT_MS) -> None:
    """Wait until the job of ``place`` ends; fail with its message when it ends otherwise."""
    ends = ", ".join(f'#{place}_progress .mecha-progress[data-state="{s}"]' for s in ("done", "cancelled", "error"))
    page.wait_for_selector(ends, timeout=timeout)
    got = progress_state(page, place)
    if got != state:
        message = page.locator(f"#{place}_message").first.inner_text()
        raise AssertionError(f"the job ended {got!r}, not {state!r}: {message}")


# --- what the user sees: cut-off text, covered or far-away feedback ---------------------------------

_CUT_OFF_JS = """(root) => {
    const measure = document.createElement("canvas").getContext("2d");
    const shown = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
    const where = (el) => ((el.closest("[id]") || {}).id || "?") + " " + el.tagName.toLowerCase();
    const out = [];
    for (const el of root.querySelectorAll("input")) {
        if (!shown(el) || ["checkbox", "radio", "range", "file", "hidden"].includes(el.type)) continue;
        const style = getComputedStyle(el);
        measure.font = style.font;
        const room = el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        const need = measure.measureText(el.value || "").width;
        if (need > room + 1) {
            out.push(`${where(el)}: "${el.value}" needs ${Math.ceil(need)} px, has ${Math.floor(room)} px`);
        }
    }
    for (const el of root.querySelectorAll("*")) {
        if (!shown(el) || el.tagName === "TEXTAREA") continue;
        const own = Array.from(el.childNodes).filter((n) => n.nodeType === 3);
        const text = own.map((n) => n.textContent).join("").trim();
        if (!text) continue;
        for (const box of [el, el.parentElement]) {
            const style = getComputedStyle(box);
            if (style.overflowX !== "visible" && box.scrollWidth > box.clientWidth + 1) {
                out.push(`${where(el)}: "${text}" is cut off (${box.scrollWidth} px in ${box.clientWidth} px)`);
                break;
            }
        }
    }
    return out;
}"""


def cut_off(page, selector: str = "#tab_mecha") -> list:
    """Texts in ``selector`` that do not fit their box (inputs measured against their content width)."""
    return page.locator(selector).first.evaluate(_CUT_OFF_JS)


def seen(page, selector: str, timeout: int = TIMEOUT_MS) -> dict:
    """How the first element matching ``selector`` looks now, read in one go (the tab re-renders
    it often): what covers its middle ("" when nothing does), whether its box cuts its content,
    and its font size in px."""
    found = page.wait_for_function("""(selector) => {
        const el = document.querySelector(selector);
        if (el === null) return null;
        const r = el.getBoundingClientRect();
        const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
        const covered = top !== null && (el === top || el.contains(top)) ? ""
            : (top === null ? "nothing (off screen)" : top.outerHTML.slice(0, 300));
        const box = el.parentElement;
        return {covered: covered, fontSize: parseFloat(getComputedStyle(el).fontSize),
                cut: box.scrollHeight > box.clientHeight + 1 || box.scrollWidth > box.clientWidth + 1};
    }""", arg=selector, timeout=timeout)
    return found.json_value()


def gap_between(page, first, second) -> float:
    """Vertical distance in px between two elements' boxes (0 when they overlap vertically);
    each is a selector or a locator."""
    a, b = ((page.locator(x) if isinstance(x, str) else x).first.bounding_box() for x in (first, second))
    if a["y"] + a["height"] < b["y"]:
        return b["y"] - (a["y"] + a["height"])
    if b["y"] + b["height"] < a["y"]:
        return a["y"] - (b["y"] + b["height"])
    return 0.0
