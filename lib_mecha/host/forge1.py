"""The Forge-1 family (reForge, older Forge Classic): A1111's model object on an ldm_patched backend.

Their model keeps A1111's checkpoint names and their ``reload_model_weights`` is
``load_model(info)``, which returns early while the loaded model's filename is the selected one
(Classic ``sd_models.py``; reForge reuses ``loaded_sd_models`` by filename; webui-host §3.5). So
the A1111 adapter applies: the merge is streamed into the model in place, the model keeps the
selected file's name, and a pending selection is loaded first. One difference: ldm_patched bakes
LoRA patches into the weights while a model is loaded on the device, keeping backups that
``unpatch_model`` writes back when it unloads (``ldm_patched/modules/model_patcher.py``). Every
model is unloaded first (``model_management.unload_all_models()``), so the weights are clean
and no backup outlives the write.
"""
from __future__ import annotations

import importlib
from typing import Collection

from .a1111 import A1111Host, A1111Model


class Forge1Model(A1111Model):
    def before_write(self, names: Collection[str]) -> None:
        try:
            management = importlib.import_module("ldm_patched.modules.model_management")
        except ImportError:
            management = None
        if management is not None:
            management.unload_all_models()
        super().before_write(names)


class Forge1Host(A1111Host):
    name = "forge1"

    def _model_view(self, model) -> Forge1Model:
        return Forge1Model(model, self._label(model), self)
