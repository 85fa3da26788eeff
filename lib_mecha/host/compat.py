"""Can the host run this state dict? Checked before anything of the loaded model is touched."""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from ..errors import HostError

# lib_mecha architecture ids → the WebUI model flags (``is_sd1`` ...) that run them
HOST_FLAGS = {"sd1-ldm": "is_sd1", "sd2-ldm": "is_sd2", "sdxl-sgm": "is_sdxl", "sd3-sgm": "is_sd3"}


def detect_arch(state_dict: Mapping[str, object]) -> Optional[str]:
    """lib_mecha's architecture id for a state dict's keys (shapes break ties), or None."""
    try:
        from ..arch import detect
    except ImportError:  # pragma: no cover - lib_mecha without architectures
        return None
    shapes = {k: tuple(getattr(v, "shape", ())) for k, v in state_dict.items()}
    arch = detect(list(state_dict), shapes)
    return arch.identifier if arch is not None else None


def arch_of_model(sd_model) -> Optional[str]:
    """The architecture id of a loaded WebUI model, from its ``is_*`` flags."""
    for ident, flag in HOST_FLAGS.items():
        if getattr(sd_model, flag, False):
            return ident
    return None


def compare_parts(expected: Mapping[str, Tuple[int, ...]], given: Mapping[str, object],
                  ignore: Iterable[str] = ()) -> List[str]:
    """Problems (missing keys, wrong shapes) of ``given`` against ``expected`` key → shape."""
    ignore = set(ignore)
    problems = []
    missing = [k for k in expected if k not in given and k not in ignore]
    if missing:
        problems.append(f"{len(missing)} keys missing (first: {missing[0]})")
    for k, v in given.items():
        if k in expected and tuple(getattr(v, "shape", ())) != tuple(expected[k]):
            problems.append(f"key {k!r} has shape {list(v.shape)}, the loaded model has {list(expected[k])}")
            break
    return problems


def require_same_architecture(what: str, live_shapes: Dict[str, Dict[str, Tuple[int, ...]]],
                              parts: Dict[str, Mapping[str, object]],
                              ignore: Iterable[str] = ()) -> None:
    """Raise :class:`HostError` unless every component of ``parts`` fits the live model's.

    Args:
        what: the merge's name, for the message.
        live_shapes: component → (key → shape) of the loaded model.
        parts: component → (key → tensor) of the merge, in the same key convention.
    """
    for component, expected in live_shapes.items():
        problems = compare_parts(expected, parts.get(component, {}), ignore)
        if problems:
            raise HostError(f"cannot hot-load {what}: its {component} does not fit the loaded model: "
                            + "; ".join(problems),
                            "load a checkpoint of the merge's architecture first, or save the merge and load the file")
