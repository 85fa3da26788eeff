"""Hot-load (streamed into the running model), restore and previews against the stand-in A1111
and Forge 2.x."""
from __future__ import annotations

import threading

import pytest
import torch

import lib_mecha
from lib_mecha.errors import Busy, HostError, MergeCancelled
from lib_mecha.host.base import MergeIdentity, PreviewParams
from lib_mecha.host.detect import make_host

from host_stub import ckpt_recipe, hot_load, options, write_checkpoint


def ws(alpha=0.5, **blocks):
    """weighted_sum of the stand-in's two checkpoints, with per-block alphas when given."""
    value = lib_mecha.blocks("sd1-supermerger_blocks", blocks, default=alpha) if blocks else alpha
    return lib_mecha.weighted_sum(lib_mecha.model("model-a.safetensors"), lib_mecha.model("model-b.safetensors"),
                                  alpha=value)


def load(host, recipe, text="recipe", **kw):
    return host.hot_load(recipe, MergeIdentity.from_recipe(text), kw.pop("opts", None) or options(host), **kw)


def saved_and_selected(webui, recipe, name, **opts):
    """The merge saved as a file the way Save writes it, then selected in the host."""
    from modules import shared, sd_models
    path = webui.ckpt_dir / f"{name}.safetensors"
    lib_mecha.merge(recipe, str(path), model_dirs=[str(webui.ckpt_dir)], **opts)
    sd_models.list_models()
    info = next(i for i in sd_models.checkpoints_list.values() if i.name == path.name)
    shared.opts.data["sd_model_checkpoint"] = info.title
    if webui.flavour == "forge2":
        from modules_forge import main_entry
        main_entry.refresh_model_loading_parameters()
    return info


def test_hot_load_survives_generations_and_restore_gives_back_the_same_pixels(webui):
    host = make_host()
    original = webui.pixels()
    report = hot_load(host, webui, 3, "merge 1", display="my merge")
    assert report.keys_merged == report.keys_total > 0
    merged = webui.pixels()
    assert merged != original
    assert webui.pixels() == merged                   # the per-generation model check keeps it
    info = webui.txt2img().infotexts[0]
    assert "Model: my merge" in info and f"Model hash: {report.ident.h10}" in info
    current = host.current_model()
    assert current.is_merge and current.identity == report.ident and current.path is None
    restored = host.restore()
    assert restored.keys_restored == report.keys_total
    assert webui.pixels() == original
    assert host.hot_loaded() is None and not host.current_model().is_merge


def test_the_merge_is_written_into_the_loaded_model_object(webui):
    """No second model and no whole state dict: the host's own model object holds the merge."""
    host = make_host()
    webui.pixels()
    model = webui.model()
    hot_load(host, webui, 3)
    assert webui.model() is model
    if webui.flavour == "a1111":
        from modules import sd_models
        assert [e[0] for e in sd_models.events if e[0] in ("trash", "load")] == ["load"]   # A, at the start
    else:
        from modules import sd_models
        assert sd_models.loads == [str(webui.a)]


def test_hot_load_never_writes_the_hash_cache_or_the_settings(webui):
    from modules import hashes, shared
    host = make_host()
    webui.pixels()
    cached = set(hashes.cache)
    before = dict(shared.opts.data)
    hot_load(host, webui, 3)
    assert shared.opts.data == before                 # the selection stays the user's file
    webui.pixels()
    host.restore()
    assert set(hashes.cache) == cached
    assert shared.opts.saved == []
    assert shared.opts.data == before


def test_second_hot_load_replaces_the_first_and_restore_returns_to_the_original(webui):
    host = make_host()
    original = webui.pixels()
    hot_load(host, webui, 3, "first")
    first = webui.pixels()
    hot_load(host, webui, 4, "second")
    second = webui.pixels()
    assert len({original, first, second}) == 3
    host.restore()
    assert webui.pixels() == original


def test_streamed_merge_is_the_saved_file_whatever_the_hosts_precision(webui):
    """A1111 --no-half (and Forge's fp32 storage) run in float32: the merge is still rounded to
    the save dtype (fp16), so the preview is what the saved file generates."""
    from modules import devices
    devices.dtype = torch.float32                     # --no-half
    host = make_host()
    webui.pixels()
    load(host, ws(0.37), "ws 0.37")
    streamed = webui.pixels()
    host.restore()
    saved_and_selected(webui, ws(0.37), "saved-037")   # fp16, Save's default
    assert webui.pixels() == streamed


