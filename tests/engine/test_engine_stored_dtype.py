"""Methods declared with ``stored_dtype=True`` (top_k_tensor_sum) get the inputs read straight from
a file in their stored float16/bfloat16, computed inputs in the compute dtype; the next method
gets their result in the compute dtype, and the merge's results are bitwise those of float32
inputs."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

import lib_mecha as mecha
import lib_mecha.methods as methods
from lib_mecha.methods.spec import SAME, Tensor
from lib_mecha.io.positional import PORTABLE_IO

mapped_reads_only = pytest.mark.skipif(PORTABLE_IO, reason="about reads of mapped file pages, which the "
                                       "Windows paths (LIB_MECHA_PORTABLE_IO=1) never make")

# more elements than top_k's smallest tensor for 16-bit keys (SMALL), so its fast path runs
SHAPES = {"big.weight": (640, 320), "small.weight": (7, 5)}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stored_dtype")
    for i in range(3):
        g = torch.Generator().manual_seed(20 + i)
        sd = {key: (torch.randn(shape, generator=g) * 0.02).to(torch.float16) for key, shape in SHAPES.items()}
        sd["bf.weight"] = (torch.randn(400, 400, generator=g) * 0.02).to(torch.bfloat16)
        save_file(sd, str(folder / f"m{i}.safetensors"))
    return folder


@pytest.fixture
def inputs(models_dir):
    return [load_file(str(models_dir / f"m{i}.safetensors")) for i in range(3)]


@pytest.fixture
def received():
    """A stored-dtype custom method that records the dtypes it is given and returns its first
    argument's values (in that argument's dtype), and a plain one that records what it gets."""
    seen = {"stored": [], "plain": []}

    @mecha.merge_method(returns=SAME, stored_dtype=True, category="custom")
    def recording_first(a=Tensor(SAME), b=Tensor(SAME)):
        seen["stored"].append((a.dtype, b.dtype))
        return a.clone()

    @mecha.merge_method(returns=SAME, category="custom")
    def recording_plain(a=Tensor(SAME)):
        seen["plain"].append(a.dtype)
        return a.clone()

    yield seen
    methods.unregister("recording_first")
    methods.unregister("recording_plain")


def _merge(recipe, models_dir, **kwargs):
    kwargs.setdefault("output_dtype", "fp32")
    return mecha.merge(recipe, model_dirs=[models_dir], **kwargs).state_dict


@mapped_reads_only
@pytest.mark.parametrize("threads", [0, 2])
def test_file_inputs_come_as_stored_and_computed_ones_in_the_compute_dtype(models_dir, inputs, received, threads):
    a, b, c = (mecha.model(f"m{i}") for i in range(3))
    out = _merge(methods.build("recording_first", a, mecha.weighted_sum(b, c, alpha=0.5)), models_dir,
                 threads=threads)
    assert (torch.float16, torch.float32) in received["stored"]
    assert (torch.bfloat16, torch.float32) in received["stored"]
    for key in (*SHAPES, "bf.weight"):
        assert out[key].dtype == torch.float32 and torch.equal(out[key], inputs[0][key].float()), key


@mapped_reads_only
def test_the_next_method_gets_the_result_in_the_compute_dtype(models_dir, inputs, received):
    a, b = mecha.model("m0"), mecha.model("m1")
    out = _merge(methods.build("recording_plain", methods.build("recording_first", a, b)), models_dir, threads=0)
    assert received["stored"] and all(dtypes[0] in (torch.float16, torch.bfloat16) for dtypes in received["stored"])
    assert received["plain"] and set(received["plain"]) == {torch.float32}
    assert torch.equal(out["big.weight"], inputs[0]["big.weight"].float())


def test_a_model_used_twice_comes_in_the_compute_dtype(models_dir, received):
    a = mecha.model("m0")
    _merge(methods.build("recording_first", a, a), models_dir, threads=0)
    assert set(received["stored"]) == {(torch.float32, torch.float32)}


@pytest.mark.parametrize("threads", [0, 2])
@pytest.mark.parametrize("width, offset", [(0.5, 0.0), (0.3, 0.8), (1.0, 0.0)])
def test_top_k_tensor_sum_of_stored_inputs_is_that_of_float32_ones_bitwise(models_dir, inputs, threads, width,
                                                                          offset):
    a, b = mecha.model("m0"), mecha.model("m1")
    out = _merge(mecha.top_k_tensor_sum(a, b, width=width, offset=offset), models_dir, threads=threads)
    top_k = methods.resolve("top_k_tensor_sum").func
    for key in (*SHAPES, "bf.weight"):
        expected = top_k(inputs[0][key].float(), inputs[1][key].float(), width=width, offset=offset)
        assert out[key].dtype == torch.float32 and torch.equal(out[key], expected), key


def test_an_elementwise_stored_dtype_step_split_over_granted_threads_is_widened_too(tmp_path, monkeypatch):
    """A whole key granted the idle threads splits an elementwise step into ranges (_split_call):
    that result, in the stored dtype, must reach the next method in the compute dtype as well."""
    from lib_mecha.engine import execute as execute_module
    monkeypatch.setattr(execute_module, "MAX_CHUNK_ELEMENTS", 1 << 14)
    g = torch.Generator().manual_seed(30)
    weights = [torch.randn(1024, 1024, generator=g).to(torch.float16) for _ in range(2)]
    for i, w in enumerate(weights):  # a key whose estimate is over the smallest budget: granted threads
        save_file({"big.weight": w}, str(tmp_path / f"m{i}.safetensors"))
    seen = []

    @mecha.merge_method(returns=SAME, stored_dtype=True, elementwise=True, category="custom")
    def elementwise_first(a=Tensor(SAME), b=Tensor(SAME)):
        return a.clone()

    @mecha.merge_method(returns=SAME, category="custom")
    def whole_plain(a=Tensor(SAME)):  # a whole-tensor step: the key is evaluated whole
        seen.append(a.dtype)
        return a.clone()

    try:
        a, b = mecha.model("m0"), mecha.model("m1")
        recipe = methods.build("whole_plain", methods.build("elementwise_first", a, b))
        out = _merge(recipe, tmp_path, threads=2, memory_budget_mb=16)
    finally:
        methods.unregister("elementwise_first")
        methods.unregister("whole_plain")
    assert seen == [torch.float32]
    assert torch.equal(out["big.weight"], weights[0].float())
