"""A synthetic CheckpointInfo naming a hot-loaded merge (webui-host §3.2 step 2).

The loaded model's ``sd_checkpoint_info`` is set to it while the model holds a merge, so the host's
infotexts name the merge; it is never registered in the host's checkpoint lists. It is an instance
of the host's own ``sd_models.CheckpointInfo`` class, built without running its constructor (which
would read and hash a file), with:

* a unique sentinel ``filename`` that does not exist, so that filename-based reuse and early
  returns (A1111 ``reload_model_weights``, Forge-1 ``load_model``, Forge ``forge_hash`` through
  ``__repr__``) never confuse it with a real file;
* ``calculate_shorthash`` answering from the recipe hash, so the host never hashes the sentinel
  and nothing is written into the user's hash cache;
* the recipe in ``metadata`` and a ``mecha_unsaved`` attribute marking it as ours.
"""
from __future__ import annotations

import os
from pathlib import Path

from .base import MergeIdentity
from .paths import clean_model_name

UNSAVED_MARK = ".mecha-unsaved-"


def make_checkpoint_info(sd_models, ident: MergeIdentity, folder: os.PathLike):
    """A registered-ready CheckpointInfo for ``ident`` whose sentinel file would live in ``folder``."""
    cls = sd_models.CheckpointInfo
    info = cls.__new__(cls)
    stem = clean_model_name(ident.display_name)
    name = f"{stem}.safetensors"
    # No host keyword may appear in the sentinel (Neo branches on words like "kontext" in paths).
    info.filename = str(Path(folder) / f"{ident.h10}{UNSAVED_MARK}{ident.h8}.safetensors")
    info.is_safetensors = True
    info.name = name
    info.name_for_extra = stem
    info.model_name = stem
    info.hash = ident.h8
    info.sha256 = ident.sha256
    info.shorthash = ident.h10
    info.title = f"{name} [{ident.h10}]"
    info.short_title = f"{stem} [{ident.h10}]"
    # Only hash-bearing aliases: a bare name could shadow a user's checkpoint of the same name.
    info.ids = [info.title, info.short_title, f"{name} [{ident.h8}]", ident.h10, ident.sha256]
    info.metadata = {"sd_merge_recipe": ident.recipe_text, "mecha_recipe_id": ident.short_id}
    info.modelspec_thumbnail = None
    info.mecha_unsaved = ident
    info.calculate_shorthash = lambda: ident.h10  # instance attribute shadows the hashing method
    return info


def is_unsaved(info) -> bool:
    """True for a CheckpointInfo made by :func:`make_checkpoint_info`."""
    return getattr(info, "mecha_unsaved", None) is not None
