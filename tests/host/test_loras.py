"""LoRAs extracted in the tab land in the host's LoRA folder and in its LoRA list without a restart."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lib_mecha.arch.demo import random_state_dict
from lib_mecha.errors import OutputExists, PathEscape
from lib_mecha.host.extract import ExtractRequest
from lib_mecha.host.detect import make_host
from lib_mecha.jobs import JobRunner
from lib_mecha.recipe import model
from lib_mecha.ui import extraction
from lib_mecha.ui.catalog import Catalog

Q = "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.weight"


@pytest.fixture
def sd1_pair(webui):
    """Two SD1 checkpoints with every real key (the stand-in's own models hold only a few)."""
    from modules import sd_models
    base = random_state_dict("sd1-ldm", 0, shape_divisor=64)
    tuned = dict(base)
    tuned[Q] = base[Q] + torch.ones_like(base[Q])
    save_file(base, str(webui.ckpt_dir / "sd1-base.safetensors"))
    save_file(tuned, str(webui.ckpt_dir / "sd1-tuned.safetensors"))
    sd_models.list_models()
    host = make_host()
    catalog = Catalog(host)
    labels = {Path(e.path).stem: e.label for e in catalog.checkpoints()}
    return host, catalog, labels["sd1-tuned"], labels["sd1-base"]


def _lora_dir() -> Path:
    from modules import shared
    return Path(shared.cmd_opts.lora_dir)


def test_refresh_loras_rescans_the_builtin_lora_list(webui):
    import networks  # the built-in Lora extension imports it at start-up
    save_file({"lora_unet_x.lora_up.weight": torch.ones(2, 1)}, str(_lora_dir() / "late.safetensors"))
    assert "late" not in networks.available_networks
    host = make_host()
    host.run_exclusive(host.refresh_loras)
    assert "late" in networks.available_networks


def test_refresh_loras_without_the_lora_extension_does_nothing(webui):
    assert "networks" not in sys.modules
    make_host().refresh_loras()
    assert "networks" not in sys.modules


def test_an_extracted_lora_is_usable_in_prompts_at_once(sd1_pair):
    import networks
    host, catalog, tuned, base = sd1_pair
    request = ExtractRequest(name="sub/my-style", rank=2)
    job = extraction.start_extract(host, catalog, model(catalog.checkpoint_name(tuned)), base, request,
                                   runner=JobRunner())
    job.finished.wait(120)
    assert job.error is None, job.message()
    path = _lora_dir() / "sub" / "my-style.safetensors"
    assert path.is_file() and job.result["modules"] == 1
    assert networks.available_networks["my-style"] == str(path)
    assert any(e.path == str(path) for e in catalog.loras())   # the tab's LoRA list too
    assert "<lora:my-style:1>" in extraction.extract_done_message(job)


@pytest.mark.parametrize("name,error", [("../outside", PathEscape), ("/tmp/abs", PathEscape), ("", PathEscape)])
def test_a_name_outside_the_lora_folder_is_refused_before_anything_runs(sd1_pair, name, error):
    host, catalog, tuned, base = sd1_pair
    before = sorted(p.name for p in _lora_dir().parent.rglob("*"))
    with pytest.raises(error):
        extraction.start_extract(host, catalog, model(catalog.checkpoint_name(tuned)), base,
                                 ExtractRequest(name=name), runner=JobRunner())
    assert sorted(p.name for p in _lora_dir().parent.rglob("*")) == before


def test_an_existing_lora_is_kept_unless_asked(sd1_pair):
    host, catalog, tuned, base = sd1_pair
    existing = _lora_dir() / "taken.safetensors"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExists):
        extraction.start_extract(host, catalog, model(catalog.checkpoint_name(tuned)), base,
                                 ExtractRequest(name="taken"), runner=JobRunner())
    assert existing.read_bytes() == b"keep me"


# --- the REST route ------------------------------------------------------------------------------

def _client():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from modules import script_callbacks, shared

    from lib_mecha.host import extension
    shared.cmd_opts.api = True
    extension.setup(script_callbacks)
    app = FastAPI()
    script_callbacks.fire("app_started", None, app)
    return TestClient(app)


def test_rest_extract_of_a_recipe_lands_in_the_lora_list(sd1_pair):
    import networks

    import lib_mecha
    recipe = lib_mecha.serialize(lib_mecha.weighted_sum(lib_mecha.model("sd1-base.safetensors"),
                                                        lib_mecha.model("sd1-tuned.safetensors"), alpha=0.5))
    r = _client().post("/mecha/v1/extract", json={"recipe": recipe, "base": "sd1-base.safetensors", "name": "half",
                                                  "rank": 4, "components": ["diffuser"]})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["path"] == str(_lora_dir() / "half.safetensors") and r.json()["result"]["modules"] == 1
    assert "half" in networks.available_networks


@pytest.mark.parametrize("body, code, words", [
    ({"tuned": "sd1-tuned.safetensors", "base": "sd1-base.safetensors", "name": "../../escape"}, 403,
     "leaves the save folder"),
    ({"tuned": "sd1-tuned.safetensors", "base": "sd1-base.safetensors", "name": "/tmp/abs"}, 403, "absolute"),
    ({"tuned": "/etc/hostname", "base": "sd1-base.safetensors", "name": "x"}, 403, "outside the model folders"),
    ({"tuned": "sd1-tuned.safetensors", "base": "nowhere.safetensors", "name": "x"}, 404, "model not found"),
    ({"tuned": "sd1-tuned.safetensors", "base": "sd1-base.safetensors", "name": "x", "rank": "8"}, 422,
     "'rank' must be a whole number, not '8'"),
    ({"tuned": "sd1-tuned.safetensors", "base": "sd1-base.safetensors", "name": "x", "energy": 2.0}, 400,
     "must be in (0, 1]"),
    ({"tuned": "sd1-tuned.safetensors", "base": "sd1-base.safetensors", "name": "x", "rank": 1000}, 400,
     "more than any weight of sd1-ldm allows"),
    ({"base": "sd1-base.safetensors", "name": "x"}, 400, "'tuned' (a model name) or 'recipe'"),
])
def test_rest_extract_bad_requests_write_nothing(sd1_pair, body, code, words):
    r = _client().post("/mecha/v1/extract", json=body)
    assert r.status_code == code, r.text
    assert words in r.json()["error"]
    assert list(_lora_dir().rglob("*.safetensors")) == []
