"""A merge changes nothing about the process outside its own threads: Python's garbage collector
stays as it was, and torch's intra-op thread count is set on the merge's threads only, so the
host's own torch work (a WebUI's generation) keeps its threads while merges run, however they
overlap (issue 16, point 3)."""
from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import lib_mecha as mecha
import lib_mecha.methods as methods
from lib_mecha.engine import threads as threads_module
from lib_mecha.methods.spec import SAME, Tensor

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def seen_during_merge():
    """A method that records, on the thread that runs it, whether the collector is enabled and
    torch's intra-op thread count; a 3-element input makes it fail."""
    seen = []

    @mecha.merge_method(returns=SAME, category="custom")
    def note_process_state(a=Tensor(SAME)):
        seen.append((gc.isenabled(), torch.get_num_threads()))
        if a.numel() == 3:
            raise ValueError("boom")
        return a

    was = gc.isenabled()
    yield seen
    methods.unregister("note_process_state")
    gc.enable() if was else gc.disable()


@pytest.fixture
def models(tmp_path):
    save_file({"x": torch.ones(4)}, str(tmp_path / "ok.safetensors"))
    save_file({"x": torch.ones(3)}, str(tmp_path / "bad.safetensors"))
    return tmp_path


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("threads", [0, 2])
def test_a_merge_leaves_the_collector_as_it_is_even_when_it_fails(models, seen_during_merge, enabled, threads):
    gc.enable() if enabled else gc.disable()
    mecha.merge(methods.build("note_process_state", mecha.model("ok")), model_dirs=[models], threads=threads)
    assert [collector for collector, _ in seen_during_merge] == [enabled] and gc.isenabled() == enabled
    with pytest.raises(mecha.MechaError, match="boom"):
        mecha.merge(methods.build("note_process_state", mecha.model("bad")), model_dirs=[models], threads=threads)
    assert gc.isenabled() == enabled


@pytest.mark.parametrize("threads", [0, 2])
def test_merge_threads_run_torch_on_one_intra_op_thread_and_the_caller_gets_its_count_back(
        models, seen_during_merge, threads):
    if threads_module.torch_runtime() is None:
        pytest.skip("no OpenMP runtime of torch's found here: the fallback test covers this platform")
    before = torch.get_num_threads()
    mecha.merge(methods.build("note_process_state", mecha.model("ok")), model_dirs=[models], threads=threads)
    assert [count for _, count in seen_during_merge] == [1]
    assert torch.get_num_threads() == before


def test_without_openmp_runtime_a_merge_changes_no_thread_count(models, seen_during_merge, monkeypatch):
    """Where torch's OpenMP runtime cannot be found (another build, another OS), nothing is set:
    the merge runs on torch's own threads, with the same results."""
    monkeypatch.setattr(threads_module, "_runtime", [])
    assert threads_module.torch_runtime(candidates=lambda: []) is None
    before = torch.get_num_threads()
    for threads in (0, 2):
        seen_during_merge.clear()
        got = mecha.merge(methods.build("note_process_state", mecha.model("ok")), model_dirs=[models],
                          threads=threads).state_dict
        assert torch.equal(got["x"], torch.ones(4))
        assert torch.get_num_threads() == before
    monkeypatch.setattr(threads_module, "_runtime", [])  # found again by the next test that asks


def test_a_library_that_is_not_loaded_is_never_loaded(tmp_path):
    """Only runtimes this process already uses are touched: loading a second OpenMP runtime can
    abort the process."""
    fake = tmp_path / "libgomp-not-loaded.so"
    fake.write_bytes(b"not a library")
    assert threads_module._loaded_library(fake) is None


OVERLAPPING = textwrap.dedent('''
    import sys, threading
    import torch
    from safetensors.torch import save_file
    sys.path.insert(0, {root!r})
    import lib_mecha as mecha
    from lib_mecha.methods.spec import SAME, Tensor

    folder = {folder!r}
    save_file({{"x": torch.ones(64)}}, folder + "/m.safetensors")
    torch.set_num_threads(3)  # the host's count: every thread that starts torch work gets it
    started, release = [threading.Event(), threading.Event()], [threading.Event(), threading.Event()]

    @mecha.merge_method(returns=SAME, category="custom")
    def wait_for_release(a=Tensor(SAME), which=mecha.methods.Int(0)):
        started[which].set()
        assert release[which].wait(60)
        return a

    def counts_seen_by_a_new_thread():
        seen = []
        t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        t.start(); t.join()
        return seen[0]

    callers = {{}}

    def merge(which, threads):
        torch.get_num_threads()  # a host thread that already ran torch
        before = torch.get_num_threads()
        recipe = mecha.methods.build("wait_for_release", mecha.model("m"), which=which)
        mecha.merge(recipe, model_dirs=[folder], threads=threads)
        callers[which] = (before, torch.get_num_threads())

    first = threading.Thread(target=merge, args=(0, {threads}))
    second = threading.Thread(target=merge, args=(1, 0))
    first.start(); assert started[0].wait(60)
    second.start(); assert started[1].wait(60)
    during = counts_seen_by_a_new_thread(), torch.get_num_threads()
    release[0].set(); first.join()          # the first merge ends while the second still runs
    between = counts_seen_by_a_new_thread(), torch.get_num_threads()
    release[1].set(); second.join()
    after = counts_seen_by_a_new_thread(), torch.get_num_threads()
    print(during, between, after, callers[0], callers[1])
    assert during == between == after == (3, 3), (during, between, after)
    assert callers[0] == callers[1] == (3, 3), callers
''')


@pytest.mark.parametrize("threads", [0, 2])
def test_overlapping_merges_leave_every_other_thread_its_torch_thread_count(tmp_path, threads):
    """Two merges overlap and end in the other order than they started; meanwhile a host thread
    that starts torch work, and the main thread, keep the process's count (3), and each merging
    thread has its own back afterwards. In a subprocess: the count is process-wide state."""
    script = OVERLAPPING.format(root=str(ROOT), folder=str(tmp_path), threads=threads)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
