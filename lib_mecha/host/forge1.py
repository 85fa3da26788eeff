"""The Forge-1 family (reForge, Forge Classic): A1111's ``load_model`` path on an ldm_patched backend.

Their ``load_model(checkpoint_info, already_loaded_state_dict)`` keeps A1111's signature, and their
``reload_model_weights`` is ``load_model(info)``; Classic returns early when the loaded model's
filename equals the requested one and reForge reuses ``loaded_sd_models`` by filename
(webui-host §3.5). The unique sentinel filename of the synthetic CheckpointInfo is what keeps a
merge apart from the user's checkpoint there, so the A1111 recipe applies unchanged; the detach
step only calls the helpers the fork still has.
"""
from __future__ import annotations

from .a1111 import A1111Host


class Forge1Host(A1111Host):
    name = "forge1"
    supported_arches = ("sd1-ldm", "sd2-ldm", "sdxl-sgm")
