"""Fixtures for host-adapter tests (helpers live in host_stub.py)."""
from __future__ import annotations

import pytest

from host_stub import WebUI, stand_in


@pytest.fixture(params=["a1111", "forge2"])
def webui(request, tmp_path):
    w = WebUI(request.param, tmp_path / "webui")
    yield w
    _teardown()


@pytest.fixture
def a1111(tmp_path):
    w = WebUI("a1111", tmp_path / "webui")
    yield w
    _teardown()


@pytest.fixture
def forge(tmp_path):
    w = WebUI("forge2", tmp_path / "webui")
    yield w
    _teardown()


def _teardown():
    from lib_mecha.host import extension
    extension._state.clear()
    stand_in.purge()
