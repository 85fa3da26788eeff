"""Live merging: a merge streamed into the WebUI's running model, key by key.

Core code (no gradio, no WebUI ``modules``): host adapters describe their model as a
:class:`~.target.LiveModel`; :func:`~.stream.stream_merge` writes a recipe's merge into it,
recomputing only the keys whose fingerprint changed since the last one, and puts everything
back if it fails part-way; :func:`~.stream.restore_keys` streams the original file back.
"""
from .memory import PeakMemory
from .seeds import pin_seeds
from .state import LiveState, Original
from .stream import LiveReport, NotRestored, restore_keys, stream_merge
from .target import LiveModel, LiveTarget

__all__ = ["LiveModel", "LiveReport", "LiveState", "LiveTarget", "NotRestored", "Original", "PeakMemory",
           "pin_seeds", "restore_keys", "stream_merge"]
