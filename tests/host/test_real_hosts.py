"""End to end against a real, already running Forge and/or A1111 (local only; CI has none).

Set ``MECHA_FORGE_URL`` (e.g. http://127.0.0.1:7861) and/or ``MECHA_A1111_URL`` (e.g.
http://127.0.0.1:7862) to a WebUI started with ``--api`` and this extension installed, with at
least two SD1.5 checkpoints (``MECHA_A``/``MECHA_B`` pick them; default: the first two listed).
``MECHA_FORGE_PID``/``MECHA_A1111_PID`` add the host's memory (and the cycles test, which needs
it); ``MECHA_REAL_CYCLES`` sets that test's hot-load/restore cycles (default 20).

Everything goes through our REST routes and the host's own ``/sdapi/v1/txt2img`` (64x64, 1 step,
CFG 1). Images are compared by pixels, not PNG bytes (the PNG carries the infotext). Times and
``peak_extra_mb`` are printed (run with ``-s``), never asserted: speed is measured in bench/.
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

HOSTS = {"forge": os.environ.get("MECHA_FORGE_URL", "").rstrip("/"),
         "a1111": os.environ.get("MECHA_A1111_URL", "").rstrip("/")}
pytestmark = [pytest.mark.real_host,
              pytest.mark.skipif(not any(HOSTS.values()),
                                 reason="MECHA_FORGE_URL / MECHA_A1111_URL not set: no running WebUI to test against")]

GEN = {"prompt": "a photo of a cat", "negative_prompt": "", "seed": 1234, "steps": 1, "cfg_scale": 1,
       "width": 64, "height": 64, "sampler_name": "Euler", "batch_size": 1}


class WebUI:
    def __init__(self, name: str, url: str):
        self.name, self.url = name, url
        self.pid = os.environ.get(f"MECHA_{name.upper()}_PID")
        self.report = []

    def call(self, path, body=None, timeout=1800):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"},
                                     method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode() or "{}")

    def ok(self, path, body=None):
        status, out = self.call(path, body)
        assert status == 200, out
        return out

    def txt2img(self):
        from PIL import Image
        out = self.ok("/sdapi/v1/txt2img", GEN)
        img = Image.open(io.BytesIO(base64.b64decode(out["images"][0]))).convert("RGB")
        return img.tobytes(), json.loads(out["info"])["infotexts"][0]

    def select(self, name):
        self.ok("/sdapi/v1/options", {"sd_model_checkpoint": name})

    def merge(self, recipe, **body):
        t0 = time.perf_counter()
        job = self.ok("/mecha/v1/merge", {"recipe": recipe, "target": "hot-load", "wait": True, **body})
        assert job["state"] == "done", job
        job["wall"] = time.perf_counter() - t0
        return job

    def rss_mb(self):
        if not self.pid:
            return None
        with open(f"/proc/{self.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024

    def note(self, text):
        rss = self.rss_mb()
        self.report.append(f"[{self.name}] {text}" + (f"; host RSS {rss:.0f} MB" if rss is not None else ""))

    def print_report(self):
        print("\n" + "\n".join(self.report))


@pytest.fixture(params=[n for n, u in HOSTS.items() if u] or ["none"])
def webui(request):
    host = WebUI(request.param, HOSTS.get(request.param, ""))
    status, _ = host.call("/mecha/v1/models")
    if status == 404:
        pytest.fail(f"the {host.name} at {host.url} lacks this extension's routes (was it started with --api?)")
    assert host.call("/mecha/v1/restore", {})[0] == 200           # nothing left over from an earlier run
    yield host
    host.print_report()


def models(webui):
    names = [m["name"] for m in webui.ok("/mecha/v1/models")["checkpoints"] if not m["name"].startswith("mecha-e2e-")]
    return os.environ.get("MECHA_A") or names[0], os.environ.get("MECHA_B") or names[1]


def ws(a, b, alpha=0.37, in04=None):
    import lib_mecha
    value = alpha if in04 is None else lib_mecha.blocks("sd1-supermerger_blocks", {"IN04": in04}, default=alpha)
    return lib_mecha.serialize(lib_mecha.weighted_sum(lib_mecha.model(a), lib_mecha.model(b), alpha=value))


def summary(job):
    return (f"keys {job['keys_merged']} of {job['keys_total']} in {job['seconds']} s (wall {job['wall']:.1f} s), "
            f"peak_extra_mb {job['peak_extra_mb']}")


def test_streamed_hot_load_is_the_saved_merge_and_restore_the_original(webui):
    """Points 1, 3, 5, 6: streamed == saved and loaded by the host; restore == original."""
    a, b = models(webui)
    webui.select(a)
    original, _ = webui.txt2img()
    webui.note("A selected and generated")
    recipe = ws(a, b)
    job = webui.merge(recipe)
    webui.note(f"full hot-load: {summary(job)}")
    assert job["keys_merged"] == job["keys_total"] > 1000
    assert job["peak_extra_mb"] is not None and job["peak_extra_mb"] <= 512 + 2 * 75   # + largest key (fp32)
    status = webui.ok("/mecha/v1/status")
    assert status["model"]["is_merge"] is True and status["job"]["keys_total"] == job["keys_total"]
    streamed, info = webui.txt2img()
    assert streamed != original and webui.txt2img()[0] == streamed
    assert f"Mecha recipe: {job['recipe_id']}" in info and f"Model hash: {job['hot_loaded']['hash']}" in info
    preview = webui.ok("/mecha/v1/preview", GEN)
    from PIL import Image
    assert Image.open(io.BytesIO(base64.b64decode(preview["images"][0]))).convert("RGB").tobytes() == streamed

    t0 = time.perf_counter()
    restored = webui.ok("/mecha/v1/restore", {})
    webui.note(f"restore: {restored['keys_restored']} keys in {restored['seconds']} s "
               f"(wall {time.perf_counter() - t0:.1f} s), peak_extra_mb {restored['peak_extra_mb']}")
    assert restored["peak_extra_mb"] is None or restored["peak_extra_mb"] <= 512 + 2 * 75
    back, info = webui.txt2img()
    assert back == original and "Mecha recipe" not in info

    name = f"mecha-e2e-{os.getpid()}-{int(time.time())}"
    saved = webui.ok("/mecha/v1/merge", {"recipe": recipe, "target": "file", "name": name, "wait": True})
    path = saved["result"]["path"]
    try:
        webui.select(f"{name}.safetensors")
        from_file, info = webui.txt2img()
        assert f"Model: {name}" in info
        assert from_file == streamed                      # the preview is what the saved file generates
        webui.note("saved merge loaded by the host == streamed merge")
    finally:
        webui.select(a)
        if os.path.exists(path):
            os.remove(path)
        webui.call("/sdapi/v1/refresh-checkpoints", {})


def test_a_re_merge_after_one_block_slider_is_a_full_merge_of_the_changed_recipe(webui):
    """Point 4: only the block's keys are recomputed, and the model is the full merge's."""
    a, b = models(webui)
    webui.select(a)
    webui.txt2img()
    full = webui.merge(ws(a, b, 0.4, in04=0.4))
    webui.note(f"full hot-load (blocks): {summary(full)}")
    moved = webui.merge(ws(a, b, 0.4, in04=0.9))
    webui.note(f"one block slider moved: {summary(moved)}; {moved['seconds'] / full['seconds']:.0%} of the full one")
    assert 0 < moved["keys_merged"] < full["keys_total"] // 10
    same = webui.merge(ws(a, b, 0.4, in04=0.9))
    webui.note(f"unchanged recipe: {summary(same)}")
    assert same["keys_merged"] == 0
    incremental, _ = webui.txt2img()
    webui.ok("/mecha/v1/restore", {})
    fresh = webui.merge(ws(a, b, 0.4, in04=0.9))
    assert fresh["keys_merged"] == fresh["keys_total"]
    assert webui.txt2img()[0] == incremental
    webui.ok("/mecha/v1/restore", {})


@pytest.mark.parametrize("stop_after", [50, 700])
def test_a_cancelled_hot_load_leaves_the_model_as_it_was(webui, stop_after):
    """Point 2: cancelled part-way, every written key is put back (over the original and over a merge)."""
    import threading
    a, b = models(webui)
    webui.select(a)
    original, _ = webui.txt2img()
    for before, recipe in ((original, ws(a, b, 0.6)), (None, ws(a, b, 0.2))):
        if before is None:                                 # second round: over a loaded merge
            webui.merge(ws(a, b, 0.8))
            before, _ = webui.txt2img()
        answer = {}

        def post(text=recipe, into=answer):
            into["r"] = webui.call("/mecha/v1/merge", {"recipe": text, "wait": True})
        worker = threading.Thread(target=post)
        worker.start()
        while worker.is_alive():
            job = webui.ok("/mecha/v1/status")["job"]
            if job.get("state") == "running" and job.get("done", 0) >= stop_after:
                webui.ok("/mecha/v1/cancel", {})
                break
            time.sleep(0.05)
        worker.join()
        status, out = answer["r"]
        assert status != 200 and "put back" in out["error"], out
        webui.note(f"cancelled after {stop_after} keys: {out['error']}")
        assert webui.txt2img()[0] == before
    webui.ok("/mecha/v1/restore", {})
    assert webui.txt2img()[0] == original


def test_a_pending_selection_is_loaded_before_the_merge_goes_in(webui):
    """Point 7: a checkpoint picked but not loaded yet (Forge loads lazily) gets the merge, and
    nothing claims a merge the next generation would drop."""
    a, b = models(webui)
    webui.select(a)
    webui.txt2img()
    webui.select(b)                                        # Forge: pending until the next generation
    status = webui.ok("/mecha/v1/status")
    webui.note(f"B selected, not generated: pending_selection = {status['model']['pending_selection']}")
    job = webui.merge(ws(a, b, 0.37))
    webui.note(f"hot-load with B selected: loaded_first = {job['result']['loaded_first']}; {summary(job)}")
    if webui.name == "forge":
        assert job["result"]["loaded_first"] == b
    merged, info = webui.txt2img()                         # the merge survives the next generation
    assert f"Mecha recipe: {job['recipe_id']}" in info
    assert webui.ok("/mecha/v1/status")["model"]["is_merge"] is True
    webui.ok("/mecha/v1/restore", {})
    b_pixels, _ = webui.txt2img()
    assert b_pixels != merged
    webui.select(a)
    webui.txt2img()
    job = webui.merge(ws(a, b, 0.37))
    assert webui.txt2img()[0] == merged                    # the same merge, whichever model it went into
    webui.ok("/mecha/v1/restore", {})


def test_hot_load_restore_cycles_leave_the_hosts_memory_where_one_left_it(webui):
    """Point 6: twenty cycles stay within 200 MB of the level after the first."""
    if not webui.pid:
        pytest.skip(f"MECHA_{webui.name.upper()}_PID is not set: the host's memory cannot be read")
    a, b = models(webui)
    webui.select(a)
    webui.txt2img()
    cycles = int(os.environ.get("MECHA_REAL_CYCLES", "20"))
    levels = []
    for i in range(cycles):
        job = webui.merge(ws(a, b, 0.3 + 0.02 * (i % 2)))
        webui.ok("/mecha/v1/restore", {})
        levels.append(webui.rss_mb())
        if i in (0, cycles - 1):
            webui.note(f"cycle {i + 1}: {summary(job)}")
    webui.note("RSS after each cycle (MB): " + ", ".join(f"{x:.0f}" for x in levels))
    assert levels[-1] - levels[0] <= 200


def xyz_alpha_args(webui, values):
    """The X/Y/Z plot's arguments as ``/sdapi/v1/script-info`` lists them, with "Mecha: alpha
    (step 1)" as the X axis (by its label) and the cells' own images in the answer."""
    info = next(s for s in webui.ok("/sdapi/v1/script-info") if s["name"] == "x/y/z plot" and not s["is_img2img"])
    labels = [a["label"] for a in info["args"]]
    args = [a["value"] for a in info["args"]]
    choices = [c[0] if isinstance(c, (list, tuple)) else c for c in info["args"][labels.index("X type")]["choices"]]
    args[labels.index("X type")] = choices.index("Mecha: alpha (step 1)")
    args[labels.index("X values")] = values
    args[labels.index("Y type")] = args[labels.index("Z type")] = 0              # "Nothing"
    args[labels.index("Include Sub Images")] = True
    return args