def test_a_recipe_that_changes_nothing_does_no_merge_work(webui):
    host = make_host()
    webui.pixels()
    first = load(host, ws(0.3))
    again = load(host, ws(0.3))
    assert first.keys_merged == first.keys_total and again.keys_merged == 0
    assert again.keys_total == first.keys_total


def test_moving_one_block_slider_re_merges_only_that_blocks_keys(webui):
    host = make_host()
    webui.pixels()
    load(host, ws(0.3, IN00=0.3))
    report = load(host, ws(0.3, IN00=0.9), "moved")
    assert report.keys_merged == 2                     # input_blocks.0.0 weight and bias
    incremental = webui.pixels()
    host.restore()
    saved_and_selected(webui, ws(0.3, IN00=0.9), "full")
    assert webui.pixels() == incremental               # == a full merge of the changed recipe


def test_an_input_file_changed_since_the_last_merge_is_read_again(webui):
    host = make_host()
    webui.pixels()
    load(host, ws(0.5))
    write_checkpoint(webui.b, 9)                       # model B rewritten on disk
    report = load(host, ws(0.5))
    assert report.keys_merged == 10                    # every float key reads B (position ids come from A)
    streamed = webui.pixels()
    host.restore()
    saved_and_selected(webui, ws(0.5), "new-b")
    assert webui.pixels() == streamed


@pytest.mark.parametrize("fail_at", [1, 4, 10])
def test_a_failure_part_way_puts_every_written_key_back(webui, monkeypatch, fail_at):
    from lib_mecha.live import target as live_target
    host = make_host()
    original = webui.pixels()
    real, calls = live_target.LiveTarget.write, []

    def failing(self, route, value):
        calls.append(route.key)
        if len(calls) == fail_at:
            raise RuntimeError("out of memory")
        return real(self, route, value)
    monkeypatch.setattr(live_target.LiveTarget, "write", failing)
    with pytest.raises(lib_mecha.MechaError, match="put back from the original checkpoint"):
        load(host, ws(0.5), opts=options(host, threads=0))
    monkeypatch.undo()
    assert host.hot_loaded() is None
    assert webui.pixels() == original
    assert not host.current_model().is_merge


def test_a_failure_over_a_loaded_merge_brings_that_merge_back(webui, monkeypatch):
    from lib_mecha.live import target as live_target
    host = make_host()
    original = webui.pixels()
    first = load(host, ws(0.2), "first").ident
    merged = webui.pixels()
    real, calls = live_target.LiveTarget.write, []

    def failing(self, route, value):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("boom")
        return real(self, route, value)
    monkeypatch.setattr(live_target.LiveTarget, "write", failing)
    with pytest.raises(lib_mecha.MechaError, match="the previous merge is loaded as before"):
        load(host, ws(0.8), "second", opts=options(host, threads=0))
    monkeypatch.undo()
    assert host.hot_loaded() == first
    assert webui.pixels() == merged
    host.restore()
    assert webui.pixels() == original


def test_cancel_part_way_leaves_the_model_as_it_was(webui):
    host = make_host()
    original = webui.pixels()
    cancel = threading.Event()

    def progress(done, total, nbytes):
        if done >= 3:
            cancel.set()
    with pytest.raises(MergeCancelled, match="put back"):
        load(host, ws(0.5), progress=progress, cancel=cancel, opts=options(host, threads=0))
    assert host.hot_loaded() is None
    assert webui.pixels() == original


def test_the_hosts_interrupt_button_cancels_a_hot_load(webui, monkeypatch):
    from modules import shared
    host = make_host()
    original = webui.pixels()
    real_begin = shared.state.begin

    def begin_then_interrupt(job="(unknown)"):
        real_begin(job)
        shared.state.interrupt()
    monkeypatch.setattr(shared.state, "begin", begin_then_interrupt)
    with pytest.raises(MergeCancelled):
        load(host, ws(0.5))
    monkeypatch.undo()
    shared.state.interrupted = False                   # the host's next job begins afresh
    assert webui.pixels() == original


def test_wrong_architecture_is_refused_and_the_loaded_model_stays(webui):
    import safetensors.torch
    host = make_host()
    webui.pixels()
    hot_load(host, webui, 3, "good")
    merged = webui.pixels()
    alien = webui.ckpt_dir / "alien.safetensors"
    safetensors.torch.save_file({"transformer.blocks.0.weight": torch.zeros(4, 4),
                                 "transformer.blocks.0.bias": torch.zeros(4)}, str(alien))
    with pytest.raises(HostError, match="architecture differs"):
        load(host, lib_mecha.model(str(alien)), "alien")
    assert webui.pixels() == merged                   # the previous merge is still the model
    assert host.hot_loaded().recipe_text == "good"


