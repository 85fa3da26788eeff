"""The extension's WebUI settings (section "Mecha"), and merge options built from them.

Settings are registered in ``on_ui_settings`` but always read with ``opts.data.get(key, default)``
(through ``Host.option``), because API-only mode never runs the settings UI (webui-host §1.8).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Tuple

from .base import OptionSpec

SECTION = ("mecha", "Mecha")

OPTIONS: List[OptionSpec] = [
    OptionSpec("mecha_merge_device", "auto", "Merge device", "choice",
               choices=("auto", "cpu"),  # and the devices of this machine: see options()
               help="auto: the WebUI's own device"),
    OptionSpec("mecha_compute_dtype", "fp32", "Compute dtype", "choice", choices=("fp32", "fp64", "fp16", "bf16")),
    OptionSpec("mecha_output_dtype", "fp16", "Default output dtype of saved merges", "choice",
               choices=("fp16", "bf16", "fp32", "keep")),
    OptionSpec("mecha_threads", 2, "Worker threads", "slider", minimum=0, maximum=16, step=1),
    OptionSpec("mecha_memory_budget_mb", 1024, "Memory budget for tensors in flight (MiB)", "number",
               minimum=16),
    OptionSpec("mecha_vram_budget_mb", 0, "VRAM budget of a merge on a GPU (MiB; 0: half of the free VRAM)",
               "number", minimum=0,
               help="a key that does not fit is merged on the CPU; the rest of the VRAM stays for generating"),
    OptionSpec("mecha_save_dir", "", "Save folder, relative to the checkpoint folder (empty: the folder itself)",
               "text"),
]

DEFAULTS: Dict[str, Any] = {o.key: o.default for o in OPTIONS}


def device_choices() -> Tuple[str, ...]:
    """The choices of the merge device setting: ``auto`` and the devices this machine has."""
    from ..engine.options import available_devices
    return ("auto", *available_devices())


def options() -> List[OptionSpec]:
    """The settings to register: :data:`OPTIONS`, the merge device offering only devices that
    exist here."""
    return [replace(o, choices=device_choices()) if o.key == "mecha_merge_device" else o for o in OPTIONS]


def read(host, key: str) -> Any:
    """The current value of one of our settings, its default when unset or unregistered."""
    return host.option(key, DEFAULTS[key])


# Tensors in flight during a hot-load, at most: the host process holds its model besides, and a
# hot-load must stay within 512 MB plus the largest key above the host's level (issue 17).
HOT_LOAD_BUDGET_MB = 256


def merge_option_values(host, for_hot_load: bool = False) -> Dict[str, Any]:
    """Keyword values for :class:`lib_mecha.MergeOptions` from the settings and the host.

    A hot-loaded merge is rounded to the "Default output dtype" like a saved one, so that the
    preview shows the saved file's weights whatever the host's own precision; its memory budget
    is capped at :data:`HOT_LOAD_BUDGET_MB`.
    """
    device = str(read(host, "mecha_merge_device") or "auto")
    if device == "auto":
        device = str(host.device())
    budget = max(16, _int(read(host, "mecha_memory_budget_mb"), DEFAULTS["mecha_memory_budget_mb"]))
    vram_budget = _int(read(host, "mecha_vram_budget_mb"), 0)
    return {
        "device": device,
        "compute_dtype": str(read(host, "mecha_compute_dtype")),
        "output_dtype": str(read(host, "mecha_output_dtype")),
        "threads": _int(read(host, "mecha_threads"), DEFAULTS["mecha_threads"]),
        "memory_budget_mb": min(budget, HOT_LOAD_BUDGET_MB) if for_hot_load else budget,
        "vram_budget_mb": vram_budget or None,  # (0: the default; less is refused by MergeOptions)
        "model_dirs": tuple(str(d) for d in host.checkpoint_dirs() + host.lora_dirs()),
    }


def _int(value, default: int) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default
