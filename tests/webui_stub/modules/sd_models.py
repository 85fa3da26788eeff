"""modules/sd_models.py of the imitated flavour (the module object is replaced by the flavour's)."""
import importlib
import sys

from modules import _flavour

sys.modules[__name__] = importlib.import_module(
    "modules._sd_models_forge" if _flavour.is_forge() else "modules._sd_models_a1111")
