"""The input hash cache: where it lives, what it keeps, and that the tests never touch the real one."""
from __future__ import annotations

import json
import os

import torch
from safetensors.torch import save_file

import lib_mecha as mecha
from lib_mecha.engine import hashes


def entries():
    return json.loads(hashes.cache_file().read_text(encoding="utf-8"))


def test_a_merge_to_a_file_hashes_into_the_temporary_folder_not_the_real_home(sd1_dir, tmp_path,
                                                                              hash_cache_in_a_temporary_folder):
    mecha.merge(mecha.weighted_sum(mecha.model("a"), mecha.model("b")), tmp_path / "out.safetensors",
                model_dirs=[sd1_dir])
    record = hash_cache_in_a_temporary_folder
    assert hashes.cache_file() == record.folder / "hashes.json" and record.written[-1] == hashes.cache_file()
    assert any(key.startswith(str((sd1_dir / "a.safetensors").resolve()) + "|") for key in entries())
    real = hashes.user_cache_dir({k: v for k, v in os.environ.items() if k != "LIB_MECHA_CACHE"})
    assert all(real not in path.parents for path in record.written)


def test_the_user_cache_folder_follows_the_platform_and_its_variables(tmp_path):
    home = str(tmp_path / "home")
    assert hashes.user_cache_dir({"HOME": home}, "linux") == tmp_path / "home" / ".cache" / "lib_mecha"
    assert hashes.user_cache_dir({"HOME": home, "XDG_CACHE_HOME": "/x/cache"}, "linux") == \
        hashes.Path("/x/cache/lib_mecha")
    assert hashes.user_cache_dir({"USERPROFILE": home, "LOCALAPPDATA": "/c/Local"}, "win32") == \
        hashes.Path("/c/Local/lib_mecha")
    assert hashes.user_cache_dir({"USERPROFILE": home}, "win32") == \
        tmp_path / "home" / "AppData" / "Local" / "lib_mecha"
    assert hashes.user_cache_dir({"HOME": home}, "darwin") == tmp_path / "home" / "Library" / "Caches" / "lib_mecha"
    assert hashes.user_cache_dir({"HOME": home, "LIB_MECHA_CACHE": "/mine"}, "linux") == hashes.Path("/mine")


def test_a_host_folder_takes_the_cache(tmp_path):
    hashes.use_folder(tmp_path / "webui-data" / "mecha")
    model = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(3)}, str(model))
    digest = hashes.sha256_of(model)
    assert (tmp_path / "webui-data" / "mecha" / "hashes.json").is_file()
    assert list(entries().values()) == [digest]


def test_entries_of_files_gone_or_changed_are_dropped(tmp_path):
    hashes.use_folder(tmp_path / "cache")
    files = []
    for i in range(3):
        files.append(tmp_path / f"m{i}.safetensors")
        save_file({"w": torch.full((3,), float(i))}, str(files[-1]))
        hashes.sha256_of(files[-1])
    assert len(entries()) == 3
    files[0].unlink()
    save_file({"w": torch.full((4,), 9.0)}, str(files[1]))  # changed: another size
    os.utime(files[1], ns=(1, 1))
    fresh = tmp_path / "fresh.safetensors"
    save_file({"w": torch.zeros(2)}, str(fresh))
    hashes.sha256_of(fresh)
    kept = sorted(key.rsplit("|", 2)[0] for key in entries())
    assert kept == sorted(str(p.resolve()) for p in (files[2], fresh))
