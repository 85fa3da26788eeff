"""Accumulating methods (``accumulates=True``: n_average, add_difference) get their first argument
as a buffer of their own and the others straight from the file in float16; results stay bitwise
those of the plain contract, and no value another step still needs is ever written into."""
from __future__ import annotations


import pytest
import torch
from safetensors.torch import save_file

import lib_mecha as mecha
import lib_mecha.methods as methods
from lib_mecha.engine import execute as execute_module
from lib_mecha.methods.spec import SAME, Tensor
from lib_mecha.io.positional import PORTABLE_IO

mapped_reads_only = pytest.mark.skipif(PORTABLE_IO, reason="about reads of mapped file pages, which the "
                                       "Windows paths (LIB_MECHA_PORTABLE_IO=1) never make")

BIG = (1024, 640)  # 655360 elements: ten slices of 65536 below; whole, more than a 16 MiB budget


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("accumulates")
    for i in range(3):
        g = torch.Generator().manual_seed(10 + i)
        sd = {"big.weight": torch.randn(BIG, generator=g).to(torch.float16),
              "small.weight": torch.randn(7, 5, generator=g).to(torch.float16),
              "bf.weight": torch.randn(300, generator=g).to(torch.bfloat16),
              "steps": torch.tensor([i, 2 * i], dtype=torch.int64)}
        save_file(sd, str(folder / f"m{i}.safetensors"))
    return folder


@pytest.fixture
def small_slices(monkeypatch):
    monkeypatch.setattr(execute_module, "MAX_CHUNK_ELEMENTS", 1 << 16)


@pytest.fixture
def inputs(models_dir):
    from safetensors.torch import load_file
    return [load_file(str(models_dir / f"m{i}.safetensors")) for i in range(3)]


@pytest.fixture
def received():
    """An accumulating custom method that records the dtypes of what it is given, and sums."""
    seen = []

    @mecha.merge_method(returns=SAME, varargs=Tensor(SAME), elementwise=True, accumulates=True,
                        category="custom")
    def recording_sum(*models):
        seen.append(tuple(m.dtype for m in models))
        total = models[0]
        for m in models[1:]:
            total.add_(m)
        return total

    yield seen
    methods.unregister("recording_sum")


def _merge(recipe, models_dir, **kwargs):
    kwargs.setdefault("output_dtype", "fp32")
    return mecha.merge(recipe, model_dirs=[models_dir], **kwargs).state_dict


def _mean(*tensors):
    total = tensors[0].float().clone()
    for t in tensors[1:]:
        total.add_(t.float())
    return total.div_(len(tensors))


@mapped_reads_only
@pytest.mark.parametrize("threads", [0, 2])
def test_n_average_reads_float16_as_stored_and_gives_the_plain_mean_bitwise(models_dir, inputs, small_slices,
                                                                             received, threads):
    a, b, c = (mecha.model(f"m{i}") for i in range(3))
    out = _merge(mecha.n_average(a, b, c), models_dir, threads=threads)
    for key in ("big.weight", "small.weight", "bf.weight"):
        assert torch.equal(out[key], _mean(*(sd[key] for sd in inputs))), key
    assert torch.equal(out["steps"], inputs[0]["steps"])  # integers are copied, not averaged

    _merge(methods.build("recording_sum", a, b, c), models_dir, threads=threads)
    # the first argument is converted into a buffer of its own, the others come as stored
    assert (torch.float32, torch.float16, torch.float16) in received
    assert (torch.float32, torch.bfloat16, torch.bfloat16) in received
    assert all(dtypes[0] == torch.float32 for dtypes in received)


def test_a_narrower_compute_dtype_gets_converted_arguments(models_dir, received):
    a, b = mecha.model("m0"), mecha.model("m1")
    _merge(methods.build("recording_sum", a, b), models_dir, compute_dtype="fp16", threads=0)
    # float16 compute: float16 inputs come as they are, bfloat16 ones are converted first
    assert (torch.float16, torch.float16) in received
    assert all(dtypes[1] == torch.float16 for dtypes in received)


