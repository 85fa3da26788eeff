"""Human-readable account of architecture detection, for error messages and the UI."""
from __future__ import annotations

from typing import Collection, List, Mapping, Optional, Tuple

from .base import Detection, architecture_ids, candidates, explain, resolve_architecture

_EXAMPLES = 2


def closest(keys: Collection[str], shapes: Optional[Mapping[str, Tuple[int, ...]]] = None,
            n: int = 3) -> List[Detection]:
    """The ``n`` architectures sharing most keys with the file, best first, whether or not
    they pass the detection threshold."""
    keys = list(keys)
    found = [explain(resolve_architecture(i), keys, shapes) for i in architecture_ids()]
    found = [d for d in found if d.matched > 0]
    found.sort(key=lambda d: d.score, reverse=True)
    return found[:n]


def _examples(items) -> str:
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:_EXAMPLES])
    return shown + (", ..." if len(items) > _EXAMPLES else "")


def describe(d: Detection, total: int) -> str:
    """``sd1-ldm (knows 1100 of 1130 keys; 30 unknown, e.g. ...; 2 required keys missing, e.g. ...)``."""
    parts = [f"knows {d.matched} of {total} keys"]
    if d.unknown:
        parts.append(f"{len(d.unknown)} unknown, e.g. {_examples(d.unknown)}")
    if d.shape_mismatches:
        k, got, want = d.shape_mismatches[0]
        more = f" and {len(d.shape_mismatches) - 1} more" if len(d.shape_mismatches) > 1 else ""
        parts.append(f"{len(d.shape_mismatches)} with other shapes, e.g. {k!r} is {list(got)}, "
                     f"expected {list(want)}{more}")
    if d.missing:
        parts.append(f"{len(d.missing)} required keys missing, e.g. {_examples(d.missing)}")
    return f"{d.architecture.identifier} ({'; '.join(parts)})"


def explain_detection(keys: Collection[str], shapes: Optional[Mapping[str, Tuple[int, ...]]] = None) -> str:
    """One line saying which architecture a file was recognised as, or why none was.

    Names the closest candidates with their unknown, missing and mis-shaped keys, so an error
    about an unrecognised or ambiguous file says what to look at.

    Example:
        >>> explain_detection(["foo.weight"])
        "unrecognised model: no known architecture shares a key with its 1 keys (e.g. 'foo.weight')"
    """
    keys = list(keys)
    total = len(keys)
    if not total:
        return "unrecognised model: the file holds no tensors"
    ranked = candidates(keys, shapes)
    if ranked:
        ties = [d for d in ranked if d.score == ranked[0].score]
        if len(ties) > 1:
            names = " and ".join(d.architecture.identifier for d in ties)
            return (f"ambiguous model: {names} explain its keys equally well; choose one explicitly: "
                    + "; ".join(describe(d, total) for d in ties))
        return "recognised as " + describe(ranked[0], total)
    near = closest(keys, shapes)
    if not near:
        return (f"unrecognised model: no known architecture shares a key with its {total} keys "
                f"(e.g. {_examples(keys)})")
    return "unrecognised model; closest: " + "; ".join(describe(d, total) for d in near)
