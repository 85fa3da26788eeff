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


SCRIPT = ROOT / "scripts" / "mecha.py"
XYZ_ARGS = 18   # the X/Y/Z plot's arguments (A1111 1.10 and Forge 2 scripts/xyz_grid.py Script.ui)


class Grid:
    """The host's X/Y/Z plot with this extension loaded, as the WebUI starts: its own scripts, then
    the extensions' scripts, ``on_before_ui``, then the UI (the txt2img ScriptRunner)."""

    def __init__(self):
        from modules import script_callbacks, scripts
        from lib_mecha.host import extension
        self.xyz = scripts.load_host_script("xyz_grid.py")
        scripts.load_extension_script(SCRIPT, ROOT)
        script_callbacks.fire("before_ui")
        self.runner = scripts.create_txt2img_runner()
        self.script = next(s for s in self.runner.selectable_scripts if s.title() == "X/Y/Z plot")
        self.labels = [o.label for o in self.script.current_axis_options]
        self.host = extension.current_host()

    def script_args(self, x, y=("Nothing", ""), z=("Nothing", ""), csv_mode=False, lone=True):
        """The X/Y/Z plot's arguments; an axis is ``(label, text)`` or ``(label, text, dropdown list)``."""
        args = []
        for label, text, *dropdown in (x, y, z):
            args += [self.labels.index(label), text, dropdown[0] if dropdown else []]
        return args + [True, lone, False, False, False, False, False, 0, csv_mode]

    def run(self, x, y=("Nothing", ""), z=("Nothing", ""), csv_mode=False, seed=7, prompt="a cat"):
        """Generate the grid as the Generate button does (modules/txt2img.py); its Processed."""
        from modules import txt2img
        args = self.runner.default_args()
        args[self.script.args_from:self.script.args_to] = self.script_args(x, y, z, csv_mode)
        args[0] = self.runner.selectable_scripts.index(self.script) + 1
        return txt2img.txt2img(args, prompt=prompt, seed=seed, steps=1, width=8, height=8)

    def cells(self, processed):
        """The cells' images (as bytes) and infotexts, the grid image left out."""
        return [img.tobytes() for img in processed.images[1:]], processed.infotexts[1:]

    def cells_run(self):
        return list(self.xyz.cells_run)
