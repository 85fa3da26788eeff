"""crossover on the CPU: the (P, R, C) layout of its passes, its filter on that layout, the
filters kept between keys, and the torch calls it must not make."""
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

from lib_mecha.methods import _fft_passes, crossover
from lib_mecha.methods._fft_passes import batches_slowly, fft_along, layout_of, real_fourier_basis
from lib_mecha.workspace import ThreadCaches, Workspace
from method_calls import raw

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _rand(*shape, seed, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_layout_puts_small_trailing_dimensions_in_the_basis_and_skips_size_one():
    conv = layout_of((1280, 1280, 3, 3))
    assert (conv.lead, conv.row, conv.basis) == (((0, 1280),), (1, 1280), ((2, 3), (3, 3)))
    pointwise = layout_of((1280, 640, 1, 1))
    assert (pointwise.lead, pointwise.row, pointwise.basis) == (((0, 1280),), (1, 640), ())
    channels_first = layout_of((3, 3, 64, 80))
    assert (channels_first.lead, channels_first.row, channels_first.basis) == (((0, 3), (1, 3), (2, 64)), (3, 80), ())
    assert layout_of((1, 7)).lead == () and layout_of((1, 7)).row == (1, 7)
    assert layout_of((1, 1)).row == (1, 1)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 9])
