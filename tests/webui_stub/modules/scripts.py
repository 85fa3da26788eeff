"""modules/scripts.py: Script, AlwaysVisible, basedir(), and the loader that runs an extension's
scripts/*.py (A1111/Forge modules/scripts.py load_scripts + script_loading.load_module)."""
import importlib.util
import os
import sys

from modules import paths

AlwaysVisible = object()
current_basedir = paths.script_path
scripts_data = []
loaded_scripts = {}


class Script:
    filename = None
    args_from = None
    args_to = None

    def title(self):
        raise NotImplementedError()

    def show(self, is_img2img):
        return True


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


def load_extension_script(path, ext_root):
    """Run one scripts file the A1111 way: the extension root is on sys.path only meanwhile, and
    Script subclasses found in its namespace are recorded (A1111 modules/scripts.py load_scripts)."""
    global current_basedir
    saved = list(sys.path)
    sys.path.insert(0, str(ext_root))
    current_basedir = str(ext_root)
    try:
        module = load_module(str(path))
        for obj in list(module.__dict__.values()):
            if isinstance(obj, type) and issubclass(obj, Script) and obj is not Script:
                scripts_data.append((obj, str(path), str(ext_root), module))
        return module
    finally:
        sys.path[:] = saved
        current_basedir = paths.script_path
