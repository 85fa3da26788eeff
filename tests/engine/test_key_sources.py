"""Inputs declared defines_keys=False (a LoRA file) do not offer their key names as output keys,
and warnings raised while planning reach the result."""
from __future__ import annotations

import torch
from safetensors.torch import save_file

import lib_mecha as mecha
from lib_mecha.methods import merge_method, unregister
from lib_mecha.methods.spec import SAME, Tensor


def _route(node, key, ctx):
    base, side = node.args
    ctx.warn("side input consulted")
    side_keys = list(ctx.source(side).file.tensors)
    assert side_keys == ["side.only"]
    return ctx.compile(base, key)


def test_side_input_keys_are_not_output_keys(tmp_path):
    save_file({"w": torch.ones(2)}, str(tmp_path / "base.safetensors"))
    save_file({"side.only": torch.ones(3)}, str(tmp_path / "side.safetensors"))

    @merge_method(name="test_with_side_input", returns=SAME, route=_route)
    def with_side(base=Tensor(SAME), side=Tensor(SAME, defines_keys=False)):
        raise AssertionError("routed")
    try:
        result = mecha.merge(with_side(mecha.model("base"), mecha.model("side")), model_dirs=[tmp_path])
    finally:
        unregister("test_with_side_input")
    assert list(result.state_dict) == ["w"]
    assert result.skipped == []
    assert result.warnings == ["side input consulted"]
