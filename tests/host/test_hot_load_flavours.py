"""Host-specific hot-load details: A1111's registry, LoRA backups and schedule, Forge's loader and
LoRA, the pending checkpoint selection on every host family, threads, and memory over cycles."""
from __future__ import annotations

import gc
import sys
import threading
import types

import pytest
import torch

import lib_mecha
from lib_mecha.errors import HostError
from lib_mecha.host.base import MergeIdentity
from lib_mecha.host.detect import make_host
from lib_mecha.ui import actions
from host_stub import hot_load, merge_dict, options


def select(webui, name):
    """What the checkpoint dropdown does: the setting (A1111), plus the loading parameters (Forge);
    neither loads the model: that happens at the next generation."""
    from modules import sd_models, shared
    info = next(i for i in sd_models.checkpoints_list.values() if i.name == name)
    shared.opts.data["sd_model_checkpoint"] = info.title
    if webui.flavour == "forge2":
        from modules_forge import main_entry
        main_entry.refresh_model_loading_parameters()
    return info


# --- pending selection (every host family) -------------------------------------------------------

def test_a_selection_the_host_has_not_loaded_yet_is_loaded_first(webui):
    host = make_host()
    original_a = webui.pixels()
    b = select(webui, "model-b.safetensors")            # picked in the dropdown, not generated yet
    label = b.title if webui.flavour == "a1111" else b.name
    assert host.pending_selection() == label
    assert "selected and loads it at the next generation" in actions.status_text(host, None)
    report = hot_load(host, webui, 3, "into b")
    assert report.loaded_first == label                 # the merge went into B, the model kept from now on
    assert host.pending_selection() is None
    merged = webui.pixels()
    assert merged != original_a and webui.pixels() == merged
    assert host.hot_loaded() is not None
    host.restore()
    assert webui.model().sd_checkpoint_info.name == "model-b.safetensors"
    b_pixels = webui.pixels()
    select(webui, "model-a.safetensors")
    assert webui.pixels() == original_a and b_pixels != original_a


def test_nothing_claims_a_merge_the_next_generation_would_drop(webui):
    from lib_mecha.host import extension
    from modules import processing, script_callbacks
    host = make_host()
    extension.setup(script_callbacks, host)
    webui.pixels()
    ident = hot_load(host, webui, 3, "dropped").ident
    select(webui, "model-b.safetensors")
    status = actions.status_text(host, None)
    assert "has model-b.safetensors" in status and "drops the merge" in status
    with pytest.raises(HostError, match="model-b.safetensors selected"):
        host.generate(lib_mecha.host.base.PreviewParams(steps=1, width=8, height=8))
    out = webui.txt2img()                               # the host's own generation loads B ...
    assert ident.short_id not in out.infotexts[0] and ident.display_name not in out.infotexts[0]
    assert host.hot_loaded() is None                    # ... and we no longer claim the merge
    script = extension.script_class()()
    p = processing.StableDiffusionProcessingTxt2Img(prompt="x", seed=1, steps=1, width=8, height=8)
    script.process(p)
    assert "Mecha recipe" not in p.extra_generation_params


def test_forge1_adapter_loads_the_selection_first_and_unpatches_ldm_patched(a1111, monkeypatch):
    """reForge / Classic: A1111's model object on ldm_patched (webui-host §3.5)."""
    from lib_mecha.host.forge1 import Forge1Host
    calls = []
    management = types.ModuleType("ldm_patched.modules.model_management")
    management.unload_all_models = lambda: calls.append("unload")
    for name, module in (("ldm_patched", types.ModuleType("ldm_patched")),
                         ("ldm_patched.modules", types.ModuleType("ldm_patched.modules")),
                         ("ldm_patched.modules.model_management", management)):
        monkeypatch.setitem(sys.modules, name, module)
    host = Forge1Host()
    a_pixels = a1111.pixels()
    select(a1111, "model-b.safetensors")
    report = hot_load(host, a1111, 3, "forge1")
    assert report.loaded_first.startswith("model-b.safetensors") and calls == ["unload"]
    merged = a1111.pixels()
    assert merged != a_pixels and a1111.pixels() == merged
    host.restore()
    assert a1111.model().sd_checkpoint_info.name == "model-b.safetensors"


