"""Helpers of the host-adapter tests: a stand-in WebUI root with two tiny SD1 checkpoints.

The stand-in is loaded from its file under a unique name, and its folder is on ``sys.path`` only
while a stand-in is installed, so tests elsewhere never see a ``modules`` package.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "tests" / "webui_stub"


def _load_stand_in():
    name = "mecha_webui_stand_in"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, STUB / "stand_in.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


stand_in = _load_stand_in()


def write_checkpoint(path: Path, seed: int, drop=()) -> Path:
    import safetensors.torch
    from modules import _net
    sd = _net.random_checkpoint(seed)
    for k in drop:
        sd.pop(k)
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(sd, str(path))
    return path


class WebUI:
    """One stand-in WebUI: its root, flavour, and the checkpoints made for the test."""

    def __init__(self, flavour: str, root: Path):
        self.flavour = flavour
        self.root = root
        self.modules = stand_in.install(flavour, root)
        self.ckpt_dir = root / "models" / "Stable-diffusion"
        self.a = write_checkpoint(self.ckpt_dir / "model-a.safetensors", 1)
        self.b = write_checkpoint(self.ckpt_dir / "model-b.safetensors", 2)
        from modules import sd_models, shared
        sd_models.list_models()
        shared.opts.data["sd_model_checkpoint"] = "model-a.safetensors"
        if flavour == "forge2":
            from modules_forge import main_entry
            main_entry.refresh_model_loading_parameters()

    def txt2img(self, seed=7, prompt="a cat", **kw):
        """What the host's own txt2img does: under queue_lock, process_images (scripts off)."""
        from modules import call_queue, processing
        p = processing.StableDiffusionProcessingTxt2Img(prompt=prompt, seed=seed, steps=1, width=8, height=8, **kw)
        with call_queue.queue_lock:
            return processing.process_images(p)

    def pixels(self, seed=7, prompt="a cat"):
        return self.txt2img(seed=seed, prompt=prompt).images[0].tobytes()

    def model(self):
        from modules import sd_models
        return sd_models.model_data.sd_model



def merge_dict(seed=3):
    """A complete stand-in SD1 state dict, as a merge would produce."""
    from modules import _net
    return _net.random_checkpoint(seed)


def options(host, **changes):
    """The MergeOptions a hot-load from the tab would use."""
    import lib_mecha
    from lib_mecha.host.settings import merge_option_values
    values = merge_option_values(host, for_hot_load=True)
    values.update(changes)
    return lib_mecha.MergeOptions(**values)


def ckpt_recipe(webui, seed=3, drop=(), name=None):
    """A recipe whose merge is the stand-in checkpoint of ``seed`` (written into the checkpoint
    folder as ``merge-<seed>.safetensors``): what a merge producing ``merge_dict(seed)`` would be."""
    import lib_mecha
    path = webui.ckpt_dir / (name or f"merge-{seed}.safetensors")
    if not path.exists():
        write_checkpoint(path, seed, drop=drop)
    return lib_mecha.model(str(path))


def hot_load(host, webui, seed=3, text=None, recipe=None, **kw):
    """Hot-load ``recipe`` (default: the checkpoint of ``seed``) as the merge ``text``; the report."""
    from lib_mecha.host.base import MergeIdentity
    node = recipe if recipe is not None else ckpt_recipe(webui, seed)
    ident = MergeIdentity.from_recipe(text or f"merge {seed}", kw.pop("display", None))
    return host.hot_load(node, ident, kw.pop("opts", None) or options(host), **kw)
