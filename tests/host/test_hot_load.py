"""Hot-load, restore and previews against the stand-in A1111 and Forge 2.x."""
from __future__ import annotations

import threading

import pytest
import torch

from lib_mecha.errors import Busy, HostError
from lib_mecha.host.base import MergeIdentity, PreviewParams
from lib_mecha.host.detect import make_host

from host_stub import merge_dict




def test_hot_load_survives_generations_and_restore_gives_back_the_same_pixels(webui):
    host = make_host()
    original = webui.pixels()
    ident = MergeIdentity.from_recipe("merge 1", "my merge")
    sd = merge_dict()
    host.hot_load(sd, ident)
    assert sd == {}                                   # consumed, like the hosts' own loaders do
    merged = webui.pixels()
    assert merged != original
    assert webui.pixels() == merged                   # the per-generation model check keeps it
    info = webui.txt2img().infotexts[0]
    assert "Model: my merge" in info and f"Model hash: {ident.h10}" in info
    current = host.current_model()
    assert current.is_merge and current.identity == ident and current.path is None
    host.restore()
    assert webui.pixels() == original
    assert host.hot_loaded() is None and not host.current_model().is_merge


def test_hot_load_never_writes_the_hash_cache_or_saves_settings(webui):
    from modules import hashes, shared
    host = make_host()
    webui.pixels()
    cached = set(hashes.cache)
    before = shared.opts.data["sd_model_checkpoint"]
    host.hot_load(merge_dict(), MergeIdentity.from_recipe("no cache"))
    webui.pixels()
    host.restore()
    assert set(hashes.cache) == cached
    assert shared.opts.saved == []
    assert shared.opts.data["sd_model_checkpoint"] == before


def test_second_hot_load_replaces_the_first_and_restore_returns_to_the_original(webui):
    host = make_host()
    original = webui.pixels()
    host.hot_load(merge_dict(3), MergeIdentity.from_recipe("first"))
    first = webui.pixels()
    host.hot_load(merge_dict(4), MergeIdentity.from_recipe("second"))
    second = webui.pixels()
    assert len({original, first, second}) == 3
    host.restore()
    assert webui.pixels() == original


def test_wrong_architecture_is_refused_and_the_loaded_model_stays(webui):
    host = make_host()
    webui.pixels()
    host.hot_load(merge_dict(3), MergeIdentity.from_recipe("good"))
    merged = webui.pixels()
    alien = {"transformer.blocks.0.weight": torch.zeros(4, 4), "transformer.blocks.0.bias": torch.zeros(4)}
    with pytest.raises(HostError, match="cannot hot-load"):
        host.hot_load(alien, MergeIdentity.from_recipe("alien"))
    assert webui.pixels() == merged                   # the previous merge is still the model
    assert host.hot_loaded().recipe_text == "good"


def test_incomplete_dict_is_refused_instead_of_zero_filled(webui):
    host = make_host()
    original = webui.pixels()
    sd = merge_dict()
    del sd["first_stage_model.decoder.conv_out.weight"]
    with pytest.raises(HostError, match="missing"):
        host.hot_load(sd, MergeIdentity.from_recipe("no vae"))
    assert webui.pixels() == original
    assert host.hot_loaded() is None


def test_wrong_shape_is_refused(webui):
    host = make_host()
    original = webui.pixels()
    sd = merge_dict()
    sd["model.diffusion_model.out.2.bias"] = torch.zeros(7)
    with pytest.raises(HostError, match="shape"):
        host.hot_load(sd, MergeIdentity.from_recipe("bad shape"))
    assert webui.pixels() == original


def test_failure_while_loading_restores_the_original_by_itself(webui, monkeypatch):
    host = make_host()
    original = webui.pixels()
    if webui.flavour == "a1111":
        from modules import sd_models
        real = sd_models.load_model

        def broken(checkpoint_info=None, already_loaded_state_dict=None):
            if already_loaded_state_dict is not None and getattr(checkpoint_info, "mecha_unsaved", None):
                raise RuntimeError("out of memory")
            return real(checkpoint_info, already_loaded_state_dict)
        monkeypatch.setattr(sd_models, "load_model", broken)
    else:
        from backend import state_dict as sd_tools
        real = sd_tools.load_state_dict
        calls = []

        def broken(model, sd, *a, **kw):
            calls.append(1)
            if len(calls) == 2:                       # fail halfway: the UNet is already overwritten
                raise RuntimeError("out of memory")
            return real(model, sd, *a, **kw)
        monkeypatch.setattr(sd_tools, "load_state_dict", broken)
    with pytest.raises(HostError, match="restored"):
        host.hot_load(merge_dict(), MergeIdentity.from_recipe("boom"))
    monkeypatch.undo()
    assert host.hot_loaded() is None
    assert webui.pixels() == original


def test_busy_while_a_generation_holds_the_lock(webui):
    from modules import call_queue
    host = make_host()
    webui.pixels()
    with call_queue.queue_lock:
        with pytest.raises(Busy, match="busy"):
            host.hot_load(merge_dict(), MergeIdentity.from_recipe("busy"))
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
    host.hot_load(merge_dict(), MergeIdentity.from_recipe("waited"), wait=10)
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
    host.hot_load(merge_dict(), MergeIdentity.from_recipe("switch"))
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
    ident = MergeIdentity.from_recipe("preview recipe")
    host.hot_load(merge_dict(), ident)
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