def test_the_old_model_can_be_freed_while_the_selection_is_loaded_first(forge):
    """Forge frees the old model inside forge_model_reload (gc.collect); a reference the hot-load
    held meanwhile kept it alive past that collection."""
    import weakref
    host = make_host()
    forge.pixels()
    hot_load(host, forge, 3, "on a")
    old = weakref.ref(forge.model().forge_objects.unet.model)   # in a reference cycle, as in Forge
    select(forge, "model-b.safetensors")
    gc.disable()                                        # only Forge's own collection may free it
    try:
        hot_load(host, forge, 4, "on b")
        assert old() is None
    finally:
        gc.enable()


def test_neo_adapter_loads_the_selection_first(forge):
    from lib_mecha.host.neo import NeoHost
    from modules import sd_models
    host = NeoHost()
    forge.pixels()
    select(forge, "model-b.safetensors")
    assert hot_load(host, forge, 3, "neo").loaded_first == "model-b.safetensors"
    merged = forge.pixels()
    assert forge.pixels() == merged
    assert sd_models.loads == [str(forge.a), str(forge.b)]


# --- A1111 ------------------------------------------------------------------------------------

def test_a1111_refresh_keeps_the_merge_and_never_lists_it(a1111):
    from modules import sd_models
    host = make_host()
    a1111.pixels()
    hot_load(host, a1111, 3, "refresh")
    merged = a1111.pixels()
    assert not any(getattr(i, "mecha_unsaved", None) for i in sd_models.checkpoints_list.values())
    host.refresh_checkpoints()
    assert a1111.pixels() == merged
    assert sorted(r.name for r in host.list_checkpoints()) == ["merge-3.safetensors", "model-a.safetensors",
                                                              "model-b.safetensors"]


def test_a1111_twenty_cycles_keep_one_model_and_no_cached_state_dict(a1111):
    """The old whole-dict path (load_model(..., already_loaded_state_dict=...)) built a new model
    per hot-load and trashed the old one while listed; now nothing is built or cached."""
    from modules import sd_models
    from modules._sd_models_a1111 import LatentDiffusion
    host = make_host()
    original = a1111.pixels()
    for i in range(20):
        hot_load(host, a1111, 3 + i % 2, f"cycle {i}")
        host.restore()
    gc.collect()
    assert sum(type(o) is LatentDiffusion for o in gc.get_objects()) == 1
    assert len(sd_models.model_data.loaded_sd_models) == 1 and not sd_models.checkpoints_loaded
    assert not [e for e in sd_models.events if e[0] == "trash"]
    assert a1111.pixels() == original


def test_a1111_takes_baked_lora_weights_out_of_the_modules_it_writes(a1111):
    """extensions-builtin/Lora/networks.py keeps pre-LoRA backups on each module; a merge written
    over a baked LoRA must not leave them, or the next LoRA change writes them back."""
    host = make_host()
    a1111.pixels()
    out2 = a1111.model().model.diffusion_model.out._modules["2"]
    inb = a1111.model().model.diffusion_model.input_blocks._modules["0"]._modules["0"]
    for module in (out2, inb):
        module.network_bias_backup = module.bias.detach().clone()
        module.network_weights_backup = module.weight.detach().clone()
        module.network_current_names = (("lora", 1.0, 1.0, None),)
        with torch.no_grad():
            module.bias += 1                                # the LoRA, baked in

    import networks  # noqa: F401  (the built-in Lora extension's module, as the extension imports it)
    base = lib_mecha.model("model-a.safetensors")
    recipe = lib_mecha.weighted_sum(base, lib_mecha.model("model-b.safetensors"),
                                    alpha=lib_mecha.blocks("sd1-supermerger_blocks", {"OUT11": 0.5}, default=0.0))
    before_in = inb.bias.detach().clone()
    host.hot_load(recipe, MergeIdentity.from_recipe("lora"), options(host))
    expected = lib_mecha.merge(recipe, model_dirs=[str(a1111.ckpt_dir)]).state_dict
    assert torch.equal(out2.bias, expected["model.diffusion_model.out.2.bias"].to(out2.bias.dtype))
    assert out2.network_current_names == () and out2.network_bias_backup is None
    # a module the merge did not write keeps its LoRA and backup (alpha 0 there: the keys equal A's,
    # but they are written all the same on the first hot-load; the check is on the second)
    inb.network_current_names = (("lora", 1.0, 1.0, None),)
    inb.network_bias_backup = before_in
    host.hot_load(lib_mecha.weighted_sum(base, lib_mecha.model("model-b.safetensors"),
                                         alpha=lib_mecha.blocks("sd1-supermerger_blocks", {"OUT11": 0.6},
                                                                default=0.0)),
                  MergeIdentity.from_recipe("lora 2"), options(host))
    assert inb.network_bias_backup is before_in


