"""The Mecha axes in the host's X/Y/Z plot (tests/webui_stub/scripts/xyz_grid.py, modelled on
A1111's and Forge's scripts/xyz_grid.py), against the stand-in A1111 and Forge 2.x: axes added
once, value syntax, cell order, every cell hot-loaded, the model put back after the grid (also
after an error in a cell), and each cell's infotext naming its full recipe."""
from __future__ import annotations

import pytest
import torch

import lib_mecha
from lib_mecha.errors import MechaError
from lib_mecha.host.base import MergeIdentity
from lib_mecha.host.recipes import INFOTEXT_KEY

from host_stub import Grid, options

ALPHA1 = "Mecha: alpha (step 1)"
SD1 = "sd1-supermerger_blocks"


def ws(alpha=0.5, **blocks):
    value = lib_mecha.blocks(SD1, blocks, default=alpha) if blocks else alpha
    return lib_mecha.weighted_sum(lib_mecha.model("model-a.safetensors"), lib_mecha.model("model-b.safetensors"),
                                  alpha=value)


def load(host, recipe, name="base"):
    ident = MergeIdentity.from_recipe(lib_mecha.serialize(recipe), name)
    host.hot_load(recipe, ident, options(host))
    return ident


def recipe_of(host, infotext):
    """The full recipe a cell's ``Mecha recipe: <id>`` names."""
    from modules import infotext_utils
    recipe_id = infotext_utils.parse_generation_parameters(infotext)[INFOTEXT_KEY]
    return lib_mecha.deserialize(host.recipes.lookup(recipe_id))


def one_by_one(webui, host, recipes):
    """Each recipe hot-loaded as Merge & load would, and generated as the grid's cells are."""
    out = []
    for r in recipes:
        load(host, r, "one by one")
        out.append(webui.pixels())
    return out


# --- the axes -----------------------------------------------------------------------------------

def test_fixed_labels_are_added_once_also_after_reload_ui(webui):
    from modules import script_callbacks, scripts
    grid = Grid()
    ours = [label for label in grid.labels if label.startswith("Mecha: ")]
    steps = range(1, 5)
    assert ours == [f"Mecha: alpha (step {n})" for n in steps] + [
        "Mecha: parameter", "Mecha: block weights", "Mecha: recipe"] + [f"Mecha: method (step {n})" for n in steps]
    script_callbacks.fire("before_ui")                 # fired again: nothing added twice
    assert [o.label for o in grid.xyz.axis_options].count(ALPHA1) == 1
    # Reload UI: the scripts run again (a fresh X/Y/Z module and list), then on_before_ui again
    script_callbacks.script_unloaded_callback()
    scripts.scripts_data.clear()                       # modules/scripts.py load_scripts starts afresh
    script_callbacks.clear_callbacks()
    again = Grid()
    assert again.xyz is not grid.xyz
    assert [o.label for o in again.xyz.axis_options].count(ALPHA1) == 1 and ALPHA1 in again.labels


def test_without_the_xyz_script_or_with_another_one_nothing_breaks(webui, tmp_path, caplog):
    import shutil
    from modules import script_callbacks, scripts
    from host_stub import ROOT, SCRIPT
    renamed = tmp_path / "my_grid.py"
    shutil.copy(scripts.HOST_SCRIPTS + "/xyz_grid.py", renamed)
    module = scripts.load_module(str(renamed))         # the same script under another file name
    scripts._register_classes(module, renamed, tmp_path)
    scripts.load_extension_script(SCRIPT, ROOT)
    script_callbacks.fire("before_ui")
    assert not any(o.label.startswith("Mecha") for o in module.axis_options)
    assert script_callbacks.ui_tabs_callback()         # the tab is still built
    # the X/Y/Z module under its own name, with an AxisOption of other arguments
    xyz = scripts.load_host_script("xyz_grid.py")
    xyz.AxisOption = lambda label, type, apply: None
    script_callbacks.fire("before_ui")
    assert not any(getattr(o, "label", "").startswith("Mecha") for o in xyz.axis_options)
    assert "AxisOption differs" in caplog.text


# --- cells --------------------------------------------------------------------------------------------

def test_alpha_cells_are_the_merges_hot_loaded_one_by_one_and_the_merge_is_back_after(webui):
    grid = Grid()
    host = grid.host
    webui.pixels()
    base = load(host, ws(0.5), "my merge")
    before = webui.pixels()
    out = grid.run((ALPHA1, "0.2, 0.4,0.6"))
    images, infotexts = grid.cells(out)
    assert len(images) == 3 and len(set(images)) == 3
    assert host.hot_loaded() == base and webui.pixels() == before           # the merge is back
    report = host.grid_report()
    assert report["state"] == "done" and len(report["cells"]) == 3 and report["restore"]["error"] is None
    expected = [host.pin_seeds(ws(a)) for a in (0.2, 0.4, 0.6)]
    assert [recipe_of(host, t) for t in infotexts] == expected              # the id names the full recipe
    assert [f"{INFOTEXT_KEY}: {c['recipe_id']}" in t for c, t in zip(report["cells"], infotexts)] == [True] * 3
    assert one_by_one(webui, host, expected) == images


