"""The WebUI's launch.py as seen by an extension's install.py (launch_utils re-exported):
``is_installed`` and ``run_pip`` (records what it was asked to install instead of installing)."""
import importlib.metadata
import importlib.util
import os
import sys

installs = []
args = None


def is_installed(package):
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        try:
            return importlib.util.find_spec(package) is not None
        except ModuleNotFoundError:
            return False


def run_pip(command, desc=None, live=False):
    installs.append(command)
    log = os.environ.get("STUB_PIP_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(command + "\n")
    return ""


python = sys.executable
