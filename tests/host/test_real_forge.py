"""End to end against a real, already running Forge (local only; CI has none).

Set ``MECHA_FORGE_URL`` (e.g. http://127.0.0.1:7861) to a Forge started with ``--api`` and this
extension installed, with at least two SD1.5 checkpoints (``MECHA_FORGE_A``/``MECHA_FORGE_B`` pick
them; default: the first two listed). Optional ``MECHA_FORGE_PID`` adds memory figures to the output.

The test merges A and B through our REST route, hot-loads the result, generates 64x64 (1 step,
CFG 1) through the host's own ``/sdapi/v1/txt2img``, checks the pixels differ from A's, restores,
and checks A's pixels come back exactly. Images are compared by pixels, not PNG bytes.
"""
from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request

import pytest

URL = os.environ.get("MECHA_FORGE_URL", "").rstrip("/")

pytestmark = [pytest.mark.real_host,
              pytest.mark.skipif(not URL, reason="MECHA_FORGE_URL is not set: no running Forge to test against")]

GEN = {"prompt": "a photo of a cat", "negative_prompt": "", "seed": 1234, "steps": 1, "cfg_scale": 1,
       "width": 64, "height": 64, "sampler_name": "Euler", "batch_size": 1}


def call(path, body=None, timeout=900):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "{}")


def pixels(b64: str) -> bytes:
    from PIL import Image
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB").tobytes()


def txt2img():
    t0 = time.perf_counter()
    status, out = call("/sdapi/v1/txt2img", GEN)
    assert status == 200, out
    return pixels(out["images"][0]), json.loads(out["info"])["infotexts"][0], time.perf_counter() - t0


def pick_models(models):
    """A and B: from the environment, else the first two checkpoints not made by an earlier run."""
    names = [m["name"] for m in models["checkpoints"] if not m["name"].startswith("mecha-e2e-")]
    return os.environ.get("MECHA_FORGE_A") or names[0], os.environ.get("MECHA_FORGE_B") or names[1]


def memory():
    pid = os.environ.get("MECHA_FORGE_PID")
    if not pid:
        return ""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return f"RSS {fields['VmRSS'].strip()}, peak {fields['VmHWM'].strip()}"


def test_merge_hot_load_generate_restore():
    status, models = call("/mecha/v1/models")
    if status == 404:
        pytest.fail("the Forge at MECHA_FORGE_URL does not have this extension's routes (was it started with --api?)")
    a, b = pick_models(models)
    report = []

    assert call("/mecha/v1/restore", {})[0] == 200           # no merge left over from an earlier run
    assert call("/sdapi/v1/options", {"sd_model_checkpoint": a})[0] == 200
    img_a, info_a, t = txt2img()
    report.append(f"txt2img A: {t:.1f} s; {memory()}")

    import lib_mecha
    recipe = lib_mecha.serialize(lib_mecha.weighted_sum(lib_mecha.model(a), lib_mecha.model(b), alpha=0.5))
    t0 = time.perf_counter()
    status, job = call("/mecha/v1/merge", {"recipe": recipe, "target": "hot-load", "wait": True})
    assert status == 200, job
    assert job["state"] == "done", job
    report.append(f"merge+hot-load: {time.perf_counter() - t0:.1f} s (job {job.get('seconds')} s); {memory()}")
    merged = job["hot_loaded"]
    status, st = call("/mecha/v1/status")
    assert st["model"]["is_merge"] is True

    img_m, info_m, t = txt2img()
    report.append(f"txt2img merge: {t:.1f} s; {memory()}")
    assert img_m != img_a
    assert f"Mecha recipe: {merged['recipe_id']}" in info_m
    assert f"Model: {merged['name']}" in info_m and f"Model hash: {merged['hash']}" in info_m
    again, _, _ = txt2img()
    assert again == img_m                                     # the next generation keeps the merge

    status, stored = call(f"/mecha/v1/recipes/{merged['recipe_id']}")
    assert status == 200 and stored["recipe"] == recipe

    status, preview = call("/mecha/v1/preview", GEN)
    assert status == 200, preview
    assert pixels(preview["images"][0]) == img_m               # our process_images path == the API's

    status, bad = call("/mecha/v1/merge", {"recipe": recipe.replace(a, "/etc/passwd"), "target": "hot-load"})
    assert status == 403, bad

    t0 = time.perf_counter()
    assert call("/mecha/v1/restore", {})[0] == 200
    report.append(f"restore: {time.perf_counter() - t0:.1f} s; {memory()}")
    img_r, info_r, _ = txt2img()
    assert img_r == img_a
    assert "Mecha recipe" not in info_r
    print("\n" + "\n".join(report))


def test_saved_merge_appears_and_matches_the_hot_loaded_one():
    a, b = pick_models(call("/mecha/v1/models")[1])
    import lib_mecha
    recipe = lib_mecha.serialize(lib_mecha.weighted_sum(lib_mecha.model(a), lib_mecha.model(b), alpha=0.25))
    name = f"mecha-e2e-{os.getpid()}-{int(time.time())}"
    status, job = call("/mecha/v1/merge", {"recipe": recipe, "target": "file", "name": name, "wait": True})
    assert status == 200 and job["state"] == "done", job
    path = job["result"]["path"]
    try:
        listed = [m["name"] for m in call("/mecha/v1/models")[1]["checkpoints"]]
        assert f"{name}.safetensors" in listed                 # the host's lists were refreshed
        status, again = call("/mecha/v1/merge", {"recipe": recipe, "target": "file", "name": name})
        assert status == 409, again                              # never overwritten unless asked

        assert call("/sdapi/v1/options", {"sd_model_checkpoint": a})[0] == 200
        status, job = call("/mecha/v1/merge", {"recipe": recipe, "target": "hot-load", "wait": True})
        assert job["state"] == "done", job
        img_hot, _, _ = txt2img()
        assert call("/mecha/v1/restore", {})[0] == 200
        assert call("/sdapi/v1/options", {"sd_model_checkpoint": f"{name}.safetensors"})[0] == 200
        img_file, info_file, _ = txt2img()
        assert f"Model: {name}" in info_file
        assert img_file == img_hot                               # in-memory merge == Forge loading the file
    finally:
        call("/sdapi/v1/options", {"sd_model_checkpoint": a})
        if os.path.exists(path):
            os.remove(path)
        call("/sdapi/v1/refresh-checkpoints", {})


def test_host_interrupt_stops_a_preview():
    import threading
    steps = 40
    done = {}
    worker = threading.Thread(target=lambda: done.update(answer=call("/mecha/v1/preview", dict(GEN, steps=steps))))
    worker.start()
    seen = []
    for _ in range(6000):                          # until our job is sampling (bounded polling, no timing)
        state = call("/sdapi/v1/progress?skip_current_image=true")[1]["state"]
        if state.get("job") == "mecha preview" and state.get("sampling_step", 0) >= 1:
            break
        if not worker.is_alive():
            pytest.fail(f"the preview ended before it could be interrupted: {done.get('answer')}")
        time.sleep(0.05)
    else:
        pytest.fail("the preview never showed up in the host's progress state")
    assert call("/sdapi/v1/interrupt", {})[0] == 200
    while worker.is_alive():
        seen.append(call("/sdapi/v1/progress?skip_current_image=true")[1]["state"].get("sampling_step", 0))
        worker.join(timeout=0.2)
    status, answer = done["answer"]
    assert status == 200, answer
    print(f"\npreview interrupted at step {max(seen, default=0)} of {steps}")
    assert max(seen, default=0) < steps - 1
