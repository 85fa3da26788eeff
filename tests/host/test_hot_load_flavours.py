"""Host-specific hot-load details: A1111's registry and model list, Forge's loader, LoRA and threads."""
from __future__ import annotations

import threading

import pytest
import torch

from lib_mecha.errors import HostError
from lib_mecha.host.base import MergeIdentity
from lib_mecha.host.detect import make_host
from host_stub import merge_dict


# --- A1111 ------------------------------------------------------------------------------------

def test_a1111_refresh_through_the_adapter_keeps_the_merge(a1111):
    host = make_host()
    webui = a1111
    webui.pixels()
    host.hot_load(merge_dict(), MergeIdentity.from_recipe("refresh"))
    merged = webui.pixels()
    host.refresh_checkpoints()                 # list_models() clears the registry; the adapter re-registers
    assert webui.pixels() == merged
    assert sorted(r.name for r in host.list_checkpoints()) == ["model-a.safetensors", "model-b.safetensors"]


def test_a1111_original_is_trashed_by_default_and_restore_reads_the_file(a1111):
    from modules import sd_models
    host = make_host()
    original = a1111.pixels()
    host.hot_load(merge_dict(), MergeIdentity.from_recipe("trash"))
    assert [e for e in sd_models.events if e[0] == "trash"] == [("trash", "model-a.safetensors [%s]" % (
        sd_models.checkpoint_aliases["model-a.safetensors"].shorthash))]
    assert len(sd_models.model_data.loaded_sd_models) == 1     # only the merge: no model left on meta in the list
    host.restore()
    assert a1111.pixels() == original
    assert all(not getattr(m.sd_checkpoint_info, "mecha_unsaved", None) for m in sd_models.model_data.loaded_sd_models)


def test_a1111_keeps_the_original_on_cpu_when_the_user_keeps_two_models(a1111):
    from modules import sd_models, shared
    shared.opts.data["sd_checkpoints_limit"] = 2
    host = make_host()
    original = a1111.pixels()
    host.hot_load(merge_dict(), MergeIdentity.from_recipe("keep"))
    assert not [e for e in sd_models.events if e[0] == "trash"]
    assert len(sd_models.model_data.loaded_sd_models) == 2
    host.restore()
    assert a1111.pixels() == original
    assert [m.sd_checkpoint_info.name for m in sd_models.model_data.loaded_sd_models] == ["model-a.safetensors"]


def test_a1111_unregisters_the_merge_after_restore(a1111):
    from modules import sd_models
    host = make_host()
    a1111.pixels()
    host.hot_load(merge_dict(), MergeIdentity.from_recipe("registry"))
    assert any(getattr(i, "mecha_unsaved", None) for i in sd_models.checkpoints_list.values())
    host.restore()
    assert not any(getattr(i, "mecha_unsaved", None) for i in sd_models.checkpoints_list.values())
    assert not any(getattr(i, "mecha_unsaved", None) for i in sd_models.checkpoint_aliases.values())


def test_a1111_without_a_loaded_model_checks_against_the_architecture_table(a1111):
    host = make_host()
    with pytest.raises(HostError, match="keys of sd1-ldm missing"):
        host.hot_load(merge_dict(), MergeIdentity.from_recipe("tiny"))
    assert a1111.model() is None


# --- Forge 2.x --------------------------------------------------------------------------------

def test_forge_never_hands_a_dict_to_its_loader_and_keeps_its_hash(forge):
    from modules import sd_models
    host = make_host()
    forge.pixels()
    params_hash = sd_models.model_data.forge_hash
    host.hot_load(merge_dict(), MergeIdentity.from_recipe("in place"))
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
    host.hot_load(merge_dict(), MergeIdentity.from_recipe("lazy"))
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
    host.hot_load(merge_dict(), MergeIdentity.from_recipe("lora"))
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
    host.hot_load(merge_dict(), MergeIdentity.from_recipe("cond"))
    assert processing.StableDiffusionProcessing.cached_c == [None, None, None]


def test_forge_model_work_hops_to_the_main_thread_and_keeps_errors(forge):
    from modules_forge import main_thread
    host = make_host()
    forge.pixels()
    errors = []

    def worker():
        try:
            host.hot_load({"alien.weight": torch.zeros(2)}, MergeIdentity.from_recipe("thread"))
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
        host.hot_load(merge_dict(), MergeIdentity.from_recipe("nf4"))