@pytest.mark.parametrize("label,text,alphas", [
    (ALPHA1, "0-1 (+0.25)", [0, 0.25, 0.5, 0.75, 1]),
    (ALPHA1, "0.1-0.3 [3]", [0.1, 0.2, 0.3]),
    ("Mecha: parameter", "1.alpha=0.2, 1.alpha=0.35", [0.2, 0.35]),
    ("Mecha: parameter", "1.alpha=0-0.5 [3]", [0, 0.25, 0.5]),
])
def test_value_syntax(webui, label, text, alphas):
    grid = Grid()
    webui.pixels()
    load(grid.host, ws(0.5))
    _, infotexts = grid.cells(grid.run((label, text)))
    got = [recipe_of(grid.host, t).argument("alpha").value for t in infotexts]
    assert got == pytest.approx(alphas) and len(got) == len(alphas)


def test_the_costliest_axis_runs_outermost_so_each_merge_is_done_once(webui):
    grid = Grid()
    webui.pixels()
    load(grid.host, ws(0.5))
    grid.run(("Seed", "1, 2"), (ALPHA1, "0.2, 0.4"))   # X: seed (cost 0), Y: alpha (0.85)
    assert grid.cells_run() == [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)]
    merged = [c["keys_merged"] for c in grid.host.grid_report()["cells"]]
    assert merged[0] > 0 and merged[1] == 0 and merged[2] > 0 and merged[3] == 0
    grid.xyz.cells_run.clear()
    grid.run((ALPHA1, "0.2, 0.4"), ("Mecha: block weights", "1.alpha=GRAD_V|1.alpha=GRAD_A"), csv_mode=True)
    assert grid.cells_run() == [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)]    # X (0.85) outside Y (0.75)


def test_two_mecha_axes_make_one_hot_load_per_cell(webui):
    grid = Grid()
    webui.pixels()
    load(grid.host, ws(0.5))
    out = grid.run(("Mecha: method (step 1)", "", ["weighted_sum", "slerp"]), (ALPHA1, "0.3, 0.6"))
    _, infotexts = grid.cells(out)
    a, b = lib_mecha.model("model-a.safetensors"), lib_mecha.model("model-b.safetensors")
    expected = [lib_mecha.weighted_sum(a, b, alpha=0.3), lib_mecha.slerp(a, b, alpha=0.3),
                lib_mecha.weighted_sum(a, b, alpha=0.6), lib_mecha.slerp(a, b, alpha=0.6)]
    assert [recipe_of(grid.host, t) for t in infotexts] == expected
    assert len(grid.host.grid_report()["cells"]) == 4


def test_block_weights_presets_lists_and_one_changed_block(webui):
    from lib_mecha.arch.presets import preset
    grid = Grid()
    webui.pixels()
    load(grid.host, ws(0.5, IN00=0.2))
    ones = " ".join(["1"] * 26)
    changed = ",".join(["0.5"] + ["0.9"] + ["0.5"] * 24)     # IN00 0.9, the rest 0.5
    out = grid.run(("Mecha: block weights", f'GRAD_V, "{changed}", {ones}'), csv_mode=True)
    recipes = [recipe_of(grid.host, t) for t in grid.cells(out)[1]]
    assert recipes[0] == ws(0.5, **preset(SD1, "GRAD_V").as_dict())
    assert recipes[1] == ws(0.5, **{b: (0.9 if b == "IN00" else 0.5) for b in preset(SD1, "GRAD_V").as_dict()})
    assert recipes[2] == ws(0.5, **dict.fromkeys(preset(SD1, "GRAD_V").as_dict(), 1.0))
    # a grid over one block's weight re-merges only that block's keys
    flat = preset(SD1, "FLAT_25").as_dict()
    load(grid.host, ws(0.5, **flat))
    grid.run(("Mecha: block weights", " | ".join(
        ",".join(str(v if b == "IN00" else flat[b]) for b in flat) for v in (0.1, 0.2, 0.3))), csv_mode=True)
    cells = grid.host.grid_report()["cells"]
    in00 = sum(1 for k in _keys() if ".input_blocks.0." in k)
    assert [c["keys_merged"] for c in cells] == [in00] * 3 and cells[0]["keys_total"] > in00
    # the same through Mecha: parameter, naming the block
    out = grid.run(("Mecha: parameter", "1.alpha.IN00=0.1-0.3 [3]"))
    assert [c["keys_merged"] for c in grid.host.grid_report()["cells"]] == [in00] * 3
    assert recipe_of(grid.host, grid.cells(out)[1][2]) == ws(0.5, **{**flat, "IN00": 0.3})


def _keys():
    from modules import _net
    return list(_net.LAYOUT)


