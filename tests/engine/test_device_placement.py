"""The merge device per key: the VRAM budget, the CPU fallback for a key that does not fit or runs
out of memory on the device, and the checks of the budget.

There is no GPU here. The placement's logic does not depend on the device's kind, so the merge
"device" of these tests is ``cpu:0``: a device distinct from the CPU fallback (``cpu``) for the
placement and for the workspaces it makes, on which tensors live in CPU memory. A test method
records the device of each key's workspace, which shows where each key ran. The CUDA-only parts
(pinned staging, the transfers, ``torch.cuda.empty_cache``) are checked by ``bench/device_check.py``
on a GPU.
"""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

import lib_mecha as mecha
from lib_mecha.cli import main
from lib_mecha.engine import api
from lib_mecha.engine import placement as placement_module
from lib_mecha.engine.items import MIB
from lib_mecha.engine.placement import Placement, vram_budget
from lib_mecha.errors import ParameterError
from lib_mecha.methods import merge_method, unregister
from lib_mecha.methods.spec import SAME, CurrentKey, KeyWorkspace, Tensor

DEVICE = torch.device("cpu", 0)  # the stand-in GPU (see the module docstring)
CPU = torch.device("cpu")


@pytest.fixture
def recording():
    """A ``test_device_blend`` method (a lerp) that records, per key, the device of each workspace
    it got; it raises the device's out-of-memory error for the keys in ``fail`` on ``DEVICE``."""
    seen, fail, lock = {}, set(), threading.Lock()

    @merge_method(name="test_device_blend", returns=SAME)
    def blend(a=Tensor(SAME), b=Tensor(SAME), key=CurrentKey(), work=KeyWorkspace()):
        with lock:
            seen.setdefault(key, []).append(work.device)
        out = work.empty_like(a)
        if key in fail and work.device == DEVICE:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected for {key})")
        return torch.lerp(a, b, 0.25, out=out)
    try:
        yield SimpleNamespace(seen=seen, fail=fail, method=blend)
    finally:
        unregister("test_device_blend")


def _on_device(monkeypatch, budget_mb):
    """Merges started with ``api.merge`` get the stand-in device with this VRAM budget; the
    placements made are returned in a list."""
    made = []

    def placement_for(options):
        made.append(Placement(DEVICE, None if budget_mb is None else int(budget_mb * MIB), recovers=True))
        return made[-1]
    monkeypatch.setattr(api, "placement_for", placement_for)
    return made


def _recipe(recording):
    return recording.method(mecha.model("a"), mecha.model("b"))


def _assert_same(got, reference):
    assert sorted(got) == sorted(reference)
    for key, tensor in reference.items():
        assert torch.equal(got[key], tensor), key


@pytest.mark.parametrize("threads", [0, 2])
def test_a_key_over_the_vram_budget_runs_on_the_cpu_alone_with_a_note(sd1_dir, recording, monkeypatch, threads):
    reference = mecha.merge(_recipe(recording), model_dirs=[sd1_dir], threads=threads).state_dict
    recording.seen.clear()
    made = _on_device(monkeypatch, budget_mb=0.25)
    result = mecha.merge(_recipe(recording), model_dirs=[sd1_dir], threads=threads)
    _assert_same(result.state_dict, reference)
    fallbacks = made[0].fallbacks
    assert fallbacks and len(fallbacks) < len(recording.seen)  # some keys fell back, not all
    for key, devices in recording.seen.items():
        assert devices == ([CPU] if key in fallbacks else [DEVICE]), key
    notes = [w for w in result.warnings if "VRAM budget" in w]
    assert len(notes) == 1 and notes[0].startswith(f"{len(fallbacks)} keys merged on the CPU: larger than "
                                                   f"the VRAM budget of 0.25 MiB ({fallbacks[0]}")


@pytest.mark.parametrize("threads", [0, 2])
def test_a_key_out_of_memory_on_the_device_is_merged_again_on_the_cpu(sd1_dir, recording, monkeypatch, threads):
    reference = mecha.merge(_recipe(recording), model_dirs=[sd1_dir], threads=threads).state_dict
    failing = sorted(recording.seen)[::7]
    recording.seen.clear()
    recording.fail.update(failing)
    made = _on_device(monkeypatch, budget_mb=None)
    result = mecha.merge(_recipe(recording), model_dirs=[sd1_dir], threads=threads)  # strict memory: no lent
    _assert_same(result.state_dict, reference)                                       # memory kept by the failure
    for key, devices in recording.seen.items():
        assert devices == ([DEVICE, CPU] if key in failing else [DEVICE]), key
    assert sorted(made[0].fallbacks) == failing
    notes = [w for w in result.warnings if "out of memory" in w]
    assert notes == [f"{len(failing)} keys ran out of memory on cpu:0 and were merged on the CPU instead "
                     f"({', '.join(made[0].fallbacks[:3])} and {len(failing) - 3} more)"]


