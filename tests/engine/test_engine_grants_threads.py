"""A key that runs alone gets the merge's idle threads (lib_mecha.workspace), and results do not change;
memory is lent from one pool and comes back after each key (lib_mecha.memory)."""
from __future__ import annotations

import threading

import pytest
import torch
from engine_fixtures import save_layer_models

import lib_mecha as mecha
import lib_mecha.compose as compose
import lib_mecha.methods as methods
from lib_mecha.engine import execute as execute_module
from lib_mecha.memory import BufferPool
from lib_mecha.methods import _trim, _values
from lib_mecha.methods import ties as ties_module
from lib_mecha.workspace import Workspace, ranges
from lib_mecha.io.positional import PORTABLE_IO

mapped_reads_only = pytest.mark.skipif(PORTABLE_IO, reason="about reads of mapped file pages, which the "
                                       "Windows paths (LIB_MECHA_PORTABLE_IO=1) never make")

# 524288 elements: with three inputs the engine's estimate for one key exceeds the smallest budget
# (16 MiB), so each such key runs alone and is granted the other thread
BIG = (1024, 512)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return save_layer_models(tmp_path_factory.mktemp("granted"), 4, BIG, layers=3)


def _models(n):
    return [mecha.model(f"m{i}") for i in range(n)]


RECIPES = {
    "ties": lambda m: compose.add_difference_ties(m[0], *m[1:], k=0.2, alpha=0.9),
    "ties_stock": lambda m: compose.add_difference_ties_extended(m[0], *m[1:], k=0.3),
    "ties_median": lambda m: compose.add_difference_ties_extended(m[0], *m[1:], apply_median=True),
    "dare": lambda m: compose.add_ties_with_dare(m[0], *m[1:], probability=0.5, k=0.5, seed=3),
    "model_stock": lambda m: compose.n_model_stock(m[0], *m[1:]),
    "geometric_median": lambda m: methods.build("geometric_median", *m),
    "perpendicular": lambda m: compose.add_perpendicular(m[1], m[2], m[0]),
}


@pytest.fixture
def small_slices(monkeypatch):
    """Slices small enough that every loop has many ranges to share out."""
    monkeypatch.setattr(execute_module, "MAX_CHUNK_ELEMENTS", 1 << 16)
    monkeypatch.setattr(_values, "SLICE_ELEMENTS", 1 << 12)
    monkeypatch.setattr(_trim, "SAMPLED_SELECTION_ABOVE", 1 << 13)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_key_alone_uses_the_idle_thread_with_the_same_result(models_dir, name, small_slices, loop_threads):
    recipe = RECIPES[name](_models(4 if name != "perpendicular" else 3))
    kwargs = dict(model_dirs=[models_dir], output_dtype="fp32")
    sequential = mecha.merge(recipe, threads=0, **kwargs).state_dict
    shared = mecha.merge(recipe, threads=2, memory_budget_mb=512, **kwargs).state_dict
    assert not any(n.startswith("mecha-help") for n in loop_threads)  # nothing ran alone
    alone = mecha.merge(recipe, threads=2, memory_budget_mb=16, **kwargs).state_dict
    assert any(n.startswith("mecha-help") for n in loop_threads), loop_threads
    assert set(alone) == set(sequential) == set(shared)
    for key in sequential:
        assert torch.equal(alone[key], sequential[key]), key
        assert torch.equal(shared[key], sequential[key]), key


