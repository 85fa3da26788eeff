"""Host detection by features, the standalone host, and the path rules."""
from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest

from host_stub import stand_in
from lib_mecha.errors import Busy, HostError, OutputExists, PathEscape
from lib_mecha.host.base import MergeIdentity, PreviewParams
from lib_mecha.host.detect import detect_flavour, make_host
from lib_mecha.host.paths import is_inside, is_listed_under, output_path, require_model_file


def test_detects_the_stand_in_flavours(webui):
    assert detect_flavour() == webui.flavour
    assert make_host().name == webui.flavour


def test_detects_forge1_by_ldm_patched(a1111, monkeypatch):
    fake = types.ModuleType("ldm_patched")
    fake.__spec__ = importlib.machinery.ModuleSpec("ldm_patched", None)
    monkeypatch.setitem(sys.modules, "ldm_patched", fake)
    assert detect_flavour() == "forge1"
    assert make_host().name == "forge1"


def test_detects_neo_by_its_version_and_missing_load_model(forge, monkeypatch):
    from modules import sd_models
    from modules_forge import forge_version
    monkeypatch.setattr(forge_version, "version", "neo")
    monkeypatch.delattr(sd_models, "load_model")
    assert detect_flavour() == "neo"
    host = make_host()
    from modules import shared
    shared.cmd_opts.ckpt_dirs = [str(forge.root / "more")]
    assert host.checkpoint_dirs()[0] == forge.root / "more"


def test_standalone_without_a_webui(tmp_path):
    stand_in.purge()
    assert detect_flavour() == "standalone"
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "a.safetensors").write_bytes(b"x")
    host = make_host(checkpoint_dirs=[tmp_path / "ckpt"], data_dir=tmp_path / "data")
    assert [r.label for r in host.list_checkpoints()] == ["a.safetensors"]
    assert host.resolve_checkpoint("a").path == str(tmp_path / "ckpt" / "a.safetensors")
    with pytest.raises(HostError, match="needs a WebUI"):
        host.hot_load(None, MergeIdentity.from_recipe("x"), None)
    with pytest.raises(HostError):
        host.generate(PreviewParams())
    assert host.option("mecha_threads") == 2
    assert host.run_exclusive(lambda x: x + 1, 1) == 2
    host._lock.acquire()
    with pytest.raises(Busy):
        host.run_exclusive(lambda: None)


def test_catalogue_resolves_labels_names_and_paths(webui):
    host = make_host()
    ref = host.resolve_checkpoint("model-b")
    assert ref.path == str(webui.b)
    assert host.resolve_checkpoint(str(webui.b)).name == "model-b.safetensors"
    assert host.resolve_checkpoint("missing-model") is None
    (webui.root / "models" / "Lora" / "style.safetensors").write_bytes(b"x")
    assert [r.label for r in host.list_loras()] == ["style"]
    assert webui.ckpt_dir in host.model_roots()


def test_save_folder_setting_must_stay_inside(webui):
    from modules import shared
    host = make_host()
    assert host.default_save_dir() == webui.ckpt_dir
    shared.opts.data["mecha_save_dir"] = "merges"
    assert host.default_save_dir() == webui.ckpt_dir / "merges"
    shared.opts.data["mecha_save_dir"] = "../../elsewhere"
    with pytest.raises(PathEscape, match="mecha_save_dir"):
        host.default_save_dir()


def test_output_path_rules(tmp_path):
    root = tmp_path / "models"
    (root / "sub").mkdir(parents=True)
    assert output_path("mix", root, [root]) == root / "mix.safetensors"
    assert output_path("sub/mix.safetensors", root, [root]) == root / "sub" / "mix.safetensors"
    (root / "mix.safetensors").write_bytes(b"x")
    with pytest.raises(OutputExists):
        output_path("mix", root, [root])
    assert output_path("mix", root, [root], overwrite=True) == root / "mix.safetensors"
    for bad in ("../mix", "/etc/mix", "sub/../../mix", "", "C:/x", "\\\\server\\share"):
        with pytest.raises(PathEscape):
            output_path(bad, root, [root])
    with pytest.raises(PathEscape):
        output_path("mix", tmp_path, [root])


def test_symlinks_out_of_the_model_folders_are_outside(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(b"x")
    (root / "link.safetensors").symlink_to(outside)
    assert not is_inside(root / "link.safetensors", [root])
    assert is_inside(root / "x.safetensors", [root])


def test_a_link_inside_the_model_folders_is_an_input_wherever_it_leads(tmp_path):
    root = tmp_path / "models"
    store = tmp_path / "store"
    (store / "deep").mkdir(parents=True)
    (store / "m.safetensors").write_bytes(b"x")
    root.mkdir()
    (root / "m.safetensors").symlink_to(store / "m.safetensors")
    (root / "linked").symlink_to(store / "deep", target_is_directory=True)
    assert require_model_file(root / "m.safetensors", [root]) == root / "m.safetensors"
    assert is_listed_under(root / "linked" / "x.safetensors", [root])
    assert is_listed_under(root / "x.safetensors", [root])
    for outside in (store / "m.safetensors", root / "linked" / ".." / "m.safetensors", tmp_path / "models2" / "x",
                    root / ".." / "store" / "m.safetensors"):
        assert not is_listed_under(outside, [root])
        with pytest.raises(PathEscape, match="is outside the model folders"):
            require_model_file(outside, [root])
    # where files are written, links are followed: the link leads outside
    assert not is_inside(root / "m.safetensors", [root])
