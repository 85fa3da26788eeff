"""sd-webui-mecha: the WebUI loads this file by name; all logic lives in the lib_mecha package.

lib_mecha is imported at top level on purpose: A1111 puts the extension folder on sys.path only
while this file runs (webui-host §1.7).
"""
import lib_mecha  # noqa: F401  (fails loudly here, not later inside a callback)
from lib_mecha.host import extension
from modules import script_callbacks

extension.setup(script_callbacks)

# an AlwaysVisible Script: adds "Mecha recipe: <id>" to infotexts while a merge is hot-loaded
MechaRecipeInfotext = extension.script_class()
