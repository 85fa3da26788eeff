"""Save, merge & load, restore and status with the standalone host and real tiny files."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import lib_mecha
from lib_mecha.errors import Busy, HostError, MechaError, OutputExists
from lib_mecha.recipe import model
from lib_mecha.ui import actions
from lib_mecha.jobs import JobRunner

KEY = "model.diffusion_model.input_blocks.1.1.proj_in.weight"


def recipe():
    return lib_mecha.weighted_sum(model("a.safetensors"), model("b.safetensors"), alpha=0.25)


def save(host, catalog, request, node=None, runner=None):
    job = actions.start_save(host, catalog, node or recipe(), request, "sd1-ldm", runner=runner or JobRunner())
    assert job.finished.wait(120)
    return job


def test_save_writes_the_merge_with_its_recipe(host, catalog, tiny_models):
    job = save(host, catalog, actions.SaveRequest("merged", dtype="fp32"))
    assert job.error is None, job.message()
    path = host.default_save_dir() / "merged.safetensors"
    assert job.result["path"] == str(path)
    assert actions.save_done_message(job).startswith(f"saved {path} (")
    out = load_file(str(path))
    a = load_file(str(tiny_models / "a.safetensors"))
    b = load_file(str(tiny_models / "b.safetensors"))
    assert out[KEY].dtype == torch.float32
    torch.testing.assert_close(out[KEY], torch.lerp(a[KEY].float(), b[KEY].float(), 0.25))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert 'merge "weighted_sum"' in meta["mecha_recipe"]
    assert json.loads(meta["sd_merge_recipe"])["type"] == "sd-webui-mecha"


def test_an_existing_file_needs_overwrite(host, catalog):
    assert save(host, catalog, actions.SaveRequest("twice")).error is None
    with pytest.raises(OutputExists, match="twice.safetensors"):
        actions.start_save(host, catalog, recipe(), actions.SaveRequest("twice"), "sd1-ldm", runner=JobRunner())
    job = save(host, catalog, actions.SaveRequest("twice", overwrite=True))
    assert job.error is None


@pytest.mark.parametrize("name", ["../escape", "/abs/path", ""])
def test_save_names_stay_in_the_save_folder(host, catalog, name):
    with pytest.raises(MechaError):
        actions.start_save(host, catalog, recipe(), actions.SaveRequest(name), "sd1-ldm", runner=JobRunner())


def test_ema_pruning_and_vae_choice_are_part_of_the_saved_recipe(catalog):
    request = actions.SaveRequest("x", prune_ema=True, vae="c.safetensors")
    node = actions.save_recipe(recipe(), request, catalog, "sd1-ldm")
    pruned = lib_mecha.methods.build("omit_component", recipe(), "ema")
    assert node == lib_mecha.methods.build("replace_vae", pruned, model("c.safetensors"))
    assert actions.save_recipe(recipe(), actions.SaveRequest("x"), catalog, None) == recipe()
    with pytest.raises(MechaError, match="EMA pruning needs a recognised architecture"):
        actions.save_recipe(recipe(), actions.SaveRequest("x", prune_ema=True), catalog, None)


def test_a_bare_vae_file_is_baked_in(host, catalog, tiny_models, tmp_path):
    """A VAE file as the WebUI's VAE folder holds it: encoder./decoder. names, no prefix."""
    from safetensors.torch import save_file
    c = load_file(str(tiny_models / "c.safetensors"))
    prefix = "first_stage_model."
    bare = {k[len(prefix):]: v + 1 for k, v in c.items() if k.startswith(prefix)}
    save_file(bare, str(tmp_path / "bare-vae.safetensors"))
    job = save(host, catalog, actions.SaveRequest("with-bare-vae", vae=str(tmp_path / "bare-vae.safetensors")))
    assert job.error is None, job.message()
    got = load_file(job.result["path"])[prefix + "encoder.conv_in.weight"]
    assert torch.equal(got, bare["encoder.conv_in.weight"].to(got.dtype))


def test_saved_vae_comes_from_the_chosen_model(host, catalog, tiny_models):
    job = save(host, catalog, actions.SaveRequest("with-vae", prune_ema=True, vae="c.safetensors"))
    assert job.error is None, job.message()
    out = load_file(job.result["path"])
    c = load_file(str(tiny_models / "c.safetensors"))
    vae_key = "first_stage_model.encoder.conv_in.weight"
    assert torch.equal(out[vae_key], c[vae_key])
    assert not [k for k in out if k.startswith("model_ema.")]


def test_a_missing_model_is_named_before_anything_runs(host, catalog):
    node = lib_mecha.weighted_sum(model("a.safetensors"), model("gone.safetensors"))
    with pytest.raises(MechaError, match="model not found: gone.safetensors"):
        actions.start_save(host, catalog, node, actions.SaveRequest("x"), "sd1-ldm", runner=JobRunner())


def test_cancelled_save_leaves_no_file(host, catalog, slow_method):
    runner = JobRunner()
    node = lib_mecha.methods.build(slow_method, model("a.safetensors"), model("b.safetensors"))
    job = actions.start_save(host, catalog, node, actions.SaveRequest("cancelled"), "sd1-ldm", runner=runner)
    while job.done == 0 and not job.finished.is_set():
        job.finished.wait(0.01)
    assert runner.cancel()
    assert job.finished.wait(120)
    assert job.cancelled and job.done < job.total
    assert list(host.default_save_dir().iterdir()) == []


def test_save_during_a_job_is_refused(host, catalog, slow_method):
    runner = JobRunner()
    node = lib_mecha.methods.build(slow_method, model("a.safetensors"), model("b.safetensors"))
    job = actions.start_save(host, catalog, node, actions.SaveRequest("first"), "sd1-ldm", runner=runner)
    with pytest.raises(Busy, match="a save is running"):
        actions.start_save(host, catalog, recipe(), actions.SaveRequest("second"), "sd1-ldm", runner=runner)
    runner.cancel()
    assert job.finished.wait(120)


def test_standalone_cannot_hot_load_or_preview(host, catalog):
    with pytest.raises(HostError, match="hot-loading needs a WebUI"):
        actions.start_merge(host, catalog, recipe(), "text", runner=JobRunner())
    with pytest.raises(HostError, match="previews need a WebUI"):
        actions.preview(host, None)
    assert actions.restore(host).startswith("nothing to restore")
    assert actions.status_text(host, catalog).startswith(f"Standalone: merges are saved to {host.default_save_dir()}")


def test_extraction_groups_map_onto_each_architecture_s_components():
    from lib_mecha.errors import MechaError
    from lib_mecha.ui.extraction import GROUPS, components_for
    assert components_for("sdxl-sgm", GROUPS) == ("clip_l", "clip_g", "diffuser")
    assert components_for("sdxl-sgm", ("text encoders",)) == ("clip_l", "clip_g")
    assert components_for("flux-flux", ("UNet / DiT",)) == ("diffuser",)
    assert components_for(None, GROUPS) is None
    with pytest.raises(MechaError, match="nothing to extract"):
        components_for("sd1-ldm", ())