def test_a1111_writes_the_schedule_where_generation_reads_it(a1111):
    """apply_alpha_schedule_override derives alphas_cumprod from alphas_cumprod_original at every
    generation (modules/sd_models.py)."""
    import safetensors.torch
    from modules import _net
    host = make_host()
    a1111.pixels()
    model = a1111.model()
    model.register_buffer("alphas_cumprod", torch.linspace(1, 0, 8))
    model.alphas_cumprod_original = torch.linspace(1, 0, 8)      # another object, as after a downcast
    sd = _net.random_checkpoint(3)
    sd["alphas_cumprod"] = torch.linspace(0.9, 0.1, 8).half()
    path = a1111.ckpt_dir / "with-schedule.safetensors"
    safetensors.torch.save_file(sd, str(path))
    host.hot_load(lib_mecha.model(str(path)), MergeIdentity.from_recipe("schedule"), options(host))
    assert torch.equal(model.alphas_cumprod_original, sd["alphas_cumprod"].float())


def test_a1111_keeps_a_selected_vae_file(a1111, monkeypatch):
    from modules import sd_vae
    host = make_host()
    a1111.pixels()
    monkeypatch.setattr(sd_vae, "loaded_vae_file", "/models/VAE/some.vae.safetensors")
    vae = a1111.model().first_stage_model.decoder.conv_out.weight.detach().clone()
    report = hot_load(host, a1111, 3, "own vae")
    assert torch.equal(a1111.model().first_stage_model.decoder.conv_out.weight, vae)
    assert any("no place in the loaded model" in w for w in report.warnings)


# --- Forge 2.x --------------------------------------------------------------------------------

def test_forge_never_hands_a_dict_to_its_loader_and_keeps_its_hash(forge):
    from modules import sd_models
    host = make_host()
    forge.pixels()
    params_hash = sd_models.model_data.forge_hash
    hot_load(host, forge, 3, "in place")
    forge.pixels()
    assert sd_models.loads == [str(forge.a)]                   # one load, from the file, before the merge
    assert sd_models.model_data.forge_hash == params_hash
    with pytest.raises(AttributeError):                        # why: the loader only takes paths
        from backend import loader
        loader.forge_loader(merge_dict())


def test_forge_hot_load_before_the_first_generation_loads_the_selected_model_first(forge):
    from modules import sd_models
    host = make_host()
    assert not hasattr(sd_models.model_data.sd_model, "forge_objects")   # Forge loads lazily
    report = hot_load(host, forge, 3, "lazy")
    assert report.loaded_first == "model-a.safetensors"
    merged = forge.pixels()
    host.restore()
    assert forge.pixels() != merged
    assert sd_models.loads == [str(forge.a)]


