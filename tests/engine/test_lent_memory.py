"""Nothing lent survives its key (lib_mecha/memory.py): memory the engine lends a method for a key
goes back to the pool when the key has been written, and a method that keeps some past its key
(a buffer of its workspace, a loop's scratch buffer, or the input the engine loaded for it) fails
its tests instead of silently reading the next key's values."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import lib_mecha as mecha
import lib_mecha.methods as methods
from lib_mecha.errors import LentMemoryKept
from lib_mecha.memory import STRICT_ENV
from lib_mecha.methods.spec import SAME, KeyWorkspace, Tensor
from lib_mecha.workspace import ranges

KEYS = [f"layer{i}.weight" for i in range(4)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Keys of one size (1 MiB in float32: lent from the pool), each of one value: its number."""
    folder = tmp_path_factory.mktemp("lent")
    save_file({key: torch.full((512, 512), float(i)) for i, key in enumerate(KEYS)}, str(folder / "m.safetensors"))
    return folder


@pytest.fixture
def kept():
    """What the misbehaving methods below keep across keys."""
    found = []
    yield found
    found.clear()
    for name in ("keeps_its_workspace_buffer", "keeps_a_scratch_buffer", "keeps_its_input"):
        methods.unregister(name)


@pytest.fixture(autouse=True)
def misbehaving_methods(kept):
    @mecha.merge_method(returns=SAME, category="custom")
    def keeps_its_workspace_buffer(a=Tensor(SAME), work=KeyWorkspace()):
        buffer = work.empty_like(a).copy_(a)
        kept.append(buffer)  # wrong: the workspace's memory goes back after the key
        return a.clone()

    @mecha.merge_method(returns=SAME, category="custom")
    def keeps_a_scratch_buffer(a=Tensor(SAME), work=KeyWorkspace()):
        flat = a.reshape(-1)

        def body(start, end, scratch):
            if not kept:
                kept.append(scratch.get("copy", end - start).copy_(flat[start:end]))  # wrong: beyond the loop

        work.for_each_range(ranges(flat.numel(), 1 << 16), body, lambda: work.scratch(a))
        return a.clone()

    @mecha.merge_method(returns=SAME, category="custom")
    def keeps_its_input(a=Tensor(SAME)):
        kept.append(a)  # wrong: the engine loaded it into memory it lent for this key
        return a.clone()


def _merge(name, models, **kwargs):
    return mecha.merge(methods.build(name, mecha.model("m")), model_dirs=[models], output_dtype="fp32",
                       **kwargs).state_dict


@pytest.mark.parametrize("name", ["keeps_its_workspace_buffer", "keeps_a_scratch_buffer", "keeps_its_input"])
@pytest.mark.parametrize("threads", [0, 2])
def test_a_method_that_keeps_lent_memory_past_its_key_fails_in_strict_mode(models, name, threads):
    with pytest.raises(LentMemoryKept, match="still in use after it"):
        _merge(name, models, threads=threads)


@pytest.mark.parametrize("name", ["keeps_its_workspace_buffer", "keeps_its_input"])
@pytest.mark.parametrize("threads", [0, 2])
def test_outside_strict_mode_kept_memory_is_not_lent_again(models, kept, name, threads, monkeypatch):
    """What a misbehaving method kept still holds its own key's values after every later key (the
    pool does not reuse a buffer that something refers to), and the merge's results are right."""
    monkeypatch.setenv(STRICT_ENV, "0")
    got = _merge(name, models, threads=threads)
    assert len(kept) == len(KEYS)
    assert sorted(float(t.reshape(-1)[0]) for t in kept) == [float(i) for i in range(len(KEYS))]
    assert all(torch.equal(t, torch.full_like(t, float(t.reshape(-1)[0]))) for t in kept)
    for i, key in enumerate(KEYS):
        assert torch.equal(got[key], torch.full((512, 512), float(i))), key
