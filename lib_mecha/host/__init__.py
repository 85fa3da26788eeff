"""Host adapters: lib_mecha inside A1111, Forge 2.x, the Forge-1 family, Neo, or no WebUI at all.

``make_host()`` picks the implementation by feature detection; the UI and the REST routes talk to
it only through the :class:`Host` protocol. Submodules import the WebUI's ``modules`` lazily.
"""
from __future__ import annotations

from .base import Host, LoadedModel, MergeIdentity, ModelRef, OptionSpec, PreviewParams, ProgressSink
from .detect import detect_flavour, make_host

__all__ = ["Host", "LoadedModel", "MergeIdentity", "ModelRef", "OptionSpec", "PreviewParams", "ProgressSink",
           "detect_flavour", "make_host"]
