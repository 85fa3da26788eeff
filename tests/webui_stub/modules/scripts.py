"""modules/scripts.py: Script, AlwaysVisible, basedir(), the loader that runs a scripts file, and
the ScriptRunner of txt2img (A1111/Forge modules/scripts.py, modules/script_loading.py).

* ``load_module`` names a module after its file, ``.py`` included, and keeps it out of
  ``sys.modules`` (Forge modules/script_loading.py:10-16);
* ``scripts_data`` lists ``ScriptClassData(script_class, path, basedir, module)`` for every Script
  class of every loaded file (modules/scripts.py ``load_scripts``, ``ScriptClassData``);
* a ScriptRunner sorts the scripts into always-visible ones and selectable ones; its script
  arguments are one flat list: position 0 is the selected script's index + 1 (0: none), then each
  script's arguments from ``args_from`` to ``args_to`` (``ScriptRunner.setup_ui``, ``run``);
* ``before_process`` and ``process`` call every always-visible script and report its errors
  without raising them (``ScriptRunner.before_process``, ``ScriptRunner.process``).

A script's ``ui()`` returns plain :class:`Control` values here (the host's are gradio components,
from which the host builds ``api_info`` for ``/sdapi/v1/script-info``: label, value, choices).
"""
import importlib.util
import os
import sys
import traceback
from collections import namedtuple

from modules import paths

AlwaysVisible = object()
current_basedir = paths.script_path
scripts_data = []
loaded_scripts = {}
errors_reported = []          # what the runner reported instead of raising, for the tests
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
Control = namedtuple("Control", ["label", "value", "choices"], defaults=(None,))
HOST_SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


class Script:
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    api_info = None

    def title(self):
        raise NotImplementedError()

    def show(self, is_img2img):
        return True

    def ui(self, is_img2img):
        return []

    def run(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass


def basedir():
    return current_basedir


def load_module(path):
    """script_loading.load_module: the module is named after the file, .py included, and is not put
    into sys.modules (Forge modules/script_loading.py:10-16)."""
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loaded_scripts[path] = module
    return module


def _register_classes(module, path, base):
    for obj in list(module.__dict__.values()):
        if isinstance(obj, type) and issubclass(obj, Script) and obj is not Script:
            scripts_data.append(ScriptClassData(obj, str(path), str(base), module))


def load_extension_script(path, ext_root):
    """Run one scripts file the A1111 way: the extension root is on sys.path only meanwhile, and
    Script subclasses found in its namespace are recorded (A1111 modules/scripts.py load_scripts)."""
    global current_basedir
    saved = list(sys.path)
    sys.path.insert(0, str(ext_root))
    current_basedir = str(ext_root)
    try:
        module = load_module(str(path))
        _register_classes(module, path, ext_root)
        return module
    finally:
        sys.path[:] = saved
        current_basedir = paths.script_path


def load_host_script(name):
    """One of the WebUI's own scripts (its ``scripts/`` folder, e.g. ``xyz_grid.py``), which
    ``load_scripts`` lists before the extensions' scripts."""
    path = os.path.join(HOST_SCRIPTS, name)
    module = load_module(path)
    _register_classes(module, path, paths.script_path)
    return module


class ScriptRunner:
    def __init__(self, is_img2img=False):
        self.is_img2img = is_img2img
        self.scripts = []
        self.selectable_scripts = []
        self.alwayson_scripts = []
        self.inputs = [None]          # position 0: the selected script's index + 1

    def initialize_scripts(self):
        for data in scripts_data:
            script = data.script_class()
            script.filename = data.path
            visibility = script.show(self.is_img2img)
            if visibility is AlwaysVisible:
                script.alwayson = True
                self.alwayson_scripts.append(script)
            elif visibility:
                self.selectable_scripts.append(script)
            else:
                continue
            self.scripts.append(script)

    def setup_ui(self):
        """Each script's controls, placed in the flat argument list; ``api_info`` as the API shows it."""
        for script in self.scripts:
            controls = list(script.ui(self.is_img2img) or [])
            script.args_from = len(self.inputs)
            self.inputs.extend(controls)
            script.args_to = len(self.inputs)
            script.api_info = {"name": script.title().lower(), "is_alwayson": script.alwayson,
                               "is_img2img": self.is_img2img,
                               "args": [{"label": c.label, "value": c.value, "choices": c.choices} for c in controls]}

    def default_args(self):
        return [0] + [c.value for c in self.inputs[1:]]

    def run(self, p, *args):
        index = args[0]
        if not index:
            return None
        script = self.selectable_scripts[index - 1]
        return script.run(p, *args[script.args_from:script.args_to])

    def _each(self, hook, p):
        for script in self.alwayson_scripts:
            try:
                getattr(script, hook)(p, *p.script_args[script.args_from:script.args_to])
            except Exception as exc:
                errors_reported.append((hook, exc))
                traceback.print_exc()

    def before_process(self, p):
        self._each("before_process", p)

    def process(self, p):
        self._each("process", p)


scripts_txt2img = None


def create_txt2img_runner():
    """What ``modules.scripts.load_scripts`` + the UI build do for txt2img."""
    global scripts_txt2img
    scripts_txt2img = ScriptRunner(False)
    scripts_txt2img.initialize_scripts()
    scripts_txt2img.setup_ui()
    return scripts_txt2img
