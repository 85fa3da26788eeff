"""The parts of live merging: routes through a host's own key conversion, slices of big keys,
seeds, fingerprints and the peak-memory probe."""
from __future__ import annotations

import sys
import types

import pytest
import torch
from safetensors.torch import save_file

import lib_mecha
from lib_mecha.live import LiveState, LiveTarget, Original, PeakMemory, pin_seeds, stream_merge
from lib_mecha.live import memory
from lib_mecha.live.module import ModuleModel

from live_fixtures import Tree, ident

BIG = 3 * 1024 * 1024 + 5        # elements: merged in slices (engine MAX_CHUNK_ELEMENTS is 1 M)


class FusedModel:
    """A host whose model keeps ``qkv.weight`` as three tensors and ``proj`` transposed, the way
    Forge's ``process_clip_state_dict`` splits OpenCLIP's fused attention (huggingface_guess)."""

    def __init__(self, module, label="fused"):
        self.module, self.label = module, label
        self.before, self.after = [], 0

    def tensors(self):
        return dict(self.module.state_dict(keep_vars=True))

    def convert(self, key, value):
        if key == "qkv.weight":
            third = value.shape[0] // 3
            return {f"{n}.weight": value[i * third:(i + 1) * third] for i, n in enumerate("qkv")}
        if key == "proj":
            return {"proj_t": value.transpose(0, 1).contiguous()}
        return {key: value}

    def required(self, name, tensor):
        return True

    def before_write(self, names):
        self.before.append(sorted(names))

    def after_write(self):
        self.after += 1


def fused_files(folder):
    g = torch.Generator().manual_seed(0)
    for name in "ab":
        save_file({"qkv.weight": torch.randn(3 * 1024, 1024 + 1, generator=g).half(),   # > 1 M: sliced
                   "proj": torch.randn(6, 4, generator=g).half(),
                   "big": torch.randn(BIG, generator=g).half()}, str(folder / f"{name}.safetensors"))


def fused_module(dtype=torch.float32):
    return Tree({"q.weight": torch.zeros(1024, 1025), "k.weight": torch.zeros(1024, 1025),
                 "v.weight": torch.zeros(1024, 1025), "proj_t": torch.zeros(4, 6), "big": torch.zeros(BIG)}, dtype)


def test_keys_the_host_splits_or_transposes_and_slices_of_big_keys_land_right(tmp_path):
    fused_files(tmp_path)
    module = fused_module()
    model = FusedModel(module)
    state = LiveState()
    state.attach(module, Original.of(tmp_path / "a.safetensors", "a"))
    recipe = lib_mecha.weighted_sum(lib_mecha.model("a"), lib_mecha.model("b"), alpha=0.3)
    options = lib_mecha.MergeOptions(model_dirs=(str(tmp_path),), threads=2)
    report = stream_merge(LiveTarget(model), state, recipe, options, ident())
    ref = lib_mecha.merge(recipe, options=options).state_dict
    q, k, v = ref["qkv.weight"].float().chunk(3)
    assert torch.equal(module.q.weight, q) and torch.equal(module.k.weight, k) and torch.equal(module.v.weight, v)
    assert torch.equal(module.proj_t, ref["proj"].float().t())
    assert torch.equal(module.big, ref["big"].float())
    assert report.keys_merged == 3 and model.after == 1
    assert model.before == [["big", "k.weight", "proj_t", "q.weight", "v.weight"]]


def test_routes_name_the_host_tensor_of_a_misfit(tmp_path):
    module = fused_module()
    module.k.weight = torch.nn.Parameter(torch.zeros(1000, 1025), requires_grad=False)
    target = LiveTarget(FusedModel(module))
    entries = {"qkv.weight": ((3 * 1024, 1025), torch.float16), "proj": ((6, 4), torch.float16),
               "big": ((BIG,), torch.float16)}
    with pytest.raises(lib_mecha.MechaError, match=r"key 'qkv.weight' \(k.weight in the WebUI\) has shape"):
        target.routes(entries, "m")


def test_a_plain_modules_wrapped_names_are_seen_through():
    inner = Tree({"weight": torch.ones(2)})
    outer = torch.nn.Module()
    outer.add_module("emb", torch.nn.Module())
    outer.emb.add_module("wrapped", inner)
    model = ModuleModel(outer, "m")
    assert model.tensors()["emb.weight"] is inner.weight
    assert model.required("emb.weight", inner.weight)


