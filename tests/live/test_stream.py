"""Streaming merges into a running model (lib_mecha.live) with a torch module standing in for it."""
from __future__ import annotations

import os
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

import lib_mecha
from lib_mecha.errors import HostError, MechaError, MergeCancelled
from lib_mecha.live import NotRestored, restore_keys, stream_merge
from lib_mecha.live import target as live_target

from live_fixtures import Live, ident, same

A, B, C = (lib_mecha.model(n) for n in "abc")


def ws(alpha=0.5, **blocks):
    value = lib_mecha.blocks("sd1-supermerger_blocks", blocks, default=alpha) if blocks else alpha
    return lib_mecha.weighted_sum(A, B, alpha=value)


def reference(live: Live, recipe, dtype=torch.float32):
    """The merge as Save writes it (fp16), loaded into a model of ``dtype``."""
    out = lib_mecha.merge(recipe, options=live.options()).state_dict
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in out.items()}


def test_a_streamed_merge_is_the_saved_merge_in_the_models_own_dtype(sd1_dir):
    live = Live(sd1_dir, dtype=torch.float32)            # an fp32 host (A1111 --no-half)
    report = stream_merge(live.target, live.state, ws(0.37), live.options(), ident())
    assert report.keys_merged == report.keys_total == 1131
    assert same(live.snapshot(), reference(live, ws(0.37)))   # fp16-rounded, as the saved file
    assert report.peak_extra_mb is None or report.peak_extra_mb >= 0


def test_only_keys_whose_fingerprint_changed_are_recomputed(sd1_dir):
    live = Live(sd1_dir)
    stream_merge(live.target, live.state, ws(0.3, IN04=0.3), live.options(), ident())
    moved = stream_merge(live.target, live.state, ws(0.3, IN04=0.8), live.options(), ident("moved"))
    assert 0 < moved.keys_merged < 60 and moved.keys_total == 1131
    assert same(live.snapshot(), reference(live, ws(0.3, IN04=0.8)))
    unchanged = stream_merge(live.target, live.state, ws(0.3, IN04=0.8), live.options(), ident("moved"))
    assert unchanged.keys_merged == 0


def test_another_method_or_input_recomputes_what_it_touches(sd1_dir):
    live = Live(sd1_dir)
    stream_merge(live.target, live.state, ws(0.3), live.options(), ident())
    other = lib_mecha.weighted_sum(A, C, alpha=0.3)
    report = stream_merge(live.target, live.state, other, live.options(), ident("c"))
    assert report.keys_merged == 1130                   # every float key; position ids come from A alone
    assert same(live.snapshot(), reference(live, other))


def test_an_input_rewritten_with_its_old_size_and_time_is_read_again(sd1_dir):
    live = Live(sd1_dir)
    stream_merge(live.target, live.state, ws(0.5), live.options(), ident())
    b = sd1_dir / "b.safetensors"
    st = os.stat(b)
    save_file(load_file(str(sd1_dir / "c.safetensors")), str(b))   # same size, other weights
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))                 # and the old modification time
    assert os.stat(b).st_size == st.st_size
    report = stream_merge(live.target, live.state, ws(0.5), live.options(), ident())
    assert report.keys_merged == 1130
    assert same(live.snapshot(), reference(live, ws(0.5)))


def test_a_lora_strength_change_recomputes_only_the_keys_the_lora_touches(sd1_dir):
    key = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
    shape = load_file(str(sd1_dir / "a.safetensors"))[key].shape
    g = torch.Generator().manual_seed(5)
    lora = {"lora_unet_input_blocks_1_1_proj_in.lora_down.weight": torch.randn(4, shape[1], generator=g).half(),
            "lora_unet_input_blocks_1_1_proj_in.lora_up.weight": torch.randn(shape[0], 4, generator=g).half(),
            "lora_unet_input_blocks_1_1_proj_in.alpha": torch.tensor(4.0)}
    save_file(lora, str(sd1_dir / "l.safetensors"))
    live = Live(sd1_dir)

    def recipe(strength):
        return lib_mecha.apply_lora(ws(0.5), lib_mecha.model("l.safetensors"), strength)
    stream_merge(live.target, live.state, recipe(0.5), live.options(), ident())
    report = stream_merge(live.target, live.state, recipe(0.8), live.options(), ident("0.8"))
    assert report.keys_merged <= 2                      # the patched layer's weight (and its bias)
    assert same(live.snapshot(), reference(live, recipe(0.8)))


def test_restore_writes_back_only_the_merged_keys_and_gives_the_original(sd1_dir):
    live = Live(sd1_dir)
    original = live.snapshot()
    stream_merge(live.target, live.state, ws(0.3), live.options(), ident())
    assert not same(live.snapshot(), original)
    written = restore_keys(live.target, live.state, live.state.merged_keys())
    assert written == 1131
    assert same(live.snapshot(), original)


