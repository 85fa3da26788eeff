"""What kind of model the WebUI has loaded, from its own flags."""
from __future__ import annotations

from typing import Optional

# lib_mecha architecture ids → the WebUI model flags (``is_sd1`` ...) that run them
HOST_FLAGS = {"sd1-ldm": "is_sd1", "sd2-ldm": "is_sd2", "sdxl-sgm": "is_sdxl", "sd3-sgm": "is_sd3"}


def arch_of_model(sd_model) -> Optional[str]:
    """The architecture id of a loaded WebUI model, from its ``is_*`` flags."""
    for ident, flag in HOST_FLAGS.items():
        if getattr(sd_model, flag, False):
            return ident
    return None
