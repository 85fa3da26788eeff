"""Fixtures of the tab's tests: tiny real SD1 checkpoints and a LoRA, a standalone host, a slow method."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ui_helpers import SLOW, register_slow_method, write_models

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))  # host_stub, for the WebUI fixtures


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """Checkpoints at 1/64 size (unit tests)."""
    return write_models(tmp_path_factory.mktemp("ui-models"), 64)


@pytest.fixture()
def host(tiny_models, tmp_path):
    """A standalone host over the tiny models; saves go to a fresh folder."""
    from lib_mecha.host.standalone import StandaloneHost
    save = tmp_path / "saved"
    save.mkdir()
    return StandaloneHost(checkpoint_dirs=[tiny_models], lora_dirs=[tiny_models], save_dir=save,
                          data_dir=tmp_path / "data", options={"mecha_threads": 2})


@pytest.fixture()
def catalog(host):
    from lib_mecha.ui.catalog import Catalog
    return Catalog(host)


@pytest.fixture()
def slow_method():
    from lib_mecha.methods import unregister
    register_slow_method()
    yield SLOW
    unregister(SLOW)


@pytest.fixture()
def session(catalog):
    """A builder session whose inputs A and B are the catalog's a and b."""
    from lib_mecha.ui.session import Session
    s = Session()
    s.set_input("a", "a.safetensors", catalog)
    s.set_input("b", "b.safetensors", catalog)
    return s


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium, headless, driven by Playwright (the browser tests)."""
    from ui_browser import CHROMIUM, CHROMIUM_ARGS
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(params=["a1111", "forge2"])
def webui(request, tmp_path):
    """The stand-in WebUI (tests/host/host_stub.py), in both flavours."""
    from host_stub import WebUI, stand_in
    w = WebUI(request.param, tmp_path / "webui")
    yield w
    from lib_mecha.host import extension
    extension._state.clear()
    stand_in.purge()


@pytest.fixture()
def webui_host(webui):
    """The host adapter the extension makes inside the stand-in WebUI."""
    from lib_mecha.host.detect import make_host
    h = make_host()
    yield h
    h.close()