@pytest.mark.parametrize("fail_at", [1, 200, 1131])
def test_a_failure_part_way_puts_the_original_back(sd1_dir, monkeypatch, fail_at):
    live = Live(sd1_dir)
    original = live.snapshot()
    real, calls = live_target.LiveTarget.write, []

    def failing(self, route, value):
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("injected")
        return real(self, route, value)
    monkeypatch.setattr(live_target.LiveTarget, "write", failing)
    with pytest.raises(MechaError, match="injected.*put back from the original checkpoint"):
        stream_merge(live.target, live.state, ws(0.3), live.options(threads=2), ident())
    assert same(live.snapshot(), original)
    assert live.state.fingerprints == {} and live.state.ident is None


def test_a_failed_re_merge_recomputes_the_previous_merge_for_the_keys_it_touched(sd1_dir, monkeypatch):
    live = Live(sd1_dir)
    first = ident("first")
    stream_merge(live.target, live.state, ws(0.3), live.options(), first)
    merged = live.snapshot()
    real, calls = live_target.LiveTarget.write, []

    def failing(self, route, value):
        calls.append(1)
        if len(calls) == 100:
            raise RuntimeError("injected")
        return real(self, route, value)
    monkeypatch.setattr(live_target.LiveTarget, "write", failing)
    with pytest.raises(MechaError, match="the previous merge is loaded as before"):
        stream_merge(live.target, live.state, ws(0.7), live.options(), ident("second"))
    monkeypatch.undo()
    assert same(live.snapshot(), merged) and live.state.ident == first


def test_when_the_previous_merge_cannot_be_reproduced_the_original_comes_back(sd1_dir, monkeypatch):
    live = Live(sd1_dir)
    original = live.snapshot()
    stream_merge(live.target, live.state, ws(0.3), live.options(), ident("first"))
    save_file(load_file(str(sd1_dir / "c.safetensors")), str(sd1_dir / "b.safetensors"))  # B changed since
    cancel = threading.Event()
    with pytest.raises(MergeCancelled, match="previous merge could not be recomputed"):
        stream_merge(live.target, live.state, ws(0.7), live.options(threads=0), ident("second"),
                     progress=lambda done, total, n: cancel.set() if done >= 5 else None, cancel=cancel)
    assert same(live.snapshot(), original) and live.state.ident is None


def test_cancel_between_keys(sd1_dir):
    live = Live(sd1_dir)
    original = live.snapshot()
    cancel = threading.Event()
    with pytest.raises(MergeCancelled, match="put back"):
        stream_merge(live.target, live.state, ws(0.3), live.options(threads=0), ident(),
                     progress=lambda done, total, n: cancel.set() if done >= 10 else None, cancel=cancel)
    assert same(live.snapshot(), original)


def test_a_merge_of_another_architecture_is_refused_before_anything_is_written(sd1_dir):
    save_file({"blocks.0.weight": torch.zeros(4, 4, dtype=torch.float16)}, str(sd1_dir / "x.safetensors"))
    live = Live(sd1_dir)
    original = live.snapshot()
    with pytest.raises(HostError, match="1131 of the model's weights have no key|architecture differs"):
        stream_merge(live.target, live.state, lib_mecha.model("x.safetensors"), live.options(), ident())
    assert same(live.snapshot(), original)


def test_a_key_of_another_shape_is_refused_before_anything_is_written(sd1_dir):
    sd = load_file(str(sd1_dir / "b.safetensors"))
    key = "model.diffusion_model.out.2.bias"
    sd[key] = torch.zeros(sd[key].numel() + 1, dtype=torch.float16)
    save_file(sd, str(sd1_dir / "b.safetensors"))
    live = Live(sd1_dir)
    original = live.snapshot()
    with pytest.raises(HostError, match=f"key {key} has shape"):
        stream_merge(live.target, live.state, lib_mecha.model("b.safetensors"), live.options(), ident())
    assert same(live.snapshot(), original)


def test_quantized_storage_is_refused(sd1_dir):
    live = Live(sd1_dir)
    key = "model.diffusion_model.out.2.bias"
    module = live.module.get_submodule(key.rsplit(".", 1)[0])
    module._parameters["bias"] = torch.nn.Parameter(torch.zeros_like(module.bias, dtype=torch.float8_e4m3fn),
                                                    requires_grad=False)
    with pytest.raises(HostError, match="quantized"):
        stream_merge(live.target, live.state, ws(), live.options(), ident())


def test_restore_of_a_changed_or_pickled_original_is_left_to_the_host(sd1_dir):
    live = Live(sd1_dir)
    stream_merge(live.target, live.state, ws(0.3), live.options(), ident())
    os.utime(live.path, ns=(0, 0))
    with pytest.raises(NotRestored, match="changed on disk"):
        restore_keys(live.target, live.state, live.state.merged_keys())
    live.state.original.path = live.path.with_suffix(".ckpt")
    with pytest.raises(NotRestored, match="not a .safetensors file"):
        restore_keys(live.target, live.state, ["model.diffusion_model.out.2.bias"])