def test_real_fourier_basis_diagonalises_every_even_filter(size):
    q, classes = real_fourier_basis(size)
    identity = torch.eye(size, dtype=torch.float64)
    assert torch.allclose(q @ q.T, identity, atol=1e-12)
    frequency = torch.fft.fftfreq(size, 1 / size).abs()  # |k| of every FFT bin
    even = _rand(size // 2 + 1, seed=size).abs()  # any filter of |k|
    circulant = torch.fft.ifft(even[frequency.long()].unsqueeze(1) * torch.fft.fft(identity, dim=0), dim=0).real
    assert torch.allclose(q.T @ torch.diag(even[classes]) @ q, circulant, atol=1e-12)


def _layout_filter(shape, alpha, tilt):
    """The filter crossover builds for its transposed spectrum, and the rfftn filter at the same bins."""
    layout = layout_of(shape)
    squares = crossover.LayoutSquares(layout)
    ours = crossover.filter_blocks(squares, alpha, tilt, None)(0, layout.C * layout.H)
    theirs = crossover.crossover_filter([*shape[:-1], shape[-1] // 2 + 1], alpha, tilt)
    rows = torch.arange(layout.C * layout.H)
    basis_row, frequency = rows // layout.H, rows % layout.H
    index = [torch.zeros(1, 1, dtype=torch.long) for _ in shape]
    index[layout.row[0]] = frequency.view(-1, 1)
    lead_index = torch.arange(layout.P)
    for dim, size in reversed(layout.lead):
        index[dim] = (lead_index % size).view(1, -1)
        lead_index = lead_index // size
    for (dim, _), k in zip(layout.basis, _fft_passes.layout_basis(layout)[1]):
        index[dim] = k[basis_row].view(-1, 1)
    return ours, theirs[tuple(index)]


@pytest.mark.parametrize("shape", [(12, 10, 3, 3), (3, 3, 12, 10), (10, 1, 9), (1, 9, 1, 10), (7, 8, 1, 1),
                                   (8, 7, 4, 2), (6, 5, 5)])
@pytest.mark.parametrize("alpha, tilt", [(0.5, 0.0), (0.35, 0.0), (0.3, 0.25), (0.6, 3.3)])
def test_filter_on_the_layout_is_exactly_the_rfftn_filter(shape, alpha, tilt):
    ours, theirs = _layout_filter(shape, alpha, tilt)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("shape", [(6, 5, 3, 3), (1, 6, 1, 7), (7, 6, 2, 4), (4, 1, 5, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transposed_passes_equal_rfftn_and_irfftn(shape, dtype):
    a, b = _rand(*shape, seed=1, dtype=dtype), _rand(*shape, seed=2, dtype=dtype)
    expected = crossover.whole_tensor_crossover(a, b, 0.4, 0.3)
    result = raw("crossover", a, b, alpha=0.4, tilt=0.3)
    assert result.dtype == dtype
    assert torch.allclose(result, expected, atol=1e-5 if dtype == torch.float32 else 1e-12)


def _kept_filters(work):
    """The filters a workspace's caches keep for this thread."""
    return work.per_thread(crossover.FilterStore).filters


@pytest.fixture
def merge_workspace():
    """A workspace whose caches last across calls, as those of one merge do."""
    return Workspace(caches=ThreadCaches())


def test_kept_filters_serve_only_their_own_shape_alpha_and_tilt(merge_workspace, monkeypatch):
    monkeypatch.setattr(crossover, "FILTERS_KEPT", 2)  # evictions, and memory reused between filters
    calls = [((20, 30), 0.3, 0.0), ((20, 30), 0.4, 0.0), ((20, 30), 0.4, 0.5), ((30, 20), 0.4, 0.5),
             ((20, 30, 1), 0.4, 0.5), ((20, 30), 0.3, 0.0), ((20, 30), 0.4, 0.5), ((20, 15, 2), 0.4, 0.5)]
    for shape, alpha, tilt in calls:
        a, b = _rand(*shape, seed=3, dtype=torch.float32), _rand(*shape, seed=4, dtype=torch.float32)
        result = raw("crossover", a, b, alpha=alpha, tilt=tilt, workspace=merge_workspace)
        fresh = raw("crossover", a, b, alpha=alpha, tilt=tilt, workspace=Workspace(caches=ThreadCaches()))
        assert torch.equal(result, fresh), (shape, alpha, tilt)
    assert len(_kept_filters(merge_workspace)) == 2


def test_a_kept_filter_is_not_computed_again(merge_workspace, monkeypatch):
    built = []
    original = crossover.filter_blocks
    monkeypatch.setattr(crossover, "filter_blocks", lambda *args: built.append(args[1:3]) or original(*args))
    a, b = _rand(16, 12, 3, 3, seed=1, dtype=torch.float32), _rand(16, 12, 3, 3, seed=2, dtype=torch.float32)
    first = raw("crossover", a, b, alpha=0.3, workspace=merge_workspace)
    assert torch.equal(raw("crossover", a, b, alpha=0.3, workspace=merge_workspace), first)
    raw("crossover", a, b, alpha=0.6, workspace=merge_workspace)
    assert built == [(0.3, 0.0), (0.6, 0.0)]
    raw("crossover", a, b, alpha=0.3)  # a direct call without a merge's workspace keeps nothing
    assert built == [(0.3, 0.0), (0.6, 0.0), (0.3, 0.0)]


def test_big_filters_are_not_kept(merge_workspace, monkeypatch):
    monkeypatch.setattr(crossover, "FILTER_CACHE_BYTES", 1000)
    a, b = _rand(30, 40, seed=1, dtype=torch.float32), _rand(30, 40, seed=2, dtype=torch.float32)
    raw("crossover", a, b, alpha=0.3, workspace=merge_workspace)
    assert not _kept_filters(merge_workspace)


def test_batches_of_long_transforms_with_a_large_prime_factor_run_one_by_one():
    assert batches_slowly(49408) and batches_slowly(12352)
    assert not batches_slowly(4099) and not batches_slowly(49152) and not batches_slowly(1280)
    x = torch.randn(3, 12352, dtype=torch.complex128)
    assert torch.allclose(fft_along(x, 1, inverse=False), torch.fft.fft(x, dim=1))
    assert torch.allclose(fft_along(x, 1, inverse=True), torch.fft.ifft(x, dim=1))


# irfftn of these float32 shapes aborts the process in torch 2.13's MKL backend (heap
# corruption in its multi-dimensional complex stage, whose batch is the halved last dimension)
HEAP_CORRUPTING_IRFFTN_SHAPES = [(9, 640, 640), (9, 512, 512), (11, 640, 640)]


def test_crossover_survives_shapes_where_irfftn_corrupts_the_heap():
    # one intra-op thread, as in a merge: with two on a loaded machine the first shape's result
    # (or its float64 reference) sometimes differed by ~1e-4 in a few dozen elements (see the
    # fourth session's closing note; not yet explained)
    script = textwrap.dedent(f"""
        import torch
        from lib_mecha.methods.crossover import crossover, crossover_filter
        torch.set_num_threads(1)
        torch.manual_seed(0)
        for shape in {HEAP_CORRUPTING_IRFFTN_SHAPES!r}:
            a, b = torch.randn(shape), torch.randn(shape)
            result = crossover.__wrapped__(a, b, 0.4, 0.3).double()
            # the same filter with one-dimensional transforms only, in float64
            d = (b - a).double()
            spectrum = torch.fft.rfft(d, dim=2)
            for dim in (1, 0):
                spectrum = torch.fft.fft(spectrum, dim=dim)
            spectrum *= crossover_filter(spectrum.shape, 0.4, 0.3)
            for dim in (0, 1):
                spectrum = torch.fft.ifft(spectrum, dim=dim)
            expected = torch.fft.irfft(spectrum, n=shape[2], dim=2) + a.double()
            assert (result - expected).abs().max() < 1e-4, shape
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    assert run.stdout.strip() == "ok"


def test_the_callers_cached_filters_go_when_its_merge_ends(tmp_path):
    """With threads=0 the calling thread merges the keys itself, and in a WebUI it lives on:
    crossover's per-thread caches must not keep key-sized memory after the merge."""
    import dataclasses
    import weakref

    from safetensors.torch import save_file

    import lib_mecha as mecha
    from lib_mecha.methods import build, register, resolve
    g = torch.Generator().manual_seed(2)
    for name in "ab":
        save_file({"w": torch.randn(64, 48, 3, 3, generator=g)}, str(tmp_path / f"{name}.safetensors"))
    spec, kept = resolve("crossover"), []

    def spying(*args, work, **kwargs):
        result = spec.func(*args, work=work, **kwargs)
        kept.extend(weakref.ref(f) for f in _kept_filters(work).values())
        return result

    register(dataclasses.replace(spec, func=spying), replace=True)
    try:
        mecha.merge(build("crossover", mecha.model("a"), mecha.model("b"), alpha=0.3), model_dirs=[tmp_path],
                    threads=0)
    finally:
        register(spec, replace=True)
    assert kept  # the merge did cache on this thread
    assert all(ref() is None for ref in kept)


def test_the_spectra_are_memory_lent_by_the_workspace():
    """Key-sized spectra come from the workspace (the engine's reused memory during a merge), and
    the result is the same as with fresh memory."""
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(40, 24, 3, 3, generator=g), torch.randn(40, 24, 3, 3, generator=g)
    fresh = crossover.crossover.spec.func(a, b, alpha=0.4, tilt=0.3)
    lent = []

    class Lending(Workspace):
        def empty(self, numel, dtype, device=None):
            lent.append(dtype)
            return torch.full((numel,), float("nan"), dtype=dtype)  # garbage that must be overwritten

    result = crossover.crossover.spec.func(a, b, alpha=0.4, tilt=0.3, work=Lending())
    assert lent.count(torch.complex64) == 2
    assert torch.equal(result, fresh)
