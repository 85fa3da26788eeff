"""Forge Neo: Forge 2.x with list-valued folder options (``--ckpt-dirs`` ... are append options).

Neo keeps Forge's engine objects (``forge_objects``, ``model_config``) and ``forge_model_reload``,
so the in-place hot-load of :mod:`.forge` applies; only the folder options differ
(webui-host §2, §7.1; Neo was read from archived files only).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

from .forge import Forge2Host
from .paths import require_inside, unique_dirs
from .webui import m


def _as_list(value) -> list:
    if not value:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class NeoHost(Forge2Host):
    name = "neo"

    def checkpoint_dirs(self) -> List[Path]:
        return unique_dirs([*_as_list(self._cmd("ckpt_dirs")), self._cmd("ckpt_dir"), m("sd_models").model_path])

    def default_save_dir(self) -> Path:
        base = Path(m("sd_models").model_path)
        sub = str(self.option("mecha_save_dir", "") or "").strip()
        target = Path(os.path.abspath(base / sub)) if sub else base
        return require_inside(target, [base], "save folder (setting mecha_save_dir)")

    def lora_dirs(self) -> List[Path]:
        models = m("paths").models_path
        return unique_dirs([*_as_list(self._cmd("lora_dirs")), self._cmd("lora_dir") or os.path.join(models, "Lora")])

    def vae_dirs(self) -> List[Path]:
        return unique_dirs([getattr(m("sd_vae"), "vae_path", None), *_as_list(self._cmd("vae_dirs")),
                            self._cmd("vae_dir")])
