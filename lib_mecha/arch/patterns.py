"""Per-key values from ``pattern: value`` lines.

One rule per line, ``#`` starts a comment::

    model.diffusion_model.input_blocks.*: 0.2      # a glob: must match the whole key
    re:\\.attn[12]\\.to_[kv]\\.: 0.8                 # a regex (re:): searched anywhere in the key
    *: 0.5                                          # a catch-all is allowed too

The first rule that matches a key gives its value; keys no rule matches take the explicit
default. Patterns are matched against canonical key names and their aliases. A rule that
matches no key at all is almost always a typo, so it raises a :class:`PatternWarning` naming
it; a regex that does not compile raises :class:`~lib_mecha.errors.ParameterError`.

The result is sd-mecha's shape for this (comfy-mecha's "regex weights"): a per-key dict
literal of the matched keys, ``| default`` for the rest.
"""
from __future__ import annotations

import fnmatch
import re
import warnings
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..errors import ParameterError
from ..methods.registry import build
from ..methods.spec import PARAM
from ..recipe import RecipeNode, literal
from .base import Architecture, resolve_architecture

METHOD = "pattern_weights"


class PatternWarning(UserWarning):
    """A pattern that matches no key of the architecture."""


@dataclass(frozen=True)
class Rule:
    line: int
    pattern: str       # as written, without the re: prefix
    is_regex: bool
    value: float
    text: str          # the whole line, for messages

    def matcher(self):
        if self.is_regex:
            return re.compile(self.pattern).search
        return lambda key: fnmatch.fnmatchcase(key, self.pattern)


def parse_patterns(text_or_lines: Union[str, Iterable[str]]) -> List[Rule]:
    """Read ``pattern: value`` lines; raises ParameterError naming the line of any bad rule."""
    lines = text_or_lines.splitlines() if isinstance(text_or_lines, str) else list(text_or_lines)
    rules = []
    for number, raw in enumerate(lines, 1):
        body = _strip_comment(raw).strip()
        if not body:
            continue
        if ":" not in (body[3:] if body.startswith("re:") else body):
            raise ParameterError(METHOD, "patterns", f"line {number} has no ': value': {raw.strip()!r}",
                                 "write one 'pattern: value' per line")
        pattern, value_text = body.rsplit(":", 1)
        pattern, value_text = pattern.strip(), value_text.strip()
        try:
            value = float(value_text)
        except ValueError:
            raise ParameterError(METHOD, "patterns", f"line {number}: {value_text!r} is not a number: "
                                 f"{raw.strip()!r}") from None
        is_regex = pattern.startswith("re:")
        if is_regex:
            pattern = pattern[3:].strip()
            try:
                re.compile(pattern)
            except re.error as e:
                raise ParameterError(METHOD, "patterns", f"line {number}: regex '{pattern}' does not compile: {e}",
                                     "escape literal dots and brackets with a backslash") from None
        if not pattern:
            raise ParameterError(METHOD, "patterns", f"line {number} has an empty pattern: {raw.strip()!r}")
        rules.append(Rule(number, pattern, is_regex, value, raw.strip()))
    return rules


def _strip_comment(line: str) -> str:
    # '#' starts a comment unless it is inside a regex character class or escaped
    i = line.find(" #")
    if line.lstrip().startswith("#"):
        return ""
    return line[:i] if i >= 0 else line


def match_patterns(rules: Sequence[Rule], keys: Dict[str, Tuple[str, ...]]) -> Tuple[Dict[str, float], List[Rule]]:
    """Apply rules to ``{canonical key: aliases}``: the value of each matched key (first rule
    wins, in key order) and the rules that match no key at all (shadowed rules are not listed)."""
    values: Dict[str, float] = {}
    dead = []
    hits = []
    for rule in rules:
        match = rule.matcher()
        found = [k for k, aliases in keys.items() if match(k) or any(match(a) for a in aliases)]
        if not found:
            dead.append(rule)
        hits.append((rule, set(found)))
    for key in keys:
        for rule, found in hits:
            if key in found:
                values[key] = rule.value
                break
    return values, dead


def pattern_weights(text_or_lines: Union[str, Iterable[str]], default: float,
                    architecture: Union[str, Architecture, None], *,
                    keys: Optional[Iterable[str]] = None) -> RecipeNode:
    """A per-key parameter node from ``pattern: value`` lines, usable for any per-key parameter.

    Args:
        text_or_lines: the rules, as one text or a list of lines.
        default: the value of keys no rule matches (explicit on purpose: no key goes without).
        architecture: the architecture whose keys the rules select (id or table); None with
            ``keys`` for models no table describes.
        keys: the key names to match when ``architecture`` is None.

    Returns:
        A dict literal of the matched keys wrapped in ``fallback(…, default)``; the bare
        default when no key is matched.

    Warns:
        PatternWarning: for each rule that matches no key, naming its line.

    Example:
        >>> alpha = pattern_weights("*.attn2.*: 0.9\\nre:^first_stage_model\\.: 0", 0.5, "sd1-ldm")
    """
    if default is None or isinstance(default, bool) or not isinstance(default, (int, float)):
        raise ParameterError(METHOD, "default", f"needs a number, got {default!r}")
    rules = parse_patterns(text_or_lines)
    config = None
    if isinstance(architecture, str):
        architecture = resolve_architecture(architecture)
    if architecture is not None:
        config = architecture.identifier
        table = {k: s.aliases for k, s in architecture.keys.items()}
    elif keys is not None:
        table = {k: () for k in keys}
    else:
        raise ParameterError(METHOD, "architecture", "give an architecture or the list of keys to match")
    values, dead = match_patterns(rules, table)
    for rule in dead:
        warnings.warn(PatternWarning(f"pattern on line {rule.line} matches no key"
                                     f"{' of ' + config if config else ''}: {rule.text!r}"), stacklevel=2)
    if not values:
        return literal(float(default))
    node = literal(values, config=config, merge_space=PARAM)
    if len(values) == len(table):
        return node
    return build("fallback", node, float(default))