# --- seeds ---------------------------------------------------------------------------------------

def test_fresh_seeds_get_a_concrete_seed_kept_by_position(tmp_path):
    a, b, c = (lib_mecha.model(n, merge_space="delta") for n in "abc")
    book = {}

    def recipe(probability):
        return lib_mecha.dropout(a, b, c, probability=probability)
    first = pin_seeds(recipe(0.5), book)
    seed = dict(first.kwargs)["seed"].value
    assert isinstance(seed, int) and len(book) == 1
    moved = pin_seeds(recipe(0.7), book)               # the step's slider moved: same draws
    assert dict(moved.kwargs)["seed"].value == seed
    again = lib_mecha.deserialize(lib_mecha.serialize(moved))   # the recipe text records the seed
    assert dict(again.kwargs)["seed"].value == seed
    fixed = lib_mecha.dropout(a, b, c, seed=7)
    assert pin_seeds(fixed, book) is fixed             # explicit seeds and other methods stay as given
    dare = lib_mecha.ties_sum_with_dropout(a, b)
    assert pin_seeds(dare, {}) is dare                  # DARE's null seed is a fixed stream already


# --- fingerprints ----------------------------------------------------------------------------------

def test_fingerprints_follow_the_library_and_method_versions_and_the_device(tmp_path, monkeypatch):
    from lib_mecha.methods import Float, SAME, Tensor, merge_method, unregister
    save_file({"w": torch.ones(4, dtype=torch.float16)}, str(tmp_path / "a.safetensors"))
    save_file({"w": torch.zeros(4, dtype=torch.float16)}, str(tmp_path / "b.safetensors"))

    def declare(version):
        @merge_method(name="live_test_lerp", replace=True, version=version, elementwise=True)
        def live_test_lerp(a=Tensor(SAME), b=Tensor(SAME), alpha=Float(0.5)):
            return torch.lerp(a, b, alpha)
        return live_test_lerp
    try:
        recipe = declare(1)(lib_mecha.model("a"), lib_mecha.model("b"), alpha=0.5)

        def fingerprint(**changes):
            with lib_mecha.plan(recipe, model_dirs=[str(tmp_path)], **changes) as p:
                return p.keys[0].fingerprint
        base = fingerprint()
        assert fingerprint() == base
        assert fingerprint(device="meta") != base
        declare(2)                                      # the method's results changed: a new version
        assert fingerprint() != base
        declare(1)
        assert fingerprint() == base
        monkeypatch.setattr(lib_mecha, "__version__", "99.0")
        assert fingerprint() != base
    finally:
        unregister("live_test_lerp")


# --- peak memory -----------------------------------------------------------------------------------

def test_peak_memory_counts_what_the_job_allocates():
    with PeakMemory() as peak:
        block = torch.ones(64 << 20, dtype=torch.uint8)   # 64 MiB, touched
        peak._sample()
        del block
    if sys.platform.startswith("linux"):
        assert peak.probe is memory._proc_status_rss
        assert 48 <= peak.extra_mb <= 200


def test_peak_memory_falls_back_to_psutil_then_ru_maxrss(monkeypatch):
    monkeypatch.setattr(memory, "_proc_status_rss", lambda: None)
    levels = [100 << 20]
    fake = types.SimpleNamespace(Process=lambda: types.SimpleNamespace(
        memory_info=lambda: types.SimpleNamespace(rss=levels[0])))
    monkeypatch.setitem(sys.modules, "psutil", fake)
    probe = memory.choose_probe()
    assert probe is memory._psutil_rss
    with PeakMemory(probe, interval=10) as peak:
        levels[0] = 150 << 20
        peak._sample()
        levels[0] = 120 << 20
    assert peak.extra_mb == 50.0
    monkeypatch.setitem(sys.modules, "psutil", None)     # not installed
    assert memory.choose_probe() in (memory._max_rss, None)
    monkeypatch.setitem(sys.modules, "resource", None)   # Windows: no resource module either
    assert memory.choose_probe() is None
    with PeakMemory(None) as peak:
        pass
    assert peak.extra_mb is None
