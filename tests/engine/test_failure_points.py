"""Every way a merge to a file can fail before ``commit()`` ends with one clear error and a folder
exactly as it was: no output, no temporary file, an old output untouched.

Failures are injected at each stage in turn: the options and the device, planning, hashing the
inputs, opening the writer (each system call), each key (each write, each method call), and the
commit (each system call). The device cases also go through the command line, which must print
one line and no traceback.
"""
from __future__ import annotations

import errno
import os
import threading
import types

import pytest
import torch
from safetensors.torch import load_file, save_file

import lib_mecha as mecha
from lib_mecha.cli import main
from lib_mecha.engine import api
from lib_mecha.errors import MechaError, MergeCancelled, OutputError, OutputExists, ParameterError
from lib_mecha.io import positional, temps
from lib_mecha.io import writer as writer_module
from lib_mecha.methods import merge_method, unregister
from lib_mecha.methods.spec import SAME, CurrentKey, Tensor


class Injected(Exception):
    """The failure a test injects (not a MechaError: the cleanup must not depend on the type)."""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """a and b: a key big enough to be merged in slices, two small ones and an integer one."""
    folder = tmp_path_factory.mktemp("failure-points")
    for seed, name in enumerate("ab"):
        g = torch.Generator().manual_seed(seed)
        save_file({"big.weight": torch.randn(1100, 1024, generator=g).half(),
                   "w1.weight": torch.randn(64, 64, generator=g), "w2.bias": torch.randn(8, generator=g),
                   "ids": torch.arange(5)}, str(folder / f"{name}.safetensors"))
    return folder


