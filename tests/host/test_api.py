"""REST routes under /mecha/v1/ on the stand-in hosts, through FastAPI's TestClient."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import lib_mecha
from lib_mecha.host import extension

from host_stub import write_checkpoint


def recipe(a="model-a.safetensors", b="model-b.safetensors", alpha=0.5):
    return lib_mecha.serialize(lib_mecha.weighted_sum(lib_mecha.model(a), lib_mecha.model(b), alpha=alpha))


def start(api=True, api_auth=None):
    from modules import script_callbacks, shared
    shared.cmd_opts.api = api
    shared.cmd_opts.api_auth = api_auth
    extension.setup(script_callbacks)
    app = FastAPI()
    script_callbacks.fire("app_started", None, app)   # demo is None in API-only mode
    return TestClient(app)


def test_no_routes_without_the_host_api(webui):
    client = start(api=False)
    assert client.get("/mecha/v1/status").status_code == 404


def test_models_and_status(webui):
    client = start()
    models = client.get("/mecha/v1/models").json()
    assert [m["name"] for m in models["checkpoints"]] == ["model-a.safetensors", "model-b.safetensors"]
    status = client.get("/mecha/v1/status").json()
    assert status["host"] == webui.flavour
    assert status["job"]["state"] in ("idle", "done")  # the process-wide runner may hold an earlier test's job
    assert status["job"]["hot_loaded"] is None


def test_merge_hot_load_generate_restore(webui):
    client = start()
    original = webui.pixels()
    text = recipe()
    r = client.post("/mecha/v1/merge", json={"recipe": text, "target": "hot-load"})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["state"] == "done" and job["hot_loaded"]["recipe_id"] == job["recipe_id"]
    assert job["keys_merged"] == job["keys_total"] == job["result"]["keys_total"] > 0
    assert job["seconds"] > 0 and job["peak_extra_mb"] is not None
    again = client.post("/mecha/v1/merge", json={"recipe": text, "target": "hot-load"}).json()
    assert again["keys_merged"] == 0 and again["keys_total"] == job["keys_total"]   # nothing changed
    status = client.get("/mecha/v1/status").json()["job"]
    assert {k: status[k] for k in ("keys_total", "keys_merged")} == {"keys_total": job["keys_total"], "keys_merged": 0}
    merged = webui.pixels()
    assert merged != original
    assert client.get("/mecha/v1/status").json()["model"]["is_merge"] is True
    assert client.get(f"/mecha/v1/recipes/{job['recipe_id']}").json()["recipe"] == text
    preview = client.post("/mecha/v1/preview", json={"prompt": "a cat", "seed": 7, "steps": 1, "width": 8, "height": 8})
    assert preview.status_code == 200, preview.text
    from PIL import Image
    import io
    img = Image.open(io.BytesIO(base64.b64decode(preview.json()["images"][0]))).convert("RGB")
    assert img.tobytes() == merged
    assert f"Mecha recipe: {job['recipe_id']}" in preview.json()["infotexts"][0]
    restored = client.post("/mecha/v1/restore")
    assert restored.status_code == 200 and restored.json()["keys_restored"] == job["keys_total"]
    assert webui.pixels() == original


def test_merge_to_file_appears_in_the_lists(webui):
    client = start()
    r = client.post("/mecha/v1/merge", json={"recipe": recipe(), "target": "file", "name": "sub/ab-mix"})
    assert r.status_code == 200, r.text
    path = r.json()["result"]["path"]
    assert path == str(webui.ckpt_dir / "sub" / "ab-mix.safetensors")
    names = [m["name"] for m in client.get("/mecha/v1/models").json()["checkpoints"]]
    assert "sub/ab-mix.safetensors" in names
    again = client.post("/mecha/v1/merge", json={"recipe": recipe(), "target": "file", "name": "sub/ab-mix"})
    assert again.status_code == 409 and "already exists" in again.json()["error"]
    ok = client.post("/mecha/v1/merge", json={"recipe": recipe(alpha=0.2), "target": "file", "name": "sub/ab-mix",
                                               "overwrite": True})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("body, code, words", [
    ({"recipe": recipe("/etc/hostname")}, 403, "outside the model folders"),
    ({"recipe": recipe("../../secret.safetensors")}, 403, "climbs out"),
    ({"recipe": recipe("nowhere.safetensors")}, 404, "model not found"),
    ({"recipe": recipe(), "target": "file", "name": "../escape"}, 403, "leaves the save folder"),
    ({"recipe": recipe(), "target": "file", "name": "/tmp/abs"}, 403, "absolute"),
    ({"recipe": recipe(), "target": "file", "folder": "../..", "name": "x"}, 403, "outside the model folders"),
    ({"recipe": "merge \"nope\" &0"}, 400, ".mecha"),
    ({}, 400, "recipe"),
])
def test_bad_requests_get_a_clear_message_and_change_nothing(webui, body, code, words):
    client = start()
    original = webui.pixels()
    job_before = client.get("/mecha/v1/status").json()["job"]
    r = client.post("/mecha/v1/merge", json=body)
    assert r.status_code == code, r.text
    assert words in r.json()["error"]
    assert webui.pixels() == original
    assert client.get("/mecha/v1/status").json()["job"] == job_before  # no job was started


def test_merge_refused_while_a_generation_holds_the_lock(webui):
    from modules import call_queue
    client = start()
    with call_queue.queue_lock:
        r = client.post("/mecha/v1/merge", json={"recipe": recipe()})
    assert r.status_code == 409 and "busy" in r.json()["error"]


def test_routes_demand_the_host_api_credentials(webui):
    client = start(api_auth="alice:secret,bob:pw")
    assert client.get("/mecha/v1/status").status_code == 401
    assert client.get("/mecha/v1/status", auth=("alice", "wrong")).status_code == 401
    assert client.get("/mecha/v1/status", auth=("bob", "pw")).status_code == 200
    assert client.post("/mecha/v1/merge", json={"recipe": recipe()}).status_code == 401


def test_rest_merge_refused_while_the_tab_runs_a_job(webui):
    """The tab and the REST routes share one runner: never two jobs at once."""
    import threading

    from lib_mecha.errors import Busy
    from lib_mecha.jobs import RUNNER
    release = threading.Event()
    tab_job = RUNNER.start("save", "a save from the tab", lambda job: release.wait(30))
    try:
        client = start()
        r = client.post("/mecha/v1/merge", json={"recipe": recipe(), "target": "hot-load"})
        assert r.status_code == 409 and "a save is running" in r.json()["error"]
        with pytest.raises(Busy):
            RUNNER.start("merge", "a second tab job", lambda job: None)
    finally:
        release.set()
        tab_job.finished.wait(30)


@pytest.mark.parametrize("overwrite", [False, True])
def test_saving_over_an_input_is_refused_even_when_asked(webui, overwrite):
    client = start()
    before = {p.name: p.read_bytes() for p in webui.ckpt_dir.iterdir()}
    job_before = client.get("/mecha/v1/status").json()["job"]
    r = client.post("/mecha/v1/merge", json={"recipe": recipe(), "target": "file", "name": "model-a",
                                               "overwrite": overwrite})
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "OutputIsInput" and "is an input of this recipe" in r.json()["error"]
    assert {p.name: p.read_bytes() for p in webui.ckpt_dir.iterdir()} == before
    assert client.get("/mecha/v1/status").json()["job"] == job_before  # refused before a job started


def test_input_hashes_are_kept_in_the_hosts_data_folder(webui):
    from modules import paths
    client = start()
    r = client.post("/mecha/v1/merge", json={"recipe": recipe(), "target": "file", "name": "hashed"})
    assert r.status_code == 200, r.text
    cache = Path(paths.data_path) / "mecha" / "hashes.json"
    assert str(webui.a.resolve()) in cache.read_text(encoding="utf-8")


def test_checkpoints_linked_into_the_folder_are_listed_and_merged(webui, tmp_path):
    """One model store shared by several WebUIs: links to files, and to a folder, inside the
    checkpoint folder (the host lists both: modules/util.py walk_files follows links)."""
    from modules import sd_models
    store = tmp_path / "store"
    write_checkpoint(store / "shared.safetensors", 5)
    write_checkpoint(store / "deep" / "other.safetensors", 6)
    (webui.ckpt_dir / "shared.safetensors").symlink_to(store / "shared.safetensors")
    (webui.ckpt_dir / "linked").symlink_to(store / "deep", target_is_directory=True)
    sd_models.list_models()
    client = start()
    webui.pixels()  # a model is loaded: the hot-load compares the merge with it
    listed = {m["name"]: m["path"] for m in client.get("/mecha/v1/models").json()["checkpoints"]}
    assert {"shared.safetensors", "linked/other.safetensors"} <= set(listed)
    linked = recipe("shared.safetensors", "linked/other.safetensors")
    for body in ({"recipe": linked, "target": "hot-load"},
                 {"recipe": recipe(listed["shared.safetensors"], listed["linked/other.safetensors"]),
                  "target": "hot-load"},
                 {"recipe": linked, "target": "file", "name": "from-links"}):
        r = client.post("/mecha/v1/merge", json=body)
        assert r.status_code == 200, r.text
    # a name that climbs out, or the store's own path, stays outside
    for bad in (str(webui.ckpt_dir / "linked" / ".." / "shared.safetensors"), str(store / "shared.safetensors")):
        r = client.post("/mecha/v1/merge", json={"recipe": recipe(bad)})
        assert r.status_code == 403 and "outside the model folders" in r.json()["error"], r.text
    # and no output is written through a link to outside the folders
    r = client.post("/mecha/v1/merge", json={"recipe": linked, "target": "file", "name": "linked/out"})
    assert r.status_code == 403, r.text
    assert sorted(p.name for p in (store / "deep").iterdir()) == ["other.safetensors"]
