"""Different values per component (text encoders, UNet / transformer, VAE, EMA)."""
from __future__ import annotations

from typing import Mapping, Optional, Union

from ..errors import ParameterError, suggest
from ..methods.registry import build
from ..methods.spec import PARAM
from ..recipe import RecipeNode, literal
from .base import Architecture, resolve_architecture

METHOD = "component_weights"


def component_weights(architecture: Union[str, Architecture], values: Mapping[str, float],
                      default: Optional[float] = None) -> RecipeNode:
    """A per-key parameter node giving each component its own value.

    Args:
        architecture: the architecture (id or table) whose components are named.
        values: ``{component: value}``, e.g. ``{"clip_l": 0.0, "diffuser": 0.7}``.
        default: the value of components left out; required when any is left out.

    Returns:
        A per-key dict literal over the architecture's keys, wrapped in ``fallback(…, default)``
        when components are left out (so keys outside the table also get the default).

    Example:
        >>> alpha = component_weights("sd1-ldm", {"clip_l": 0.2, "diffuser": 0.8}, default=0.0)
    """
    arch = resolve_architecture(architecture) if isinstance(architecture, str) else architecture
    for name in values:
        if name not in arch.components:
            hints = suggest(name, arch.components)
            raise ParameterError(METHOD, "values", f"{name!r} is not a component of {arch.identifier}",
                                 ("did you mean " + " or ".join(repr(h) for h in hints) + "?") if hints
                                 else f"components are: {', '.join(arch.components)}")
    missing = [c for c in arch.components if c not in values]
    if missing and default is None:
        raise ParameterError(METHOD, "default", f"no value for component(s) {', '.join(missing)}",
                             "give every component a value or pass default=")
    per_key = {k: float(values[s.component]) for k, s in arch.keys.items() if s.component in values}
    node = literal(per_key, config=arch.identifier, merge_space=PARAM)
    if default is None:
        return node
    return build("fallback", node, float(default))
