"""Presets load, cover their layout exactly, carry one-line descriptions, and keep the published figures."""
import math

import pytest

import lib_mecha.arch as arch
from lib_mecha.arch.presets import PRESET_MODULES, preset, presets
from lib_mecha.errors import ArchitectureMismatch, ParameterError


@pytest.mark.parametrize("layout_id", sorted(PRESET_MODULES))
def test_presets_cover_their_layout(layout_id):
    layout = arch.resolve_layout(layout_id)
    found = presets(layout_id)
    assert len(found) >= 10
    for name, p in found.items():
        assert p.name == name and p.layout == layout_id
        assert [b for b, _ in p.values] == list(layout.blocks), name
        assert all(isinstance(v, float) and math.isfinite(v) and -0.5 <= v <= 1.5 for _, v in p.values), name
        assert p.description and "\n" not in p.description and len(p.description) < 120, name


def test_every_layout_has_presets():
    assert set(PRESET_MODULES) == set(arch.layout_ids())


def test_classic_sd1_figures():
    p = {n: preset("sd1-supermerger_blocks", n).as_dict() for n in
         ("GRAD_V", "GRAD_A", "WRAP08", "MID12_50", "OUT12_5", "RING10_3", "SMOOTHSTEP", "SMOOTHSTEP*3",
          "SMOOTHSTEP/2", "COSINE", "FAKE_CUBIC_HERMITE", "TRUE_CUBIC_HERMITE", "ALL_B")}
    assert p["GRAD_V"]["IN00"] == 1 and p["GRAD_V"]["M00"] == 0 and p["GRAD_V"]["IN01"] == pytest.approx(11 / 12)
    assert p["GRAD_A"]["OUT10"] == pytest.approx(1 / 12)
    assert [p["WRAP08"][b] for b in ("IN03", "IN04", "OUT07", "OUT08")] == [1, 0, 0, 1]
    assert p["MID12_50"]["IN04"] == 0 and p["MID12_50"]["IN05"] == 0.5 and p["MID12_50"]["OUT05"] == 0.5
    assert p["MID12_50"]["OUT06"] == 0
    assert p["OUT12_5"]["M00"] == 0.5 and p["OUT12_5"]["OUT00"] == 1 and p["OUT12_5"]["IN11"] == 0
    assert [p["RING10_3"][b] for b in ("IN05", "IN06", "IN10", "IN11", "OUT00", "OUT01", "OUT05", "OUT06")] == \
        [0, 1, 1, 0, 0, 1, 1, 0]
    assert p["SMOOTHSTEP"]["IN01"] == pytest.approx(0.00506365740740741)
    assert p["SMOOTHSTEP*3"]["IN09"] == pytest.approx(0.94921875)
    assert p["SMOOTHSTEP*3"]["OUT02"] == pytest.approx(0.05078125)
    assert p["SMOOTHSTEP/2"]["OUT00"] == pytest.approx(0.980324074074074)
    assert p["COSINE"]["IN01"] == pytest.approx(0.995722430686905)
    assert p["FAKE_CUBIC_HERMITE"]["M00"] == pytest.approx(0.5)
    assert p["TRUE_CUBIC_HERMITE"]["M00"] == pytest.approx(0.520833333333333)
    assert all(v == 0 for b, v in preset("sd1-supermerger_blocks", "SMOOTHSTEP").values if b == "BASE")
    assert set(p["ALL_B"].values()) == {1.0}


def test_sdxl_presets_follow_sdxl_levels():
    core = preset("sdxl-supermerger_blocks", "CORE").as_dict()
    assert [b for b, v in core.items() if v == 1] == ["IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02"]
    assert core["VAE"] == 0 and core["BASE"] == 0
    assert preset("sdxl-supermerger_blocks", "VAE_B").as_dict()["VAE"] == 1


def test_preset_of_another_layout_is_a_clear_error():
    with pytest.raises(ArchitectureMismatch) as e:
        preset("sdxl-supermerger_blocks", "RING10_3")
    assert e.value.format_message() == (
        "preset 'RING10_3' is for sd1-supermerger_blocks, sd2-supermerger_blocks, sdxl_refiner-mecha_blocks, "
        "not sdxl-supermerger_blocks (presets of sdxl-supermerger_blocks: ALL_A, ALL_B, UNET_B, TEXT_B, "
        "FLAT_25, FLAT_50, ...)")
    with pytest.raises(ArchitectureMismatch, match="preset 'DOUBLE_B' is for flux-mecha_blocks, not sd3-mecha_blocks"):
        preset("sd3-mecha_blocks", "DOUBLE_B")
    with pytest.raises(ArchitectureMismatch, match="preset 'CORE_SOFT' is for sdxl-supermerger_blocks"):
        arch.blocks("sd1-supermerger_blocks", "CORE_SOFT")


def test_unknown_preset_suggests():
    with pytest.raises(ParameterError, match="has no preset 'GRAD_W'.*did you mean 'GRAD_V'"):
        preset("sd1-supermerger_blocks", "GRAD_W")


def test_blocks_accepts_a_preset_name():
    node = arch.blocks("sd1-supermerger_blocks", "GRAD_V")
    assert node.method == "convert_sd1_blocks_to_ldm"
    assert node.args[0].mapping == preset("sd1-supermerger_blocks", "GRAD_V").as_dict()
    assert node.args[0].model_config == "sd1-supermerger_blocks"