@pytest.fixture()
def out_dir(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def recipe():
    return mecha.weighted_sum(mecha.model("a"), mecha.model("b"), alpha=0.25)


def run(models, out_dir, **kw):
    return mecha.merge(kw.pop("node", None) or recipe(), out_dir / "out.safetensors", model_dirs=[models], **kw)


def listing(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def failing_after(calls: int, real, error: BaseException):
    """``real`` that raises ``error`` on its ``calls``-th call (1-based) and works otherwise."""
    count = {"n": 0}
    lock = threading.Lock()

    def wrapper(*args, **kwargs):
        with lock:
            count["n"] += 1
            hit = count["n"] == calls
        if hit:
            raise error
        return real(*args, **kwargs)
    return wrapper


def os_failing(name: str, calls: int, error: BaseException):
    """A stand-in for the ``os`` module whose function ``name`` fails on its ``calls``-th call."""
    fake = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    setattr(fake, name, failing_after(calls, getattr(os, name), error))
    return fake


def count_calls(monkeypatch, owner, name):
    calls = []
    real = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    return calls


def check_clean_failure(models, out_dir, expected=(Injected, MechaError), **kw):
    before = listing(out_dir)
    with pytest.raises(expected) as info:
        run(models, out_dir, **kw)
    after = listing(out_dir)
    assert after == before, f"folder changed: {sorted(set(after) ^ set(before))}"
    return info.value


# --- options and device -----------------------------------------------------------------------

BAD_DEVICES = ["bogus", "meta", "cuda:x"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:1"]) \
    + ([] if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else ["mps"])


@pytest.mark.parametrize("device", BAD_DEVICES)
def test_a_bad_device_is_refused_before_any_file_is_made(models, out_dir, device):
    err = check_clean_failure(models, out_dir, ParameterError, device=device)
    text = err.format_message()
    assert "\n" not in text and "'device'" in text and repr(device) in text


@pytest.mark.parametrize("device", BAD_DEVICES)
def test_the_command_line_says_one_line_for_a_bad_device(models, out_dir, tmp_path, capsys, device):
    recipe_file = tmp_path / "r.mecha"
    recipe_file.write_text(mecha.serialize(recipe()))
    code = main(["merge", str(recipe_file), "-o", str(out_dir / "out.safetensors"), "--models-dir", str(models),
                 "--device", device])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("error: merge: parameter 'device': ") and "Traceback" not in err
    assert listing(out_dir) == {}


# --- planning, hashing, opening the writer ---------------------------------------------------------

@pytest.mark.parametrize("owner, name", [
    (api, "make_plan"), (api, "sha256_of"), (api, "_metadata"), (writer_module, "_check_space"),
    (positional.PositionalFile, "write_from"),  # the header, the first write of the new file
])
def test_a_failure_before_the_first_key_leaves_nothing(models, out_dir, monkeypatch, owner, name):
    monkeypatch.setattr(owner, name, failing_after(1, getattr(owner, name), Injected("injected")))
    check_clean_failure(models, out_dir)


@pytest.mark.parametrize("name", ["open", "ftruncate"])
def test_a_failing_system_call_while_opening_the_writer_leaves_nothing(models, out_dir, monkeypatch, name):
    monkeypatch.setattr(writer_module, "os", os_failing(name, 1, OSError(errno.EIO, "Input/output error")))
    err = check_clean_failure(models, out_dir, OutputError)
    assert "Input/output error" in err.format_message()


# --- each key --------------------------------------------------------------------------------------

def test_a_failure_at_any_write_leaves_nothing(models, out_dir, monkeypatch):
    writes = count_calls(monkeypatch, writer_module.SafetensorsWriter, "_put")
    run(models, out_dir, threads=2)
    (out_dir / "out.safetensors").unlink()
    total = len(writes)
    assert total >= 5  # a sliced key, three whole ones
    real = writer_module.SafetensorsWriter._put
    for n in range(1, total + 1):
        for error in (Injected(f"write {n}"), OSError(errno.ENOSPC, "No space left on device"),
                      KeyboardInterrupt()):
            monkeypatch.setattr(writer_module.SafetensorsWriter, "_put", failing_after(n, real, error))
            check_clean_failure(models, out_dir, (Injected, OSError, KeyboardInterrupt), threads=2)


def test_a_method_failing_on_any_key_leaves_nothing_and_an_old_output_untouched(models, out_dir):
    seen = []

    @merge_method(name="test_fails_on_nth_key", returns=SAME)
    def fails(a=Tensor(SAME), key=CurrentKey()):
        seen.append(key)
        if len(seen) == fail_at[0]:
            raise RuntimeError("boom")
        return a
    fail_at = [0]
    try:
        run(models, out_dir, node=fails(mecha.model("a")), threads=0)
        keys = len(seen)
        (out_dir / "out.safetensors").write_bytes(b"the old version")
        for n in range(1, keys + 1):
            seen.clear()
            fail_at[0] = n
            err = check_clean_failure(models, out_dir, MechaError, node=fails(mecha.model("a")), overwrite=True)
            assert "test_fails_on_nth_key failed on key" in err.format_message()
    finally:
        unregister("test_fails_on_nth_key")


def test_a_cancel_at_any_key_leaves_nothing(models, out_dir):
    cancel = threading.Event()
    for n in range(1, 4):  # of the 4 keys: a cancel after the last one comes too late
        cancel.clear()

        def progress(done, total, nbytes, n=n):
            if done == n:
                cancel.set()
        check_clean_failure(models, out_dir, MergeCancelled, threads=0, progress=progress, cancel=cancel)


# --- commit ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, error", [
    ("fsync", OSError(errno.EIO, "Input/output error")),
    ("close", OSError(errno.EIO, "Input/output error")),
    ("link", FileExistsError(errno.EEXIST, "File exists")),  # the name appeared meanwhile
    ("link", KeyboardInterrupt()),
])
def test_a_failing_commit_leaves_nothing(models, out_dir, monkeypatch, name, error):
    monkeypatch.setattr(writer_module, "os", os_failing(name, 1, error))
    check_clean_failure(models, out_dir, (OutputError, KeyboardInterrupt))


def test_a_failing_rename_without_hard_links_leaves_nothing(models, out_dir, monkeypatch):
    fake = os_failing("rename", 1, OSError(errno.EIO, "Input/output error"))
    fake.link = failing_after(1, os.link, PermissionError(errno.EPERM, "Operation not permitted"))
    monkeypatch.setattr(writer_module, "os", fake)
    check_clean_failure(models, out_dir, OutputError)


def test_a_failing_replace_keeps_the_old_output(models, out_dir, monkeypatch):
    (out_dir / "out.safetensors").write_bytes(b"the old version")
    monkeypatch.setattr(temps, "os", os_failing("replace", 1, OSError(errno.EIO, "Input/output error")))
    err = check_clean_failure(models, out_dir, OutputError, overwrite=True)
    assert "Input/output error" in err.format_message()


def test_after_all_those_failures_a_merge_still_succeeds(models, out_dir):
    run(models, out_dir)
    merged = load_file(str(out_dir / "out.safetensors"))
    a = load_file(str(models / "a.safetensors"))
    b = load_file(str(models / "b.safetensors"))
    assert torch.equal(merged["w1.weight"], torch.lerp(a["w1.weight"], b["w1.weight"], 0.25).half())
    assert sorted(listing(out_dir)) == ["out.safetensors"]
    with pytest.raises(OutputExists):
        run(models, out_dir)