def test_an_out_of_memory_error_fails_a_merge_that_does_not_recover(sd1_dir, recording, monkeypatch):
    recording.fail.update({"model.diffusion_model.out.2.bias"})
    monkeypatch.setattr(api, "placement_for", lambda options: Placement(DEVICE))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        mecha.merge(_recipe(recording), model_dirs=[sd1_dir])


def test_a_file_merge_reports_the_fallback_and_writes_the_same_file(sd1_dir, recording, monkeypatch, tmp_path):
    from safetensors.torch import load_file
    mecha.merge(_recipe(recording), tmp_path / "cpu.safetensors", model_dirs=[sd1_dir])
    _on_device(monkeypatch, budget_mb=0.25)
    result = mecha.merge(_recipe(recording), tmp_path / "device.safetensors", model_dirs=[sd1_dir])
    assert any("VRAM budget" in w for w in result.warnings)
    _assert_same(load_file(str(tmp_path / "device.safetensors")), load_file(str(tmp_path / "cpu.safetensors")))


# --- the budget's checks and default -------------------------------------------------------------

@pytest.mark.parametrize("budget", [0, -512])
def test_a_budget_of_zero_or_less_is_one_clear_error(budget):
    with pytest.raises(ParameterError) as info:
        mecha.MergeOptions(vram_budget_mb=budget)
    text = info.value.format_message()
    assert "\n" not in text and text.startswith(f"merge: parameter 'vram_budget_mb': must be more than 0, got {budget}")


def test_the_command_line_says_one_line_for_a_bad_budget(sd1_dir, tmp_path, capsys):
    recipe_file = tmp_path / "r.mecha"
    recipe_file.write_text(mecha.serialize(mecha.weighted_sum(mecha.model("a"), mecha.model("b"))))
    code = main(["merge", str(recipe_file), "-o", str(tmp_path / "out.safetensors"), "--models-dir", str(sd1_dir),
                 "--vram-budget-mb", "0"])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and err.startswith("error: merge: parameter 'vram_budget_mb': ")
    assert not (tmp_path / "out.safetensors").exists()


def _fake_card(monkeypatch, total_mib, free_mib, reserved_mib=0, allocated_mib=0):
    """torch.cuda's answers about one card (there is none here)."""
    cuda = placement_module.torch.cuda
    monkeypatch.setattr(cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=total_mib * MIB))
    monkeypatch.setattr(cuda, "mem_get_info", lambda d: (free_mib * MIB, total_mib * MIB))
    monkeypatch.setattr(cuda, "memory_reserved", lambda d: reserved_mib * MIB)
    monkeypatch.setattr(cuda, "memory_allocated", lambda d: allocated_mib * MIB)


def test_a_budget_beyond_the_card_is_one_clear_error(monkeypatch):
    _fake_card(monkeypatch, total_mib=8192, free_mib=6000)
    with pytest.raises(ParameterError) as info:
        vram_budget(mecha.MergeOptions(vram_budget_mb=9000), torch.device("cuda"))
    text = info.value.format_message()
    assert "\n" not in text and "9000 MiB is more than cuda has (8192 MiB)" in text
    assert vram_budget(mecha.MergeOptions(vram_budget_mb=8192), torch.device("cuda")) == 8192 * MIB


def test_the_default_budget_is_half_of_the_free_vram_counting_torchs_unused_cache(monkeypatch):
    _fake_card(monkeypatch, total_mib=24576, free_mib=10000, reserved_mib=3000, allocated_mib=1000)
    assert vram_budget(mecha.MergeOptions(), torch.device("cuda")) == (10000 + 3000 - 1000) // 2 * MIB
    assert vram_budget(mecha.MergeOptions(vram_budget_mb=4096), CPU) is None  # no budget on the CPU


def test_a_cpu_merge_has_no_budget_and_no_fallback():
    p = placement_module.placement_for(mecha.MergeOptions(device="cpu", vram_budget_mb=16))
    assert p.device == CPU and p.budget is None and not p.recovers
