"""modules/launch_utils.py: git_tag() ('f2.0.1...' on Forge 2, a version tag on A1111)."""
from modules import _flavour


def git_tag():
    return "f2.0.1v1.10.1-stub" if _flavour.is_forge() else "v1.10.1"
