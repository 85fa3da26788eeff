"""scripts/mecha.py loaded the way the WebUI loads it, against the stand-in, with real gradio."""
from __future__ import annotations

import sys
import types

import gradio as gr
import pytest
import torch

from host_stub import ROOT, hot_load

SCRIPT = ROOT / "scripts" / "mecha.py"


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def load_script():
    from modules import scripts
    return scripts.load_extension_script(SCRIPT, ROOT)


def test_loads_by_file_name_outside_sys_modules_and_leaves_sys_path(webui):
    before = list(sys.path)
    module = load_script()
    assert module.__name__ == "mecha.py"          # spec_from_file_location(basename, path)
    assert "mecha.py" not in sys.modules
    assert sys.path == before                     # the extension root was on sys.path only meanwhile
    assert "lib_mecha" in sys.modules             # imported at top level, while the root was there


def test_registers_callbacks_and_an_always_visible_script(webui):
    from modules import script_callbacks, scripts
    load_script()
    for event in ("ui_settings", "ui_tabs", "app_started", "model_loaded", "script_unloaded"):
        assert len(script_callbacks.callbacks[event]) == 1, event
    classes = [cls for cls, *_ in scripts.scripts_data]
    assert [c.__name__ for c in classes] == ["MechaRecipeInfotext"]
    assert classes[0]().show(False) is scripts.AlwaysVisible


def test_settings_registered_with_prefix_and_readable_before_registration(webui):
    from lib_mecha.host import extension, settings
    from modules import script_callbacks, shared
    load_script()
    host = extension.current_host()
    # API-only mode never runs on_ui_settings: defaults must still come back
    assert settings.read(host, "mecha_threads") == 2
    assert "mecha_threads" not in shared.opts.data_labels
    script_callbacks.fire("ui_settings")
    keys = [k for k in shared.opts.data_labels if k.startswith("mecha_")]
    assert sorted(keys) == sorted(o.key for o in settings.OPTIONS)
    assert all(shared.opts.data_labels[k].section == ("mecha", "Mecha") for k in keys)
    shared.opts.data["mecha_threads"] = 5
    assert settings.merge_option_values(host)["threads"] == 5


@pytest.mark.skipif(torch.cuda.is_available() or mps_available(), reason="about a machine with no GPU")
def test_the_merge_device_setting_offers_only_the_cpu_on_a_machine_without_gpu(webui):
    # the Settings page makes the OptionInfo's component with its component_args (A1111
    # modules/ui_settings.py, create_setting_component: `args = info.component_args() if
    # callable(info.component_args) else info.component_args`)
    from modules import script_callbacks, shared
    load_script()
    script_callbacks.fire("ui_settings")
    assert shared.opts.data_labels["mecha_merge_device"].component_args == {"choices": ["auto", "cpu"]}


def test_the_merge_device_choices_come_from_torch(monkeypatch):
    from lib_mecha.host import settings
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert settings.device_choices() == ("auto", "cpu", "cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert settings.device_choices() == ("auto", "cpu", "cuda", "cuda:0", "cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert settings.device_choices() == ("auto", "cpu", "mps")
    registered = {o.key: o for o in settings.options()}
    assert registered["mecha_merge_device"].choices == ("auto", "cpu", "mps")


def test_the_vram_budget_setting_reaches_the_merge_options(webui):
    import lib_mecha
    from lib_mecha.errors import ParameterError
    from lib_mecha.host import extension, settings
    from modules import shared
    load_script()
    host = extension.current_host()
    assert settings.merge_option_values(host)["vram_budget_mb"] is None  # 0, the default: half the free VRAM
    shared.opts.data["mecha_vram_budget_mb"] = 3000
    assert lib_mecha.MergeOptions(**settings.merge_option_values(host)).vram_budget_mb == 3000
    shared.opts.data["mecha_vram_budget_mb"] = -1
    with pytest.raises(ParameterError, match="vram_budget_mb': must be more than 0, got -1"):
        lib_mecha.MergeOptions(**settings.merge_option_values(host))


def test_tab_comes_from_lib_mecha_ui_when_it_exists(webui, monkeypatch):
    from modules import script_callbacks
    load_script()
    seen = {}

    def create_tab(host):
        seen["host"] = host
        with gr.Blocks(analytics_enabled=False) as blocks:
            gr.Markdown("mecha")
        return blocks

    fake_ui = types.ModuleType("lib_mecha.ui")
    fake_ui.create_tab = create_tab
    monkeypatch.setitem(sys.modules, "lib_mecha.ui", fake_ui)
    tabs = script_callbacks.ui_tabs_callback()
    assert len(tabs) == 1
    blocks, title, elem_id = tabs[0]
    assert isinstance(blocks, gr.Blocks) and (title, elem_id) == ("Mecha", "mecha")
    assert seen["host"].name == webui.flavour


def test_no_tab_without_a_ui_module(webui, monkeypatch):
    from modules import script_callbacks
    load_script()
    monkeypatch.setitem(sys.modules, "lib_mecha.ui", types.ModuleType("lib_mecha.ui"))
    assert script_callbacks.ui_tabs_callback() == []


def test_unload_restores_the_merge_and_drops_state(webui):
    from lib_mecha.host import extension
    from modules import script_callbacks
    load_script()
    host = extension.current_host()
    original = webui.pixels()
    hot_load(host, webui, 5, "unload test")
    assert webui.pixels() != original
    script_callbacks.script_unloaded_callback()
    assert extension.current_host() is None
    assert webui.pixels() == original
    assert host.hot_loaded() is None


def test_recipe_id_added_to_txt2img_infotext_while_a_merge_is_loaded(webui):
    from lib_mecha.host import extension
    from modules import processing, scripts
    load_script()
    webui.pixels()  # a model is loaded, as after any generation
    script = scripts.scripts_data[0][0]()
    p = processing.StableDiffusionProcessingTxt2Img(prompt="x", seed=1, steps=1, width=8, height=8)
    script.process(p)
    assert "Mecha recipe" not in p.extra_generation_params
    ident = hot_load(extension.current_host(), webui, 6, "infotext test").ident
    script.process(p)
    assert p.extra_generation_params["Mecha recipe"] == ident.short_id
