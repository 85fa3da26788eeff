"""The grid through the host's API (stand-in modules/api/api.py): the X/Y/Z plot chosen by name in
``POST /sdapi/v1/txt2img``, a Mecha axis chosen by its label as ``/sdapi/v1/script-info`` lists it;
and Compare over our REST route."""
from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import lib_mecha

from host_stub import Grid, XYZ_ARGS

GEN = {"prompt": "a cat", "seed": 7, "steps": 1, "width": 8, "height": 8}


def recipe(alpha):
    return lib_mecha.serialize(lib_mecha.weighted_sum(lib_mecha.model("model-a.safetensors"),
                                                      lib_mecha.model("model-b.safetensors"), alpha=alpha))


def pixels(b64: str) -> bytes:
    from PIL import Image
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB").tobytes()


@pytest.fixture()
def client(webui):
    from modules import script_callbacks, shared
    from modules.api.api import Api
    shared.cmd_opts.api = True
    Grid()                                                 # the WebUI's start-up, UI included
    app = FastAPI()
    Api(app)
    script_callbacks.fire("app_started", None, app)
    return TestClient(app)


def xyz_args(client, axis_label, values):
    """The X/Y/Z plot's arguments built from what script-info lists: the axis by its label."""
    info = next(s for s in client.get("/sdapi/v1/script-info").json() if s["name"] == "x/y/z plot")
    assert len(info["args"]) == XYZ_ARGS
    args = [a["value"] for a in info["args"]]
    labels = [a["label"] for a in info["args"]]
    x_type = labels.index("X type")
    args[x_type] = info["args"][x_type]["choices"].index(axis_label)
    args[labels.index("X values")] = values
    args[labels.index("Y type")] = args[labels.index("Z type")] = 0          # "Nothing"
    args[labels.index("Include Sub Images")] = True
    return args


def test_an_alpha_grid_over_the_api_and_its_cells_one_by_one(client, webui):
    webui.pixels()
    assert client.post("/mecha/v1/merge", json={"recipe": recipe(0.5)}).status_code == 200
    before = webui.pixels()
    body = {**GEN, "script_name": "X/Y/Z plot", "script_args": xyz_args(client, "Mecha: alpha (step 1)", "0.2-0.6 [3]")}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    cells = [pixels(b) for b in out["images"][1:]]
    infotexts = json.loads(out["info"])["infotexts"][1:]
    assert len(cells) == 3 and len(set(cells)) == 3
    grid = client.get("/mecha/v1/status").json()["grid"]
    assert grid["state"] == "done" and [c["keys_merged"] > 0 for c in grid["cells"]] == [True] * 3
    for cell, infotext, report in zip(cells, infotexts, grid["cells"]):
        assert f"Mecha recipe: {report['recipe_id']}" in infotext
        text = client.get(f"/mecha/v1/recipes/{report['recipe_id']}").json()["recipe"]
        assert client.post("/mecha/v1/merge", json={"recipe": text}).status_code == 200
        assert webui.pixels() == cell
    client.post("/mecha/v1/merge", json={"recipe": recipe(0.5)})
    assert webui.pixels() == before


def test_a_bad_value_over_the_api_is_one_clear_error_and_nothing_changes(client, webui):
    webui.pixels()
    client.post("/mecha/v1/merge", json={"recipe": recipe(0.5)})
    before = webui.pixels()
    body = {**GEN, "script_name": "x/y/z plot", "script_args": xyz_args(client, "Mecha: alpha (step 3)", "0.2")}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 500
    assert r.json()["errors"].startswith("Mecha: alpha (step 3) = 0.2: the recipe has 1 step; there is no step 3")
    assert webui.pixels() == before


def test_compare_gives_the_original_and_the_merge_and_keeps_the_merge(client, webui):
    original = webui.pixels()
    merge = client.post("/mecha/v1/merge", json={"recipe": recipe(0.4)}).json()
    merged = webui.pixels()
    r = client.post("/mecha/v1/compare", json=GEN)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [pixels(b) for b in out["original"]] == [original] and [pixels(b) for b in out["merged"]] == [merged]
    assert f"Mecha recipe: {merge['recipe_id']}" in out["infotexts"]["merged"][0]
    assert "Mecha recipe" not in out["infotexts"]["original"][0]
    assert out["restore"]["keys_restored"] == out["reload"]["keys_merged"] == merge["keys_total"]
    assert webui.pixels() == merged
    assert client.get("/mecha/v1/status").json()["job"]["hot_loaded"]["recipe_id"] == merge["recipe_id"]


def test_compare_without_a_merge_is_refused(client, webui):
    webui.pixels()
    r = client.post("/mecha/v1/compare", json=GEN)
    assert r.status_code == 422 and "no merge is loaded" in r.json()["error"]
