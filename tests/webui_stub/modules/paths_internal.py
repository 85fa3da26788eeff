"""Folders of the stand-in WebUI (A1111/Forge modules/paths_internal.py: data_path, models_path)."""
import os

script_path = os.environ.get("STUB_WEBUI_ROOT", os.getcwd())
data_path = script_path
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