def test_incomplete_merge_is_refused_instead_of_zero_filled(webui):
    host = make_host()
    original = webui.pixels()
    recipe = ckpt_recipe(webui, 3, drop=["first_stage_model.decoder.conv_out.weight"], name="no-vae.safetensors")
    with pytest.raises(HostError, match="conv_out.weight"):
        load(host, recipe, "no vae")
    assert webui.pixels() == original
    assert host.hot_loaded() is None


def test_wrong_shape_is_refused_before_anything_is_written(webui):
    import safetensors.torch
    from modules import _net
    host = make_host()
    original = webui.pixels()
    sd = _net.random_checkpoint(3)
    sd["model.diffusion_model.out.2.bias"] = torch.zeros(7, dtype=torch.float16)
    path = webui.ckpt_dir / "bad-shape.safetensors"
    safetensors.torch.save_file(sd, str(path))
    with pytest.raises(HostError, match="out.2.bias.*shape"):
        load(host, lib_mecha.model(str(path)), "bad shape")
    assert webui.pixels() == original


def test_busy_while_a_generation_holds_the_lock(webui):
    from modules import call_queue
    host = make_host()
    webui.pixels()
    with call_queue.queue_lock:
        with pytest.raises(Busy, match="busy"):
            hot_load(host, webui, 3, "busy")
        with pytest.raises(Busy):
            host.generate(PreviewParams(steps=1, width=8, height=8))
    assert host.hot_loaded() is None


def test_hot_load_waits_for_the_lock_when_asked(webui):
    from modules import call_queue
    host = make_host()
    webui.pixels()
    call_queue.queue_lock.acquire()
    timer = threading.Timer(0.3, call_queue.queue_lock.release)
    timer.start()
    hot_load(host, webui, 3, "waited", wait=10)
    timer.join()
    assert host.hot_loaded().recipe_text == "waited"


def test_user_switching_checkpoint_drops_the_merge(webui):
    from lib_mecha.host import extension
    from modules import script_callbacks, shared
    host = make_host()
    extension.setup(script_callbacks, host)
    replaced = []
    host.on_model_replaced(lambda: replaced.append(1))
    webui.pixels()
    hot_load(host, webui, 3, "switch")
    b_title = next(i.title for i in __import__("modules.sd_models").sd_models.checkpoints_list.values()
                   if i.name == "model-b.safetensors")
    shared.opts.data["sd_model_checkpoint"] = b_title
    if webui.flavour == "forge2":
        from modules_forge import main_entry
        main_entry.refresh_model_loading_parameters()
    webui.pixels()
    assert host.hot_loaded() is None and replaced == [1]
    assert webui.model().sd_checkpoint_info.name == "model-b.safetensors"


def test_preview_goes_through_host_processing_with_the_recipe_id(webui):
    host = make_host()
    webui.pixels()
    ident = hot_load(host, webui, 3, "preview recipe").ident
    out = host.generate(PreviewParams(prompt="a cat", seed=7, steps=1, width=8, height=8))
    assert len(out) == 1
    image, infotext = out[0]
    assert image.tobytes() == webui.pixels(seed=7)
    assert f"Mecha recipe: {ident.short_id}" in infotext
    assert host.recipes.lookup(ident.short_id) == "preview recipe"
    from modules import shared
    assert shared.state.begun[-1] == "mecha preview"     # Interrupt reaches it through shared.state


def test_interrupted_preview_stops(webui, monkeypatch):
    from modules import shared
    host = make_host()
    webui.pixels()
    real_begin = shared.state.begin

    def begin_then_interrupt(job="(unknown)"):
        real_begin(job)
        shared.state.interrupt()                       # the user presses Interrupt
    monkeypatch.setattr(shared.state, "begin", begin_then_interrupt)
    assert host.generate(PreviewParams(steps=1, width=8, height=8)) == []


def test_recipe_store_survives_a_new_host(webui):
    host = make_host()
    ident = MergeIdentity.from_recipe("kept on disk")
    host.recipes.remember(ident)
    assert make_host().recipes.lookup(ident.short_id[:6]) == "kept on disk"
    assert (webui.root / "mecha" / "recipes.json").is_file()
