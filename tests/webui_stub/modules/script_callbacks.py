"""modules/script_callbacks.py: per-event callback lists; the tests fire them by hand."""
from collections import defaultdict

callbacks = defaultdict(list)
EVENTS = ("ui_tabs", "ui_settings", "app_started", "script_unloaded", "model_loaded", "before_ui",
          "before_image_saved", "infotext_pasted")


def _adder(event):
    def add(fn, *, name=None):
        callbacks[event].append(fn)
    add.__name__ = f"on_{event}"
    return add


for _event in EVENTS:
    globals()[f"on_{_event}"] = _adder(_event)


def clear_callbacks():
    callbacks.clear()


def remove_current_script_callbacks():
    callbacks.clear()


def fire(event, *args):
    """Call every callback of ``event``; returns their results (exceptions propagate in tests)."""
    return [fn(*args) for fn in list(callbacks[event])]


def model_loaded_callback(sd_model):
    fire("model_loaded", sd_model)


def ui_tabs_callback():
    res = []
    for out in fire("ui_tabs"):
        res += out or []
    return res


def script_unloaded_callback():
    for fn in reversed(list(callbacks["script_unloaded"])):
        fn()
