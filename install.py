"""Run by the WebUI at every start (in a subprocess, before the scripts load).

lib_mecha needs nothing the WebUI does not already ship: torch, gradio and safetensors are the
host's, so they are only checked here, never installed or pinned (installing a host package makes
hosts like Forge Neo downgrade and re-upgrade it at every launch). Nothing is imported but
``importlib.metadata``, so this takes milliseconds. Problems are printed as one line each.
"""
from __future__ import annotations

import importlib.metadata
import re
import sys

# distribution → (lowest version that works, what needs it)
REQUIRED = {
    "torch": ((2, 1), "lib_mecha's merge engine"),
    "gradio": ((3, 41), "the Mecha tab"),
    "safetensors": ((0, 4), "Forge hot-load restore"),
}
PYTHON = (3, 10)


def version_tuple(text: str) -> tuple:
    """'2.3.1+cu121' → (2, 3, 1); unknown parts end the tuple."""
    out = []
    for part in re.split(r"[.+-]", text):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def problems(version_of=None, python=None) -> list:
    """One message per unmet requirement (empty when all is well)."""
    version_of = version_of or _installed_version
    python = python or sys.version_info[:2]
    found = []
    if tuple(python) < PYTHON:
        found.append(f"Python {'.'.join(map(str, python))} is too old (needs {'.'.join(map(str, PYTHON))}+)")
    for dist, (lowest, why) in REQUIRED.items():
        have = version_of(dist)
        wanted = ".".join(map(str, lowest))
        if have is None:
            found.append(f"{dist} is not installed (needs {wanted}+ for {why})")
        elif version_tuple(have) < lowest:
            found.append(f"{dist} {have} is too old (needs {wanted}+ for {why})")
    return found


def _installed_version(dist: str):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> int:
    found = problems()
    if found:
        print("[sd-webui-mecha] " + "; ".join(found)
              + " — update the WebUI; the extension will not install host packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
