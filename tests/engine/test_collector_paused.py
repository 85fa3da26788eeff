"""The cyclic garbage collector is paused while merges run and left as it was afterwards."""
from __future__ import annotations

import gc

import pytest
import torch
from safetensors.torch import save_file

import lib_mecha as mecha
import lib_mecha.methods as methods
from lib_mecha.engine.execute import collector_paused
from lib_mecha.methods.spec import SAME, Tensor


@pytest.fixture
def collector_state():
    seen = []

    @mecha.merge_method(returns=SAME, category="custom")
    def note_collector(a=Tensor(SAME)):
        seen.append(gc.isenabled())
        if a.numel() == 3:
            raise ValueError("boom")
        return a

    was = gc.isenabled()
    yield seen
    methods.unregister("note_collector")
    gc.enable() if was else gc.disable()


@pytest.mark.parametrize("enabled", [True, False])
def test_a_merge_pauses_the_collector_and_restores_it_even_when_it_fails(tmp_path, collector_state, enabled):
    save_file({"x": torch.ones(4)}, str(tmp_path / "ok.safetensors"))
    save_file({"x": torch.ones(3)}, str(tmp_path / "bad.safetensors"))
    gc.enable() if enabled else gc.disable()
    mecha.merge(methods.build("note_collector", mecha.model("ok")), model_dirs=[tmp_path])
    assert collector_state == [False] and gc.isenabled() == enabled
    with pytest.raises(mecha.MechaError, match="boom"):
        mecha.merge(methods.build("note_collector", mecha.model("bad")), model_dirs=[tmp_path])
    assert gc.isenabled() == enabled


def test_overlapping_merges_restore_the_collector_when_the_last_ends():
    gc.enable()
    try:
        first, second = collector_paused(), collector_paused()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert not gc.isenabled()  # the second merge still runs
        second.__exit__(None, None, None)
        assert gc.isenabled()
    finally:
        gc.enable()