def test_forge_detaches_lora_backups_so_they_cannot_bring_back_old_weights(forge):
    host = make_host()
    forge.pixels()
    unet = forge.model().forge_objects.unet
    key = "diffusion_model.out.2.bias"
    unet.lora_loader.refresh({key: torch.ones(4)})             # a LoRA baked in, A's weight in backup
    hot_load(host, forge, 3, "lora")
    merged = forge.pixels()
    unet.lora_loader.refresh({key: torch.ones(4)})             # next generation re-applies the LoRA ...
    unet.lora_loader.refresh({}, force_refresh=True)           # ... and a later one removes it again
    assert forge.pixels() == merged                            # the merge, not model A, is underneath
    expected = merge_dict()["model.diffusion_model.out.2.bias"].float()
    assert torch.equal(getattr(unet.model.diffusion_model.out, "2").bias, expected)


def test_forge_clears_the_conditioning_cache(forge):
    from modules import processing
    host = make_host()
    forge.pixels()
    assert processing.StableDiffusionProcessing.cached_c[0] is not None
    hot_load(host, forge, 3, "cond")
    assert processing.StableDiffusionProcessing.cached_c == [None, None, None]


def test_forge_model_work_hops_to_the_main_thread_and_keeps_errors(forge):
    import safetensors.torch
    from modules_forge import main_thread
    host = make_host()
    forge.pixels()
    alien = forge.ckpt_dir / "alien.safetensors"
    safetensors.torch.save_file({"alien.weight": torch.zeros(2)}, str(alien))
    errors = []

    def worker():
        try:
            host.hot_load(lib_mecha.model(str(alien)), MergeIdentity.from_recipe("thread"), options(host))
        except HostError as exc:
            errors.append(exc)
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert main_thread.calls == ["job"]
    assert len(errors) == 1                       # run_and_wait_result would have swallowed it


def test_forge_refuses_quantized_storage(forge):
    host = make_host()
    forge.pixels()
    model = forge.model()
    tree = model.forge_objects.unet.model.diffusion_model
    out2 = getattr(tree.out, "2")
    out2._parameters["bias"] = torch.nn.Parameter(torch.zeros(4, dtype=torch.int8), requires_grad=False)
    with pytest.raises(HostError, match="quantized"):
        hot_load(host, forge, 3, "nf4")
    assert torch.equal(out2.bias, torch.zeros(4, dtype=torch.int8))


def test_forge_twenty_cycles_keep_one_model(forge):
    from modules import sd_models
    host = make_host()
    original = forge.pixels()
    for i in range(20):
        hot_load(host, forge, 3 + i % 2, f"cycle {i}")
        host.restore()
    assert sd_models.loads == [str(forge.a)]
    assert forge.pixels() == original


def test_restore_from_a_file_changed_on_disk_lets_the_host_reload_it(webui):
    from host_stub import write_checkpoint
    host = make_host()
    webui.pixels()
    hot_load(host, webui, 3, "changed")
    write_checkpoint(webui.a, 11)                      # the user overwrote model A meanwhile
    report = host.restore()
    assert any("changed on disk" in w and "reloaded" in w for w in report.warnings)
    assert host.hot_loaded() is None
    assert not host.current_model().is_merge


def test_forge_leaves_the_weights_of_a_selected_vae_file_alone(forge):
    """Forge puts a VAE file selected beside the checkpoint over the checkpoint's VAE (loader.py:
    replace_state_dict), for a saved merge too: the preview must match that, and restore must
    bring back the file's VAE, not the checkpoint's."""
    import safetensors.torch
    from modules import _net, shared
    from modules_forge import main_entry
    vae = {k[len("first_stage_model."):]: v for k, v in _net.random_checkpoint(7).items()
           if k.startswith("first_stage_model.")}
    vae_path = forge.root / "models" / "VAE" / "other.vae.safetensors"
    safetensors.torch.save_file(vae, str(vae_path))
    shared.opts.data["forge_additional_modules"] = [str(vae_path)]
    main_entry.refresh_model_loading_parameters()
    host = make_host()
    original = forge.pixels()
    report = hot_load(host, forge, 3, "with a vae file")
    assert any("no place in the loaded model" in w for w in report.warnings)
    streamed = forge.pixels()
    assert streamed != original
    host.restore()
    assert forge.pixels() == original
    host.refresh_checkpoints()
    select(forge, "merge-3.safetensors")                 # the saved merge, loaded by Forge with the VAE file
    assert forge.pixels() == streamed