def test_a_key_over_half_the_budget_is_granted_the_idle_thread(models_dir, small_slices, loop_threads):
    """Beside a key over half the budget no key of its size fits, so the other thread would idle."""
    recipe = RECIPES["ties"](_models(4))
    with mecha.plan(recipe, model_dirs=[models_dir]) as planned:
        cost = max(item.cost for item in execute_module.work_items(planned, torch.float32, 1 << 40, 2))
    mib = 1 << 20
    roomy = -(-4 * cost // mib)  # room for two such keys: no grant
    mecha.merge(recipe, threads=2, memory_budget_mb=roomy, model_dirs=[models_dir])
    assert not any(n.startswith("mecha-help") for n in loop_threads)
    between = -(-3 * cost // (2 * mib))  # 1.5x the key: it fits alone, not beside another
    assert cost < between * mib < 2 * cost
    mecha.merge(recipe, threads=2, memory_budget_mb=between, model_dirs=[models_dir])
    assert any(n.startswith("mecha-help") for n in loop_threads), loop_threads


def test_elementwise_steps_of_a_whole_key_reuse_dead_buffers_without_corrupting_live_ones(
        models_dir, small_slices, loop_threads):
    """add_difference(a, ties(b - a, c - a)): each ``x - a`` may overwrite x's buffer, never a's,
    which the later steps still need."""
    a, b, c = _models(3)
    recipe = mecha.add_difference(a, methods.build("ties_sum", b - a, c - a, k=1.0), alpha=1.0)
    kwargs = dict(model_dirs=[models_dir], output_dtype="fp32")
    sequential = mecha.merge(recipe, threads=0, **kwargs).state_dict
    alone = mecha.merge(recipe, threads=2, memory_budget_mb=16, **kwargs).state_dict
    assert any(n.startswith("mecha-help") for n in loop_threads)
    for key in sequential:
        assert torch.equal(alone[key], sequential[key]), key


def test_for_each_range_without_a_grant_runs_in_order_on_the_calling_thread():
    seen = []
    work = Workspace()
    work.for_each_range([(0, 2), (2, 5), (5, 6)], lambda s, e, state: seen.append((s, e, state,
                                                                                threading.current_thread())),
                        make_state=lambda: "state")
    assert [(s, e, st) for s, e, st, _ in seen] == [(0, 2, "state"), (2, 5, "state"), (5, 6, "state")]
    assert {t for *_, t in seen} == {threading.current_thread()}
    assert work.threads == 1


def test_for_each_range_shares_ranges_once_each_and_gives_each_thread_its_own_state():
    from concurrent.futures import ThreadPoolExecutor
    spans = ranges(1000, 7)
    done, states = [], []
    barrier = threading.Barrier(2, timeout=10)  # both threads must take part

    def make_state():
        state = object()
        states.append(state)
        return state

    def body(start, end, state):
        if start == 0 or len(done) == 1:
            barrier.wait()
        done.append((start, end, state))

    with ThreadPoolExecutor(1) as pool:
        work = Workspace(helpers=pool, helper_count=1)
        assert work.threads == 2
        work.for_each_range(spans, body, make_state)
    assert sorted((s, e) for s, e, _ in done) == spans
    assert len(states) == 2 and {id(st) for *_, st in done} == {id(s) for s in states}


def test_loops_inside_a_loop_stay_on_their_thread_and_helpers_errors_reach_the_caller():
    from concurrent.futures import ThreadPoolExecutor
    inner = {}
    barrier = threading.Barrier(2, timeout=10)  # both threads must take part

    with ThreadPoolExecutor(1, thread_name_prefix="helper") as pool:
        work = Workspace(helpers=pool, helper_count=1)

        def body(start, end, _):
            name = threading.current_thread().name
            ran = []
            work.for_each_range(ranges(30, 10), lambda s, e, _: ran.append(threading.current_thread().name))
            inner.setdefault(name, set()).update(ran)
            if start < 20:  # the first two ranges: one on each thread
                barrier.wait()
                if name.startswith("helper"):
                    raise ValueError(f"range {start} failed")

        with pytest.raises(ValueError, match="range .* failed"):
            work.for_each_range(ranges(1000, 10), body)
    assert len(inner) == 2 and all(names == {name} for name, names in inner.items())


def test_ranges_keep_rows_whole():
    assert ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert ranges(12, 5, row=3) == [(0, 3), (3, 6), (6, 9), (9, 12)]
    assert ranges(8, 2, row=4) == [(0, 4), (4, 8)]  # a row longer than the step stays whole
    assert ranges(0, 4) == []


MIB = 1 << 20


def _storage(t):
    return t.untyped_storage().data_ptr()


def test_the_pool_lends_memory_again_in_any_dtype_and_down_to_half_its_size():
    pool = BufferPool()
    work = Workspace(pool=pool)
    first, other = work.empty(4 * MIB, torch.float32), work.empty(4 * MIB, torch.float32)  # 16 MiB each
    assert first.shape == (4 * MIB,) and first.dtype == torch.float32
    lent = {_storage(first), _storage(other)}
    assert len(lent) == 2  # the first is lent out already: fresh memory for the other
    del first, other
    work.close()
    again = work.empty(4 * MIB, torch.float16)  # 8 MiB: half of it
    assert again.shape == (4 * MIB,) and again.dtype == torch.float16 and _storage(again) in lent
    del again
    work.close()
    assert _storage(work.empty(MIB, torch.float32)) not in lent  # 4 MiB: a key-sized buffer is not worth it
    assert _storage(work.empty(8 * MIB, torch.float32)) not in lent  # 32 MiB does not fit


def test_the_pool_lends_a_slice_sized_buffer_to_any_smaller_request():
    pool = BufferPool()
    slice_sized = pool.take(4 * MIB)
    pool.give(slice_sized, "a test")
    assert _storage(pool.take(100_000)) == _storage(slice_sized)  # up to INTERCHANGEABLE: any request


def test_the_pool_lends_the_smallest_fitting_buffer_and_leaves_small_requests_to_the_allocator():
    pool = BufferPool()
    big, small = pool.take(4 * MIB), pool.take(2 * MIB)
    pool.give(big, "a test")
    pool.give(small, "a test")
    assert _storage(pool.take(2 * MIB)) == _storage(small)
    tiny = pool.take(1000)  # below SMALLEST: a plain tensor, not lent
    pool.give(tiny, "a test")
    assert _storage(pool.take(3 * MIB)) == _storage(big)


def test_the_pool_keeps_what_is_lent_and_waiting_within_the_limit():
    pool = BufferPool()
    pool.limit(6 * MIB)
    big, small = pool.take(4 * MIB), pool.take(2 * MIB)
    big_storage = _storage(big)
    pool.give(big, "a test")
    pool.give(small, "a test")  # 6 MiB waiting: within the limit
    again = pool.take(4 * MIB)
    assert _storage(again) == big_storage
    pool.give(again, "a test")
    pool.limit(5 * MIB)  # the largest waiting buffer goes
    assert _storage(pool.take(4 * MIB)) != big_storage
    # lending goes on past the limit; what comes back then does not wait
    over = [pool.take(4 * MIB) for _ in range(2)]  # 12 MiB lent in all
    over_storages = {_storage(t) for t in over}
    for t in over:
        pool.give(t, "a test")
    assert _storage(pool.take(4 * MIB)) not in over_storages


def test_memory_a_sink_keeps_is_forgotten_and_never_lent_again():
    pool = BufferPool()
    kept = pool.take(4 * MIB)
    pool.forget(kept)
    pool.give(kept, "a test")  # no longer the pool's: ignored
    assert _storage(pool.take(4 * MIB)) != _storage(kept)


def test_methods_take_key_sized_memory_from_their_workspace():
    pool = BufferPool()
    work = Workspace(pool=pool)
    t = work.empty_like(torch.ones(512, 256, dtype=torch.float16))
    assert t.shape == (512, 256) and t.dtype == torch.float16
    assert work.empty(4, torch.float32, "meta").device.type == "meta"  # other devices: not lent
    storage = _storage(t)
    del t
    work.close()
    assert _storage(work.empty(512 * 256, torch.float16)) == storage  # given back, lent again
    # the default workspace of a direct call lends nothing
    plain = Workspace()
    assert plain.empty(10, torch.float32).shape == (10,) and plain.threads == 1


@mapped_reads_only
@pytest.mark.parametrize("recipe", ["ties", "dare", "dropout"])
def test_keys_of_one_size_after_the_first_need_no_new_memory(tmp_path, monkeypatch, recipe):
    """Whole keys of one size follow each other: after the first, the engine's loads, the
    methods' results and their temporaries all reuse lent memory (a fresh key-sized tensor faults
    its pages in). Counted as the key-sized tensors made through torch's allocating functions, for
    models of one key and of three."""
    made = []

    def counting(allocate):
        def allocate_and_count(*args, **kwargs):
            tensor = allocate(*args, **kwargs)
            if tensor.numel() * tensor.element_size() >= MIB:
                made.append(tensor.shape)
            return tensor
        return allocate_and_count

    for name in ("empty", "empty_like", "zeros_like"):
        monkeypatch.setattr(torch, name, counting(getattr(torch, name)))
    build = {**RECIPES, "dropout": lambda m: compose.dropout(m[0], *m[1:], seed=1)}[recipe]

    def fresh_buffers(keys):
        folder = tmp_path / str(keys)
        folder.mkdir()
        save_layer_models(folder, 4, (2048, 640), layers=keys, small_bias=False)  # > 1 M elements a key
        made.clear()
        # (into a file: a state dict keeps every output tensor, which is then new memory by right)
        mecha.merge(build(_models(4)), folder / "out.safetensors", threads=0, model_dirs=[folder],
                    output_dtype="fp16")
        return len(made)

    one = fresh_buffers(1)
    assert one >= 4  # the key's loads, differences and results were lent
    assert fresh_buffers(3) == one


@pytest.mark.parametrize("output_dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("threads", [0, 2])
def test_a_state_dict_keeps_its_tensors_while_buffers_are_handed_on(models_dir, small_slices, output_dtype, threads):
    """Keys of one size run one after the other: the tensors a state dict keeps must not be
    buffers that the next key writes into. Each key is checked against the method run alone."""
    from safetensors.torch import load_file
    a, b, c = _models(3)
    recipe = mecha.add_difference(a, methods.build("ties_sum", b - a, c - a, k=0.5), alpha=0.8)
    got = mecha.merge(recipe, threads=threads, memory_budget_mb=16, model_dirs=[models_dir],
                      output_dtype=output_dtype).state_dict
    t = [load_file(str(models_dir / f"m{i}.safetensors")) for i in range(3)]
    for key in t[0]:
        base, tb, tc = (x[key].float() for x in (t[0], t[1], t[2]))
        merged = ties_module.ties_reduce([tb - base, tc - base], 0.5, False, Workspace())
        expected = torch.add(base, merged, alpha=0.8).to(got[key].dtype)  # add_difference's rounding
        assert torch.equal(got[key], expected), key
    assert len({got[k].data_ptr() for k in got}) == len(got)


def test_the_key_estimate_counts_the_temporaries_a_method_declares(models_dir):
    """A method's declared key-sized temporaries raise its keys' estimate (crossover's spectra:
    2.5 float32 elements per entry), so the budget makes room for them."""
    import dataclasses
    a, b = _models(2)

    def largest_cost(recipe):
        with mecha.plan(recipe, model_dirs=[models_dir]) as planned:
            return max(item.cost for item in execute_module.work_items(planned, torch.float32, 1 << 40, 1))

    spec = methods.resolve("crossover")
    declared = largest_cost(methods.build("crossover", a, b))
    methods.register(dataclasses.replace(spec, temporaries=0.0), replace=True)
    try:
        undeclared = largest_cost(methods.build("crossover", a, b))
    finally:
        methods.register(spec, replace=True)
    assert declared - undeclared == 10 * BIG[0] * BIG[1]  # ceil(4 bytes x 2.5) per element
