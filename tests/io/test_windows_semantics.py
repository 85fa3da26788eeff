"""Windows file semantics, simulated: a file that some process holds open cannot be replaced,
renamed over or removed (PermissionError), as with the WebUI's loaded model or a virus scanner
looking at a fresh file. The writer retries for a moment, then says so; it never leaves a half
state, and a temp file it could not remove is cleared by the next writer into the folder.

These tests run on every system; with ``LIB_MECHA_PORTABLE_IO=1`` (tools/test's second pass over
tests/io and tests/engine) the reads and writes take the Windows paths too.
"""
from __future__ import annotations

import contextlib
import os
import threading
import types

import pytest
import safetensors.torch
import torch

from lib_mecha.errors import OutputError
from lib_mecha.io import SafetensorsFile, SafetensorsWriter, positional, temps

W = "model.diffusion_model.out.2.weight"
SHARING_VIOLATION = "The process cannot access the file because it is being used by another process"


class WindowsLikeFiles:
    """An ``os`` stand-in for lib_mecha.io.temps and .writer: while a path is held (an open
    handle elsewhere), removing it, or replacing or renaming onto or from it, raises the
    PermissionError Windows raises."""

    def __init__(self):
        self.held = set()
        self.refused = []
        self.module = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
        for name in ("unlink", "remove", "replace", "rename"):
            setattr(self.module, name, self._guarded(getattr(os, name)))

    def _guarded(self, real):
        def call(*paths, **kw):
            for p in paths:
                if os.path.abspath(p) in self.held:
                    self.refused.append((real.__name__, os.path.basename(p)))
                    raise PermissionError(13, SHARING_VIOLATION, str(p))
            return real(*paths, **kw)
        return call

    @contextlib.contextmanager
    def holding(self, path):
        self.held.add(os.path.abspath(path))
        try:
            yield
        finally:
            self.held.discard(os.path.abspath(path))


@pytest.fixture()
def windows(monkeypatch):
    files = WindowsLikeFiles()
    monkeypatch.setattr(temps, "os", files.module)
    monkeypatch.setattr(temps, "RETRY_SECONDS", 0.3)
    return files


def temp_files(folder):
    return sorted(p.name for p in folder.iterdir() if ".mecha-tmp-" in p.name)


def write(path, value, overwrite=False):
    with SafetensorsWriter(path, [(W, torch.float32, (4,))], overwrite=overwrite) as w:
        w.write(W, torch.full((4,), float(value)))


def test_an_output_held_open_elsewhere_is_not_replaced_and_nothing_is_left(tmp_path, windows):
    path = tmp_path / "m.safetensors"
    write(path, 1)
    with windows.holding(path):
        with pytest.raises(OutputError) as info:
            write(path, 2, overwrite=True)
    text = info.value.format_message()
    assert text.startswith(f"cannot replace {path}: another program holds it open; nothing was saved")
    assert "\n" not in text
    assert len(windows.refused) > 2  # retried before giving up
    assert safetensors.torch.load_file(path)[W].tolist() == [1.0] * 4
    assert temp_files(tmp_path) == []


def test_an_output_let_go_of_during_the_retries_is_replaced(tmp_path, windows):
    path = tmp_path / "m.safetensors"
    write(path, 1)
    with windows.holding(path):
        threading.Timer(0.05, windows.held.clear).start()  # the other program closes it
        write(path, 2, overwrite=True)
    assert windows.refused and safetensors.torch.load_file(path)[W].tolist() == [2.0] * 4
    assert temp_files(tmp_path) == []


def test_our_own_reader_of_the_old_output_blocks_its_replacement_the_same_way(tmp_path, windows):
    """The hosts keep the loaded model's file open (mapped): on Windows it cannot be replaced."""
    path = tmp_path / "m.safetensors"
    write(path, 1)
    with SafetensorsFile(path) as old, windows.holding(path):
        with pytest.raises(OutputError, match="another program holds it open"):
            write(path, old.read(W)[0] + 1, overwrite=True)
        assert old.read(W).tolist() == [1.0] * 4
    write(path, 3, overwrite=True)
    assert safetensors.torch.load_file(path)[W].tolist() == [3.0] * 4


def test_a_temp_file_held_open_on_abort_is_cleared_by_the_next_writer(tmp_path, windows):
    path = tmp_path / "m.safetensors"
    w = SafetensorsWriter(path, [(W, torch.float32, (4,))])
    with windows.holding(w.temp_path):  # a scanner looks at the new file
        w.abort()  # never raises: it must not hide the error being handled
    assert temp_files(tmp_path) == [w.temp_path.name] and not path.exists()
    write(tmp_path / "other.safetensors", 1)
    assert temp_files(tmp_path) == []


def test_a_second_name_left_after_publishing_is_cleared_by_the_next_writer(tmp_path, windows):
    path = tmp_path / "m.safetensors"
    w = SafetensorsWriter(path, [(W, torch.float32, (4,))])
    w.write(W, torch.ones(4))
    with windows.holding(w.temp_path):
        assert w.commit() == path  # published under its name; the temp name could not go
    assert temp_files(tmp_path) == [w.temp_path.name]
    write(tmp_path / "other.safetensors", 1)
    assert temp_files(tmp_path) == []
    assert safetensors.torch.load_file(path)[W].tolist() == [1.0] * 4


def test_another_live_writers_temp_file_is_never_removed(tmp_path):
    first = SafetensorsWriter(tmp_path / "a.safetensors", [(W, torch.float32, (4,))])
    write(tmp_path / "b.safetensors", 1)  # a second writer into the folder meanwhile
    assert first.temp_path.exists()
    first.write(W, torch.ones(4))
    first.commit()
    assert temp_files(tmp_path) == []


def test_temp_files_of_dead_processes_go_but_those_of_live_ones_and_other_machines_stay(tmp_path):
    dead = _dead_pid()
    names = {
        "dead": f".x.safetensors.mecha-tmp-{temps.HOST_TAG}-{dead}-{'0' * 12}",
        "live": f".y.safetensors.mecha-tmp-{temps.HOST_TAG}-{os.getppid()}-{'1' * 12}",
        "other machine": f".z.safetensors.mecha-tmp-{'f' * 6 if temps.HOST_TAG != 'f' * 6 else 'e' * 6}-{dead}-"
                         f"{'2' * 12}",
        "not ours": f".w.safetensors.mecha-tmp-{dead}",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    assert temps.remove_stale_temps(tmp_path) == [tmp_path / names["dead"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for k, n in names.items() if k != "dead")


def _dead_pid() -> int:
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not temps.process_alive(child.pid)
    return child.pid


def test_the_portable_mode_takes_the_windows_paths(tmp_path):
    """Under LIB_MECHA_PORTABLE_IO=1 (tools/test's second pass) no pread and no mapped reads."""
    path = tmp_path / "m.safetensors"
    write(path, 1)
    with SafetensorsFile(path) as f:
        view = f.view_range(W)
        if positional.PORTABLE_IO:
            assert not f._file.positional and view is None
        else:
            assert f._file.positional == (hasattr(os, "preadv") and hasattr(os, "pwrite"))
            assert view is not None or not hasattr(__import__("mmap"), "MAP_SHARED")
        assert f.read(W).tolist() == [1.0] * 4