def test_recipe_files_with_the_original_loaded_give_the_original_back(webui):
    from lib_mecha.host.xyz_axes import recipes_folder
    grid = Grid()
    host = grid.host
    original = webui.pixels()
    folder = recipes_folder(host)
    (folder / "warm").mkdir(parents=True)
    (folder / "cool.mecha").write_text(lib_mecha.serialize(ws(0.3)), encoding="utf-8")
    (folder / "warm" / "hot.mecha").write_text(lib_mecha.serialize(ws(0.8)), encoding="utf-8")
    choices = next(o for o in grid.script.current_axis_options if o.label == "Mecha: recipe").choices()
    assert choices == ["cool", "warm/hot"]
    out = grid.run(("Mecha: recipe", "", ["cool", "warm/hot.mecha"]))
    images, infotexts = grid.cells(out)
    assert [recipe_of(host, t) for t in infotexts] == [ws(0.3), ws(0.8)]
    assert host.hot_loaded() is None and webui.pixels() == original
    assert one_by_one(webui, host, [ws(0.3), ws(0.8)]) == images


# --- errors in a cell -----------------------------------------------------------------------------------

@pytest.fixture()
def exploding():
    """weighted_sum that fails part-way when ``k`` is above 0.5 (a merge error in a cell)."""
    from lib_mecha.methods import Float, Tensor, merge_method, unregister
    from lib_mecha.methods.spec import SAME

    @merge_method(label="Explodes", category="test", elementwise=True)
    def explodes_above_half(a=Tensor(SAME), b=Tensor(SAME), k=Float(0.5, minimum=0.0, maximum=1.0)):
        if k > 0.5 and a.ndim == 4:
            raise RuntimeError("the test method exploded")
        return a + (b - a) * k
    yield lambda k: explodes_above_half(lib_mecha.model("model-a.safetensors"), lib_mecha.model("model-b.safetensors"),
                                        k=k)
    unregister("explodes_above_half")


def test_a_merge_error_in_a_cell_ends_the_grid_and_the_merge_is_back(webui, exploding):
    grid = Grid()
    webui.pixels()
    base = load(grid.host, exploding(0.5))
    before = webui.pixels()
    with pytest.raises(MechaError, match="the test method exploded"):
        grid.run(("Mecha: parameter", "1.k=0.2, 1.k=0.9, 1.k=0.3"))
    assert grid.cells_run() == [(0, 0, 0)]                 # the second cell never generated
    assert grid.host.hot_loaded() == base and webui.pixels() == before
    report = grid.host.grid_report()
    assert len(report["cells"]) == 1 and report["restore"]["error"] is None and report["restore"]["keys"] > 0


def test_an_error_in_a_cells_generation_leaves_that_cell_empty_and_the_merge_is_back(webui, monkeypatch):
    from modules import processing, scripts
    grid = Grid()
    webui.pixels()
    base = load(grid.host, ws(0.5))
    before = webui.pixels()
    generate = processing.process_images

    def fails_for_seed_666(p):
        if p.seed == 666:
            raise RuntimeError("sampling failed")
        return generate(p)
    monkeypatch.setattr(processing, "process_images", fails_for_seed_666)
    out = grid.run((ALPHA1, "0.2, 0.4"), ("Seed", "7, 666"))
    assert [type(e).__name__ for _, e in scripts.errors_reported] == ["RuntimeError"] * 2
    assert grid.cells(out)[1][2:] == ["", ""]
    monkeypatch.setattr(processing, "process_images", generate)
    assert grid.host.hot_loaded() == base and webui.pixels() == before


def test_an_unclosed_grid_is_finished_by_the_next_grid_and_dropped_by_a_user_hot_load(webui):
    from copy import copy
    from modules import processing
    grid = Grid()
    host = grid.host
    webui.pixels()
    base = load(host, ws(0.5))
    before = webui.pixels()
    option = next(o for o in grid.script.current_axis_options if o.label == ALPHA1)

    def unclosed_cell(alpha):
        """A request whose p is never closed: the axis's confirm, then one cell."""
        p = processing.StableDiffusionProcessingTxt2Img(prompt="a cat", seed=7, steps=1, width=8, height=8)
        option.confirm(p, [alpha])
        option.apply(copy(p), alpha, [alpha])
        return p
    unclosed_cell(0.9)
    assert host.hot_loaded() != base
    grid.run((ALPHA1, "0.3"))                              # the next grid first puts the merge back
    assert host.hot_loaded() == base and webui.pixels() == before
    p = unclosed_cell(0.8)
    load(host, ws(0.1), "user")                            # the user's hot-load replaces the grid's
    p.close()                                              # (were it closed after all: nothing put back)
    assert host.hot_loaded().display_name == "user"
    assert host.grid_report()["restore"]["dropped"]


def test_a_cells_merge_is_in_the_models_storage_dtype_like_merge_and_load(webui):
    """Cells take the loaded merge's options (dtype, budget), so a cell is what Merge & load of
    its recipe gives."""
    from modules import devices
    devices.dtype = torch.float32
    grid = Grid()
    webui.pixels()
    load(grid.host, ws(0.5))
    images, _ = grid.cells(grid.run((ALPHA1, "0.37")))
    assert one_by_one(webui, grid.host, [ws(0.37)]) == images