def test_an_xyz_alpha_grid_through_the_api_is_its_cells_merged_one_by_one(webui):
    """Issue 18, point 5: a 3-cell grid over the loaded merge's alpha, through the host's own
    txt2img and X/Y/Z plot; each cell is the same merge hot-loaded alone, each cell's infotext
    names a recipe that resolves to it, and the merge loaded before the grid is back after it."""
    from PIL import Image
    a, b = models(webui)
    webui.select(a)
    webui.txt2img()
    webui.merge(ws(a, b, 0.5))
    before, _ = webui.txt2img()
    t0 = time.perf_counter()
    out = webui.ok("/sdapi/v1/txt2img", {**GEN, "script_name": "x/y/z plot",
                                          "script_args": xyz_alpha_args(webui, "0.2, 0.4, 0.6")})
    grid_wall = time.perf_counter() - t0
    cells = [Image.open(io.BytesIO(base64.b64decode(i))).convert("RGB").tobytes() for i in out["images"][1:]]
    infotexts = json.loads(out["info"])["infotexts"][1:]
    report = webui.ok("/mecha/v1/status")["grid"]
    webui.note(f"3-cell alpha grid in {grid_wall:.1f} s: " + "; ".join(
        f"{c['keys_merged']} keys in {c['seconds']} s" for c in report["cells"]))
    assert len(cells) == 3 and len(set(cells)) == 3
    assert webui.txt2img()[0] == before                      # the merge of before the grid is back
    for alpha, cell, infotext, cell_report in zip((0.2, 0.4, 0.6), cells, infotexts, report["cells"]):
        assert f"Mecha recipe: {cell_report['recipe_id']}" in infotext
        webui.merge(ws(a, b, alpha))
        alone, _ = webui.txt2img()
        assert alone == cell, f"the cell of alpha {alpha} differs from the same merge hot-loaded alone"
        webui.merge(webui.ok(f"/mecha/v1/recipes/{cell_report['recipe_id']}")["recipe"])
        assert webui.txt2img()[0] == cell, f"the recipe in the infotext of alpha {alpha}'s cell is not that cell's"
    webui.note("grid cells == the same merges hot-loaded one by one; the merge of before the grid back after it")
    webui.ok("/mecha/v1/restore", {})
