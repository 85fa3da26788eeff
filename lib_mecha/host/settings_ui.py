"""Registering our settings in the WebUI's Settings page (called from ``on_ui_settings`` only)."""
from __future__ import annotations

from typing import Sequence

from .base import OptionSpec
from .settings import SECTION


def add_options(shared, specs: Sequence[OptionSpec]) -> None:
    """``shared.opts.add_option`` for each spec, in the "Mecha" section, with a matching widget."""
    import gradio as gr

    for spec in specs:
        component, args = None, {}
        if spec.kind == "choice":
            component, args = gr.Dropdown, {"choices": list(spec.choices)}
        elif spec.kind == "slider":
            component, args = gr.Slider, {"minimum": spec.minimum, "maximum": spec.maximum, "step": spec.step or 1}
        elif spec.kind == "number":
            component, args = gr.Number, {"precision": 0}
        elif spec.kind == "check":
            component = gr.Checkbox
        info = shared.OptionInfo(spec.default, spec.label, component=component, component_args=args,
                                 section=SECTION)
        if spec.help and hasattr(info, "info"):
            info = info.info(spec.help)
        shared.opts.add_option(spec.key, info)
