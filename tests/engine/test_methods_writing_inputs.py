"""A method that writes into its inputs crashes nothing and changes no file (issue 16, point 2).

Inputs handed over in their stored dtype (``stored_dtype`` and ``accumulates`` methods) can be
views of the file's pages; they are private copy-on-write mappings, so a write copies the page
for this process only. The merges run in a subprocess: a write into a read-only mapping kills
the process (SIGSEGV), which must fail the test, not the test run."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from safetensors.torch import load_file
    sys.path.insert(0, {root!r})
    import lib_mecha as mecha
    from lib_mecha.io import SafetensorsFile
    from lib_mecha.methods import SAME, Tensor

    @mecha.merge_method(returns=SAME, stored_dtype=True, category="custom")
    def doubles_its_input(a=Tensor(SAME)):
        return a.mul_(2.0).clone()  # writes into its input

    @mecha.merge_method(returns=SAME, elementwise=True, accumulates=True, category="custom")
    def adds_twice_the_second(a=Tensor(SAME), b=Tensor(SAME)):
        return a.add_(b.mul_(2.0))  # writes into its second input too

    folder, threads = {folder!r}, {threads}
    a, b = mecha.model("a"), mecha.model("b")
    original = {{name: load_file(folder + "/" + name + ".safetensors") for name in "ab"}}
    for recipe, expected in (
            (mecha.methods.build("doubles_its_input", a), lambda t: t["a"].float() * 2),
            (mecha.methods.build("adds_twice_the_second", a, b), lambda t: t["a"].float() + 2 * t["b"].float())):
        for output in (None, folder + "/out.safetensors"):
            result = mecha.merge(recipe, output, model_dirs=[folder], threads=threads, output_dtype="fp32",
                                 overwrite=True, memory_budget_mb=16)
            got = result.state_dict if output is None else load_file(output)
            for key in original["a"]:
                want = expected({{name: original[name][key] for name in "ab"}})
                assert torch.equal(got[key], want), (recipe.method, key)
    with SafetensorsFile(folder + "/a.safetensors") as f:  # the view itself, written into
        view = f.view_range("big.weight")
        if view is not None:
            view.mul_(3.0)
            assert torch.equal(view, original["a"]["big.weight"].reshape(-1) * 3)
    print("ok")
''')


@pytest.fixture
def models(tmp_path):
    g = torch.Generator().manual_seed(11)
    for name in "ab":
        save_file({"big.weight": torch.randn(1024, 1536, generator=g).half(),  # sliced, and views of pages
                   "small.weight": torch.randn(300, 300, generator=g).half()}, str(tmp_path / f"{name}.safetensors"))
    return tmp_path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("threads", [0, 2])
def test_a_method_writing_into_its_stored_dtype_inputs_crashes_nothing_and_changes_no_file(models, threads):
    before = {p.name: _digest(p) for p in models.glob("*.safetensors")}
    script = SCRIPT.format(root=str(ROOT), folder=str(models), threads=threads)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    assert proc.stdout.strip().endswith("ok")
    assert {name: _digest(models / name) for name in before} == before
