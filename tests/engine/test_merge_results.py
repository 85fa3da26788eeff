"""Merges give the formulas' results, on real files, whatever the threading and chunking."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import lib_mecha as mecha
from lib_mecha.engine import execute as execute_module
from lib_mecha.io import reader as reader_module
from lib_mecha.io.positional import PORTABLE_IO

from engine_fixtures import POSITION_IDS, float_keys

mapped_reads_only = pytest.mark.skipif(PORTABLE_IO, reason="about reads of mapped file pages, which the "
                                       "Windows paths (LIB_MECHA_PORTABLE_IO=1) never make")


def fp16(t):
    return t.to(torch.float16)


def test_weighted_sum_file_matches_lerp(sd1_dir, sd1_tensors, tmp_path):
    out = tmp_path / "ws.safetensors"
    result = mecha.merge(mecha.weighted_sum(mecha.model("a"), mecha.model("b"), alpha=0.3), out,
                         model_dirs=[sd1_dir])
    merged = load_file(str(out))
    a, b = sd1_tensors["a"], sd1_tensors["b"]
    assert set(merged) == set(a) and result.skipped == []
    for k in float_keys(a):
        expected = fp16(torch.lerp(a[k].float(), b[k].float(), 0.3))
        assert merged[k].dtype == torch.float16
        assert torch.equal(merged[k], expected), k


def test_integer_buffers_are_copied_not_cast(sd1_dir, sd1_tensors):
    result = mecha.merge(mecha.weighted_sum(mecha.model("a"), mecha.model("b"), alpha=0.5), model_dirs=[sd1_dir])
    ids = result.state_dict[POSITION_IDS]
    assert ids.dtype == torch.int64
    assert torch.equal(ids, sd1_tensors["a"][POSITION_IDS])


def test_add_difference_with_third_model(sd1_dir, sd1_tensors):
    a, b, c = (mecha.model(n) for n in "abc")
    result = mecha.merge(mecha.add_difference(a, b, c, alpha=0.7), model_dirs=[sd1_dir], output_dtype="fp32")
    t = sd1_tensors
    for k in float_keys(t["a"])[:50]:
        expected = t["a"][k].float() + 0.7 * (t["b"][k].float() - t["c"][k].float())
        assert torch.allclose(result.state_dict[k], expected, atol=1e-6), k


@pytest.mark.parametrize("threads,budget", [(0, 512), (2, 512), (2, 16), (1, 16)])
def test_threads_and_chunking_do_not_change_results(sd1_dir, threads, budget, monkeypatch):
    monkeypatch.setattr(execute_module, "MAX_CHUNK_ELEMENTS", 1000)  # force many slices per key
    recipe = mecha.n_average(*(mecha.model(n) for n in "abc"))
    reference = mecha.merge(recipe, model_dirs=[sd1_dir], threads=0, output_dtype="fp32").state_dict
    monkeypatch.undo()
    got = mecha.merge(recipe, model_dirs=[sd1_dir], threads=threads, memory_budget_mb=budget,
                      output_dtype="fp32").state_dict
    assert set(got) == set(reference)
    for k in reference:
        assert torch.equal(got[k], reference[k]), k


def test_chunked_and_whole_key_evaluation_agree_exactly(sd1_dir, monkeypatch):
    recipe = mecha.weighted_sum(mecha.model("a"), mecha.model("b"), alpha=0.25)
    whole = mecha.merge(recipe, model_dirs=[sd1_dir], threads=0).state_dict
    monkeypatch.setattr(execute_module, "MAX_CHUNK_ELEMENTS", 777)
    items = []
    original = execute_module.work_items

    def spy(*args, **kwargs):
        for item in original(*args, **kwargs):
            items.append(item)
            yield item
    monkeypatch.setattr(execute_module, "work_items", spy)
    chunked = mecha.merge(recipe, model_dirs=[sd1_dir], threads=2).state_dict
    assert any(i.start is not None for i in items), "no key was sliced"
    for k in whole:
        assert torch.equal(whole[k], chunked[k]), k


@pytest.mark.parametrize("dtype,expected", [("bf16", torch.bfloat16), ("fp32", torch.float32),
                                            ("keep", torch.float16)])
def test_output_dtype(sd1_dir, tmp_path, dtype, expected):
    out = tmp_path / f"{dtype}.safetensors"
    mecha.merge(mecha.weighted_sum(mecha.model("a"), mecha.model("b")), out, model_dirs=[sd1_dir],
                output_dtype=dtype)
    merged = load_file(str(out))
    k = "model.diffusion_model.out.2.weight"
    assert merged[k].dtype == expected
    assert merged[POSITION_IDS].dtype == torch.int64


def test_dict_output_on_chosen_device(sd1_dir):
    result = mecha.merge(mecha.weighted_sum(mecha.model("a"), mecha.model("b")), model_dirs=[sd1_dir],
                         output_device="meta")
    assert result.path is None
    assert all(t.device.type == "meta" for t in result.state_dict.values())


def test_each_input_tensor_read_once_per_key(sd1_dir, monkeypatch):
    from lib_mecha.io.reader import SafetensorsFile
    counts = {}
    original = SafetensorsFile.read

    def counting(self, key, out=None):
        counts[(self.path.name, key)] = counts.get((self.path.name, key), 0) + 1
        return original(self, key, out)
    monkeypatch.setattr(SafetensorsFile, "read", counting)
    a, b, c = (mecha.model(n) for n in "abc")
    # a appears five times in this recipe: TIES-style deltas against a, plus the base itself
    recipe = mecha.add_difference(a, mecha.n_average(b - a, c - a, b - a), alpha=1.0)
    mecha.merge(recipe, model_dirs=[sd1_dir], threads=0, memory_budget_mb=4096)
    assert counts, "nothing was read"
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:3]


def test_metadata_holds_recipe_and_webui_convention(sd1_dir, tmp_path):
    out = tmp_path / "meta.safetensors"
    result = mecha.merge(mecha.weighted_sum(mecha.model("a"), mecha.model("b"), alpha=0.5), out,
                         model_dirs=[sd1_dir])
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["mecha_recipe"] == result.recipe_text
    assert 'merge "weighted_sum"' in meta["mecha_recipe"]
    assert '"sd-webui-mecha"' in meta["sd_merge_recipe"]
    import json
    models = json.loads(meta["sd_merge_models"])
    assert sorted(m["name"] for m in models.values()) == ["a", "b"]
    assert all(len(h) == 64 for h in models)  # sha256 of each input


def test_progress_reports_every_key(sd1_dir):
    seen = []
    mecha.merge(mecha.weighted_sum(mecha.model("a"), mecha.model("b")), model_dirs=[sd1_dir],
                progress=lambda done, total, nbytes: seen.append((done, total, nbytes)))
    assert seen[-1][0] == seen[-1][1] == len(seen)
    assert [s[0] for s in seen] == list(range(1, len(seen) + 1))
    assert seen[-1][2] > 0


def test_fingerprint_changes_only_where_parameters_change(sd1_dir):
    a, b = mecha.model("a"), mecha.model("b")
    first = mecha.merge(mecha.weighted_sum(a, b, alpha=0.3), model_dirs=[sd1_dir]).fingerprints
    again = mecha.merge(mecha.weighted_sum(a, b, alpha=0.3), model_dirs=[sd1_dir]).fingerprints
    other = mecha.merge(mecha.weighted_sum(a, b, alpha=0.4), model_dirs=[sd1_dir]).fingerprints
    assert first == again
    k = "model.diffusion_model.out.2.weight"
    assert first[k] != other[k]
    assert first[POSITION_IDS] == other[POSITION_IDS]  # copied buffers do not depend on alpha


@mapped_reads_only
def test_inputs_mapped_or_read_give_the_same_merge(sd1_dir, monkeypatch):
    recipe = mecha.add_difference(mecha.model("a"), mecha.model("b"), mecha.model("c"), alpha=0.7)
    mapped_ranges = []
    real_map_range = reader_module.map_range

    def counting_map_range(*args):
        mapped_ranges.append(args[2:4])
        return real_map_range(*args)

    monkeypatch.setattr(reader_module, "map_range", counting_map_range)
    mapped = mecha.merge(recipe, model_dirs=[sd1_dir]).state_dict
    assert len(mapped_ranges) > 100  # the inputs were converted straight from their mapped pages
    monkeypatch.setattr(reader_module, "map_range", lambda *args: None)  # as where files cannot be mapped
    read = mecha.merge(recipe, model_dirs=[sd1_dir]).state_dict
    assert mapped.keys() == read.keys()
    for k in mapped:
        assert torch.equal(mapped[k], read[k]), k
