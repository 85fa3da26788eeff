"""The tab's actions inside a WebUI: the stand-in A1111 and Forge 2.x (tests/webui_stub) with the
real host adapters: merge & hot-load, status line, preview, restore, one job at a time."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import lib_mecha
from lib_mecha.errors import Busy, HostError
from lib_mecha.recipe import model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))

from lib_mecha.host.base import PreviewParams  # noqa: E402
from lib_mecha.ui import actions  # noqa: E402
from lib_mecha.ui.catalog import Catalog  # noqa: E402
from lib_mecha.jobs import JobRunner  # noqa: E402
from lib_mecha.ui.session import Session  # noqa: E402


@pytest.fixture()
def host(webui_host):
    """The WebUI's host adapter in this module (the standalone one elsewhere in tests/ui)."""
    return webui_host


def merge(host, catalog, runner):
    node = lib_mecha.weighted_sum(model("model-a.safetensors"), model("model-b.safetensors"), alpha=0.4)
    text = lib_mecha.serialize(node)
    job = actions.start_merge(host, catalog, node, text, runner=runner)
    assert job.finished.wait(120)
    return job, text


def test_merge_and_load_then_preview_then_restore(webui, host):
    catalog = Catalog(host)
    assert [e.name for e in catalog.checkpoints()] == ["model-a.safetensors", "model-b.safetensors"]
    status = actions.status_text(host, catalog)                      # the host loads lazily
    assert status.startswith("Loaded: no model yet; the WebUI loads model-a.safetensors")
    original = webui.pixels()
    assert actions.status_text(host, catalog).startswith("Loaded: original checkpoint model-a.safetensors")
    with pytest.raises(HostError, match="no merge is loaded"):
        actions.preview(host, PreviewParams(steps=1, width=8, height=8))

    job, text = merge(host, catalog, JobRunner())
    assert job.error is None, job.message()
    ident = host.hot_loaded()
    assert ident is not None and ident.recipe_text == text
    report = host.live_report()
    assert actions.merge_done_message(job).startswith(
        f"loaded {ident.display_name}: merged {report.keys_total} keys in ")
    assert actions.status_text(host, catalog).startswith(
        f"Loaded: merge {ident.display_name} (recipe {ident.short_id}) — weighted_sum(model-a, model-b, 0.4); "
        f"merged {report.keys_total} keys in ")
    images = actions.preview(host, PreviewParams(prompt="a cat", seed=7, steps=1, width=8, height=8))
    assert len(images) == 1 and f"Mecha recipe: {ident.short_id}" in images[0][1]
    assert webui.pixels() != original

    assert actions.restore(host).startswith(f"restored the original checkpoint ({report.keys_total} keys written back")
    assert webui.pixels() == original
    assert actions.status_text(host, catalog).startswith("Loaded: original checkpoint model-a.safetensors")
    assert actions.restore(host).startswith("the original checkpoint is loaded")


def test_merge_twice_is_refused(webui, host, slow_method):
    catalog = Catalog(host)
    runner = JobRunner()
    node = lib_mecha.methods.build(slow_method, model("model-a.safetensors"), model("model-b.safetensors"))
    job = actions.start_merge(host, catalog, node, lib_mecha.serialize(node), runner=runner)
    with pytest.raises(Busy, match="a merge is running"):
        actions.start_merge(host, catalog, node, lib_mecha.serialize(node), runner=runner)
    with pytest.raises(Busy, match="a merge is running"):
        actions.start_save(host, catalog, node, actions.SaveRequest("x"), "sd1-ldm", runner=runner)
    runner.cancel()
    assert job.finished.wait(120) and job.cancelled
    assert host.hot_loaded() is None


def test_the_tab_merges_and_loads_from_its_buttons(webui, host):
    import gradio as gr
    from lib_mecha.ui import create_tab
    blocks = create_tab(host)
    assert isinstance(blocks, gr.Blocks)
    ctx = blocks.mecha_context
    assert ctx.actions.hot
    webui.pixels()  # the stand-in's checkpoints are partial: hot-loading needs the live model to compare
    session = Session()
    session.set_input("a", "model-a.safetensors", ctx.catalog)
    assert ctx.arch_for(session) == "sd1-ldm"
    first = ctx.actions.on_merge(session)
    assert "choose a model or an earlier step for input &#x27;b&#x27;" in first[2]["value"]
    assert [set(u) for u in list(ctx.actions.follow_merge(session))[-1]] == [{"__type__"}] * 4  # nothing to follow
    session.set_input("b", "model-b.safetensors", ctx.catalog)
    ctx.actions.on_merge(session)
    updates = list(ctx.actions.follow_merge(session))
    progress, cancel, message, status = updates[-1]
    ident = host.hot_loaded()
    assert ident is not None and 'data-state="done"' in progress["value"] and cancel["visible"] is False
    assert f"loaded {ident.display_name}" in message["value"]
    assert f"Loaded: merge {ident.display_name}" in status["value"]
    first, restored = list(ctx.actions.on_restore())
    assert "restoring the original checkpoint" in first[2]["value"]
    assert "restored the original checkpoint" in restored[2]["value"] and host.hot_loaded() is None


