"""Bad values on the Mecha axes of the X/Y/Z plot: one clear message before the grid starts,
nothing generated, and the loaded model unchanged (stand-in A1111 and Forge 2.x)."""
from __future__ import annotations

import pytest

import lib_mecha
from lib_mecha.errors import MechaError
from lib_mecha.host.base import MergeIdentity

from host_stub import Grid, options

A, B = lib_mecha.model("model-a.safetensors"), lib_mecha.model("model-b.safetensors")


def write_recipe(host, name, recipe):
    from lib_mecha.host.xyz_axes import recipes_folder
    folder = recipes_folder(host)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.mecha").write_text(lib_mecha.serialize(recipe), encoding="utf-8")


def other_architecture(webui):
    """A checkpoint of another network (its text encoder is twice as wide)."""
    import safetensors.torch
    import torch
    from modules import _net
    path = webui.ckpt_dir / "other.safetensors"
    sd = _net.random_checkpoint(5)
    key = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
    sd[key] = torch.ones(16, dtype=torch.float16)
    safetensors.torch.save_file(sd, str(path))
    return lib_mecha.model("other.safetensors")


CASES = {
    # id: (base recipe or None, axis label, values text, dropdown, csv mode, message)
    "no merge loaded": (None, "Mecha: alpha (step 1)", "0.2, 0.4", None, False,
                        r"Mecha: alpha \(step 1\): no merge is loaded"),
    "missing step": (lib_mecha.weighted_sum(A, B, alpha=0.5), "Mecha: alpha (step 2)", "0.2", None, False,
                     r"Mecha: alpha \(step 2\) = 0.2: the recipe has 1 step; there is no step 2"),
    "missing parameter": (lib_mecha.weighted_sum(A, B, alpha=0.5), "Mecha: parameter", "1.k=0.2", None, False,
                          r"Mecha: parameter = 1.k=0.2: weighted_sum: parameter 'k': no such parameter"),
    "not a step.parameter": (lib_mecha.weighted_sum(A, B, alpha=0.5), "Mecha: parameter", "k=0.2", None, False,
                             r"Mecha: parameter: 'k=0.2' does not name a step's parameter"),
    "out of range": (lib_mecha.crossover(A, B, alpha=0.5), "Mecha: alpha (step 1)", "0.5-1.5 [3]", None, False,
                     r"Mecha: alpha \(step 1\) = 1.5: crossover: parameter 'alpha': 1.5 is out of range; "
                     r"it must be in \[0.0, 1.0\]"),
    "not a number": (lib_mecha.weighted_sum(A, B, alpha=0.5), "Mecha: parameter", "1.alpha=high", None, False,
                     r"Mecha: parameter: 'high' is not a number or a range"),
    "preset of another architecture": (lib_mecha.weighted_sum(A, B, alpha=lib_mecha.blocks(
        "sd1-supermerger_blocks", "GRAD_V")), "Mecha: block weights", "", ["GRAD_V", "OUTER"], False,
        r"Mecha: block weights = OUTER: preset 'OUTER' is for sdxl-supermerger_blocks, not sd1-supermerger_blocks"),
    "no block weights to vary": (lib_mecha.weighted_sum(A, B, alpha=0.5), "Mecha: block weights", "", ["GRAD_V"],
                                 False, r"needs one parameter with block weights in the recipe \(none has\).*"
                                        r"1\.alpha=GRAD_V"),
    "recipe file missing": (None, "Mecha: recipe", "", ["good", "nowhere"], False,
                            r"Mecha: recipe = nowhere: recipe file nowhere.mecha not found in .*recipes there: "
                            r"good, other"),
    "recipe of another architecture": (None, "Mecha: recipe", "good, other", None, True,
                                       r"Mecha: recipe = other: cannot hot-load this cell's merge: key "
                                       r"'?cond_stage_model.*final_layer_norm.weight.*has shape \[16\], the loaded "
                                       r"model \(model-a.safetensors.*\) has \[8\]"),
    "method of other inputs": (lib_mecha.weighted_sum(A, B, alpha=0.5), "Mecha: method (step 1)", "",
                               ["slerp", "add_difference"], False,
                               r"Mecha: method \(step 1\) = add_difference: add_difference: parameter 'b' "
                               r"expects a delta but got a weight"),
    "method that gives a delta": (lib_mecha.weighted_sum(A, B, alpha=0.5), "Mecha: method (step 1)", "",
                                  ["subtract"], False,
                                  r"method 'subtract' does not fit step 1: it gives a delta where weighted_sum "
                                  r"gives a weight"),
    "unknown method": (lib_mecha.weighted_sum(A, B, alpha=0.5), "Mecha: method (step 1)", "", ["blend"], False,
                       r"unknown merge method 'blend'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_value_stops_the_grid_before_it_starts(webui, case):
    base, label, text, dropdown, csv_mode, message = CASES[case]
    grid = Grid()
    host = grid.host
    write_recipe(host, "good", lib_mecha.weighted_sum(A, B, alpha=0.3))
    write_recipe(host, "other", other_architecture(webui))
    webui.pixels()
    ident = None
    if base is not None:
        ident = MergeIdentity.from_recipe(lib_mecha.serialize(base), "base")
        host.hot_load(base, ident, options(host))
    before = webui.pixels()
    axis = (label, text, dropdown) if dropdown is not None else (label, text)
    with pytest.raises(MechaError, match=message):
        grid.run(axis, csv_mode=csv_mode)
    assert grid.cells_run() == []                          # nothing generated
    assert host.hot_loaded() == ident and webui.pixels() == before
    report = host.grid_report()                            # (none when the values did not parse)
    assert report is None or report["cells"] == []


def test_a_bad_combination_of_two_axes_is_found_before_the_grid(webui):
    """A recipe file with one step under an alpha axis over step 2: the cell that combines them
    is built before the grid starts."""
    grid = Grid()
    host = grid.host
    two_steps = lib_mecha.weighted_sum(lib_mecha.weighted_sum(A, B, alpha=0.5), A, alpha=0.2)
    write_recipe(host, "one", lib_mecha.weighted_sum(A, B, alpha=0.3))
    webui.pixels()
    host.hot_load(two_steps, MergeIdentity.from_recipe(lib_mecha.serialize(two_steps)), options(host))
    before = webui.pixels()
    with pytest.raises(MechaError, match=r"Mecha: alpha \(step 2\) = 0.4 with Mecha: recipe = one: the recipe has "
                                         r"1 step; there is no step 2"):
        grid.run(("Mecha: alpha (step 2)", "0.4"), ("Mecha: recipe", "", ["one"]))
    assert grid.cells_run() == [] and webui.pixels() == before


def test_a_merge_the_next_generation_would_drop_is_refused(webui):
    """The WebUI has another checkpoint selected: the grid would vary a merge it is about to drop."""
    from modules import shared
    grid = Grid()
    host = grid.host
    webui.pixels()
    base = lib_mecha.weighted_sum(A, B, alpha=0.5)
    host.hot_load(base, MergeIdentity.from_recipe(lib_mecha.serialize(base)), options(host))
    shared.opts.data["sd_model_checkpoint"] = "model-b.safetensors"
    if webui.flavour == "forge2":
        from modules_forge import main_entry
        main_entry.refresh_model_loading_parameters()
    with pytest.raises(MechaError, match="has model-b.safetensors selected and would load it for this grid"):
        grid.run(("Mecha: alpha (step 1)", "0.3"))
    assert grid.cells_run() == []


def test_an_axis_that_loads_another_checkpoint_is_refused_before_the_first_cell(webui):
    grid = Grid()
    host = grid.host
    webui.pixels()
    base = lib_mecha.weighted_sum(A, B, alpha=0.5)
    ident = MergeIdentity.from_recipe(lib_mecha.serialize(base))
    host.hot_load(base, ident, options(host))
    before = webui.pixels()
    with pytest.raises(MechaError, match="cannot be combined with the X/Y/Z plot's 'Checkpoint name' axis"):
        grid.run(("Mecha: alpha (step 1)", "0.3, 0.6"), ("Checkpoint name", "model-a.safetensors"))
    assert grid.cells_run() == [] and host.hot_loaded() == ident and webui.pixels() == before
