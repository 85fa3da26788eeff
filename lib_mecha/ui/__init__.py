"""The Mecha tab (gradio): recipe builder, block weights, LoRAs, .mecha text, merge/save/preview.

Only this package and :mod:`lib_mecha.host` know about gradio and the WebUI; the tab talks to a
:class:`lib_mecha.host.base.Host` and the library API. It works under gradio 3.41 (A1111) and
4.40 (Forge), inside a WebUI (:func:`create_tab`) or standalone (:mod:`lib_mecha.ui.standalone`).
"""
from __future__ import annotations


def create_tab(host):
    """The tab's ``gr.Blocks`` for the WebUI's ``on_ui_tabs``."""
    from .tab import create_tab as _create
    return _create(host)


__all__ = ["create_tab"]