def test_the_status_line_says_how_many_keys_a_re_merge_recomputed(webui, host):
    catalog = Catalog(host)
    runner = JobRunner()
    webui.pixels()

    def merge_and_load(in00):
        alpha = lib_mecha.blocks("sd1-supermerger_blocks", {"IN00": in00}, default=0.3)
        node = lib_mecha.weighted_sum(model("model-a.safetensors"), model("model-b.safetensors"), alpha=alpha)
        job = actions.start_merge(host, catalog, node, lib_mecha.serialize(node), runner=runner)
        assert job.finished.wait(120) and job.error is None, job.message()
        return job
    first = merge_and_load(0.3)
    total = first.result["report"].keys_total
    moved = merge_and_load(0.9)                                  # one block slider moved
    assert f"re-merged 2 of {total} keys in " in actions.merge_done_message(moved)
    assert f"re-merged 2 of {total} keys in " in actions.status_text(host, catalog)
    same = merge_and_load(0.9)
    assert f"nothing to re-merge: all {total} keys were unchanged" in actions.merge_done_message(same)


def test_merge_and_load_is_refused_at_once_while_the_webui_generates(webui, host):
    from modules import call_queue
    catalog = Catalog(host)
    webui.pixels()
    node = lib_mecha.weighted_sum(model("model-a.safetensors"), model("model-b.safetensors"), alpha=0.4)
    with call_queue.queue_lock:
        with pytest.raises(Busy, match="busy with a generation"):
            actions.start_merge(host, catalog, node, lib_mecha.serialize(node), runner=JobRunner())
    assert host.hot_loaded() is None


def test_the_tab_merges_and_saves_checkpoints_linked_into_the_folder(webui, host, tmp_path):
    from host_stub import write_checkpoint
    from modules import sd_models
    store = tmp_path / "store"
    write_checkpoint(store / "shared.safetensors", 5)
    (webui.ckpt_dir / "shared.safetensors").symlink_to(store / "shared.safetensors")
    sd_models.list_models()
    catalog = Catalog(host)
    assert "shared.safetensors" in [e.name for e in catalog.checkpoints()]
    webui.pixels()
    node = lib_mecha.weighted_sum(model("model-a.safetensors"), model("shared.safetensors"), alpha=0.4)
    job = actions.start_merge(host, catalog, node, lib_mecha.serialize(node), runner=JobRunner())
    assert job.finished.wait(120) and job.error is None, job.message()
    job = actions.start_save(host, catalog, node, actions.SaveRequest("from-link"), "sd1-ldm", runner=JobRunner())
    assert job.finished.wait(120) and job.error is None, job.message()
    assert (webui.ckpt_dir / "from-link.safetensors").is_file()


@pytest.mark.parametrize("name", ["model-a", "shared"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_the_tab_never_saves_over_an_input(webui, host, tmp_path, name, overwrite):
    """Refused before the job, and before the question whether to replace the file."""
    from lib_mecha.errors import OutputIsInput
    from modules import sd_models
    (webui.ckpt_dir / "shared.safetensors").symlink_to(webui.b)  # another name of model-b
    sd_models.list_models()
    catalog = Catalog(host)
    before = {p.name: p.read_bytes() for p in webui.ckpt_dir.iterdir()}
    node = lib_mecha.weighted_sum(model("model-a.safetensors"), model("model-b.safetensors"), alpha=0.4)
    with pytest.raises(OutputIsInput, match="is an input of this recipe"):
        actions.start_save(host, catalog, node, actions.SaveRequest(name, overwrite=overwrite), "sd1-ldm",
                           runner=JobRunner())
    assert {p.name: p.read_bytes() for p in webui.ckpt_dir.iterdir()} == before


def test_the_preview_offers_the_hosts_samplers(webui, host):
    # modules/sd_samplers.py: visible_sampler_names() leaves out what the settings hide
    from modules import sd_samplers, shared
    assert host.samplers()[:3] == ["DPM++ 2M", "DPM++ SDE", "Euler a"]
    shared.opts.data["hide_samplers"] = ["PLMS"]
    sd_samplers.set_samplers()
    assert "PLMS" not in host.samplers() and "UniPC" in host.samplers()
    ctx = __import__("lib_mecha.ui", fromlist=["create_tab"]).create_tab(host).mecha_context
    assert ctx.actions.sampler_update()["choices"] == host.samplers()