@pytest.mark.parametrize("threads", [0, 2])
def test_shared_values_are_never_written_into(models_dir, inputs, small_slices, threads):
    a, b, c = (mecha.model(f"m{i}") for i in range(3))
    recipes = {
        # one model twice in the same call, and a model that another step uses as well
        "twice": (mecha.n_average(a, a, b), lambda x, y, z: _mean(x, x, y)),
        "shared": (mecha.weighted_sum(mecha.n_average(a, b), a, alpha=0.5),
                   lambda x, y, z: torch.lerp(_mean(x, y), x.float(), 0.5)),
        # the first argument is another step's result, and the same model also comes later
        "computed": (mecha.n_average(mecha.weighted_sum(a, b, alpha=0.25), c, a),
                     lambda x, y, z: _mean(torch.lerp(x.float(), y.float(), 0.25), z, x)),
        "add_difference": (mecha.add_difference(a, b - c, alpha=0.5),
                           lambda x, y, z: torch.add(x.float(), y.float() - z.float(), alpha=0.5)),
        "add_difference_shared": (mecha.n_average(mecha.add_difference(a, b - a, alpha=0.5), a),
                                  lambda x, y, z: _mean(torch.add(x.float(), y.float() - x.float(), alpha=0.5),
                                                        x)),
    }
    for name, (recipe, expected) in recipes.items():
        out = _merge(recipe, models_dir, threads=threads)
        for key in ("big.weight", "small.weight", "bf.weight"):
            want = expected(*(sd[key] for sd in inputs))
            assert torch.allclose(out[key], want, rtol=0, atol=1e-6), (name, key)


@pytest.fixture
def fresh_sum():
    @mecha.merge_method(returns=SAME, elementwise=True, accumulates=True, category="custom")
    def fresh_sum(a=Tensor(SAME), b=Tensor(SAME)):
        return torch.add(a, b)

    yield
    methods.unregister("fresh_sum")


def test_a_whole_key_running_alone_accumulates_range_by_range(models_dir, small_slices, loop_threads, fresh_sum):
    """slerp needs the whole tensor, so the average runs on the whole key; with a small budget the
    key runs alone and the average is computed range by range on the granted thread."""
    a, b, c = (mecha.model(f"m{i}") for i in range(3))
    recipe = mecha.n_average(mecha.slerp(a, b, alpha=0.3), c, a)
    # an accumulating method may also return a fresh tensor instead of its first argument
    recipe = mecha.weighted_sum(recipe, methods.build("fresh_sum", mecha.slerp(b, c, alpha=0.6), a), alpha=0.5)
    sequential = _merge(recipe, models_dir, threads=0)
    alone = _merge(recipe, models_dir, threads=2, memory_budget_mb=16)
    assert any(n.startswith("mecha-help") for n in loop_threads), loop_threads
    for key in sequential:
        assert torch.equal(alone[key], sequential[key]), key


def test_accumulates_needs_an_elementwise_method_with_a_tensor_first():
    with pytest.raises(TypeError, match="accumulates=True"):
        @mecha.merge_method(returns=SAME, accumulates=True, register_it=False)
        def whole(a=Tensor(SAME)):
            return a


def test_apply_leaves_the_callers_tensors_alone():
    a, b = torch.ones(4), torch.full((4,), 3.0)
    assert torch.equal(methods.resolve("n_average").apply(a, b), torch.full((4,), 2.0))
    assert torch.equal(a, torch.ones(4))


@pytest.mark.parametrize("threads, budget", [(0, 512), (2, 16)])
def test_a_value_that_aliases_a_live_input_is_copied_before_it_is_written(models_dir, inputs, small_slices,
                                                                          threads, budget):
    """crossover with alpha 0 hands back A's own buffer; A is still needed by the subtraction, so
    the accumulating add_difference must not add into it (and it may add into A's buffer in
    add_difference(a, ...) once that is A's last use)."""
    a, b, c = (mecha.model(f"m{i}") for i in range(3))
    recipes = {
        "alias": (mecha.add_difference(methods.build("crossover", a, b, alpha=0.0), a - c, alpha=1.0),
                  lambda x, y, z: x.float() + (x.float() - z.float())),
        "last_use": (mecha.add_difference(a, methods.build("crossover", b, c, alpha=0.0) - a, alpha=0.5),
                     lambda x, y, z: torch.add(x.float(), y.float() - x.float(), alpha=0.5)),
    }
    for name, (recipe, expected) in recipes.items():
        out = _merge(recipe, models_dir, threads=threads, memory_budget_mb=budget)
        for key in ("big.weight", "small.weight", "bf.weight"):
            assert torch.equal(out[key], expected(*(sd[key] for sd in inputs))), (name, key)
