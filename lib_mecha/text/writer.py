"""Writing recipe nodes as .mecha text, byte for byte as sd-mecha 1.1.8 writes them.

Post-order, one instruction per line, an identical line written once and referred to as
``&index`` afterwards. A scalar literal becomes sd-mecha's three lines (``dict key=v``, a
``singleton-mecha`` literal, ``convert_singleton``). What sd-mecha could not read back (inf/nan,
a model path holding ``=``, line breaks inside strings, odd dict keys) is refused with an error
naming the culprit, rather than written; see ``docs/mecha-format.md``.
"""
from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import ParameterError, RecipeError
from ..methods.registry import all_methods
from ..recipe import LiteralNode, MergeNode, ModelNode, RecipeNode, as_node
from .reader import SINGLETON_CONFIG, SINGLETON_KEY, SINGLETON_METHOD, UNKNOWN_CONFIGS, VERSION_LINE

_LINE_BREAKS = ("\n", "\r")
_BAD_KEY_CHARS = (" ", "\t", '"', "\\", "=") + _LINE_BREAKS
_LARGE_HINT = "use a large finite number such as 1e+30 instead"


class _Where(NamedTuple):
    """Which method parameter a value feeds, for error messages."""

    method: Optional[str] = None
    param: Optional[str] = None


def write(recipe, comments: Sequence[str] = ()) -> str:
    """The .mecha text of ``recipe``; ``comments`` become ``# ...`` lines after the version line."""
    head = [VERSION_LINE] + [_comment(c) for c in comments]
    writer = _Writer()
    writer.visit(as_node(recipe))
    return "\n".join(head + writer.lines)


def _comment(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"comments are strings, not {type(text).__name__}")
    if any(c in text for c in _LINE_BREAKS):
        raise RecipeError(f"a .mecha comment cannot hold a line break: {text!r}")
    return f"# {text}" if text else "#"


class _Writer:
    def __init__(self):
        self.lines: List[str] = []
        self._index: Dict[str, int] = {}
        # id(node) -> (node, ref): keeps each visited node alive so its id stays unique
        self._done: Dict[int, Tuple[RecipeNode, str]] = {}

    def add(self, line: str) -> str:
        index = self._index.get(line)
        if index is None:
            index = self._index[line] = len(self.lines)
            self.lines.append(line)
        return f"&{index}"

    def ref(self, node: RecipeNode) -> str:
        return self._done[id(node)][1]

    def visit(self, root: RecipeNode) -> str:
        # An explicit stack instead of recursion, so deep chains cannot hit the recursion limit;
        # the visiting order is that of a recursive post-order walk (arguments left to right).
        stack = [(root, _Where(), False)]
        while stack:
            node, where, expanded = stack.pop()
            if id(node) in self._done:
                continue
            if expanded:
                self._done[id(node)] = (node, self.emit(node, where))
                continue
            stack.append((node, where, True))
            for child, child_where in reversed(_children(node, where)):
                if id(child) not in self._done:
                    stack.append((child, child_where, False))
        return self.ref(root)

    # --- one node -------------------------------------------------------------------------

    def emit(self, node: RecipeNode, where: _Where) -> str:
        if isinstance(node, ModelNode):
            return self.add(f"model {_model_path(node.path)} model_config={_config(node.model_config)} "
                            f"merge_space={_optional_str(node.merge_space, where)}")
        if isinstance(node, MergeNode):
            name = node.method
            if "=" in name:
                raise RecipeError(f"cannot write the method name {name!r} to .mecha: it holds '='")
            parts = ["merge", _string(name, where)]
            parts.extend(self.ref(a) for a in node.args)
            parts.extend(f"{k}={self.ref(v)}" for k, v in node.kwargs)
            return self.add(" ".join(parts))
        if isinstance(node, LiteralNode):
            return self.literal(node, where)
        raise TypeError(f"not a recipe node: {node!r}")

    def literal(self, node: LiteralNode, where: _Where) -> str:
        if not node.is_dict:
            # sd-mecha has no scalar node: a scalar is a one-key singleton literal, broadcast by
            # convert_singleton. A scalar's model_config has no place here (sd-mecha drops it too).
            d = self.add(f"dict {SINGLETON_KEY}={_scalar(node.value, where)}")
            lit = self.add(f'literal {d} model_config="{SINGLETON_CONFIG}" '
                           f"merge_space={_optional_str(node.merge_space, where)}")
            return self.add(f'merge "{SINGLETON_METHOD}" {lit}')
        parts = []
        for key, value in node.value:
            _check_key(key, where)
            if isinstance(value, RecipeNode):
                if isinstance(value, LiteralNode) and value.is_dict and _written_config(value.model_config) is None:
                    raise _error(where, f"the value of key {key!r} is a dict without model_config, "
                                        "which .mecha cannot nest", "give the inner dict a model_config")
                parts.append(f"{key}={self.ref(value)}")
            else:
                parts.append(f"{key}={_scalar(value, where, key)}")
        d = self.add("dict " + " ".join(parts))  # "dict " for an empty dict, as sd-mecha writes
        config = _written_config(node.model_config)
        if config is None:
            return d  # sd-mecha writes a config-less literal as its dict line alone
        return self.add(f"literal {d} model_config={_string(config, where)} "
                        f"merge_space={_optional_str(node.merge_space, where)}")


def _children(node: RecipeNode, where: _Where):
    if isinstance(node, MergeNode):
        names = _argument_names(node)
        return [(a, _Where(node.method, n)) for a, n in zip(node.args, names)] + \
               [(v, _Where(node.method, k)) for k, v in node.kwargs]
    if isinstance(node, LiteralNode) and node.is_dict:
        return [(v, where) for _, v in node.value if isinstance(v, RecipeNode)]
    return []


def _argument_names(node: MergeNode) -> List[Optional[str]]:
    spec = all_methods().get(node.method)
    if spec is None:
        return [None] * len(node.args)
    fixed = [p.name for p in spec.positional if not p.variadic]
    var = spec.variadic
    extra = var.name if var is not None else None
    return [fixed[i] if i < len(fixed) else extra for i in range(len(node.args))]


# --- values ----------------------------------------------------------------------------------

def _error(where: _Where, problem: str, hint: Optional[str] = None) -> RecipeError:
    if where.method is not None:
        return ParameterError(where.method, where.param, problem, hint)
    return RecipeError(f"cannot write the recipe as .mecha: {problem}", hint)


def _scalar(value, where: _Where, key: Optional[str] = None) -> str:
    if isinstance(value, str):
        return _string(value, where, key)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            what = f"the value of key {key!r} is {value}" if key is not None else f"{value}"
            raise _error(where, f"{what} cannot be written to .mecha (sd-mecha cannot read it back)", _LARGE_HINT)
        return repr(float(value))
    if isinstance(value, int):
        return repr(int(value))
    raise _error(where, f"a {type(value).__name__} cannot be written to .mecha")


def _string(value: str, where: _Where, key: Optional[str] = None) -> str:
    if any(c in value for c in _LINE_BREAKS):
        what = f"the value of key {key!r}" if key is not None else "a string"
        raise _error(where, f"{what} holds a line break, which .mecha cannot write: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _optional_str(value: Optional[str], where: _Where) -> str:
    return "null" if value is None else _string(value, where)


def _model_path(path: str) -> str:
    if not path:
        raise RecipeError("cannot write a model with an empty path to .mecha")
    if "=" in path:
        # sd-mecha's reader splits any token holding '=' into name=value, quotes or not, and its
        # model command takes the path only positionally: no spelling of such a path reads back.
        raise RecipeError(f"cannot write the model path {path!r} to .mecha: sd-mecha cannot read a path "
                          "holding '='", "rename the file (or folder) without '='")
    if any(c in path for c in _LINE_BREAKS):
        raise RecipeError(f"cannot write the model path {path!r} to .mecha: it holds a line break")
    return _string(path, _Where())


def _written_config(config: Optional[str]) -> Optional[str]:
    """The id written for a model_config: sd-mecha ids are '<arch>-<impl>'; pseudo-configs such
    as 'structural' (or a generic fallback) cannot be read back by sd-mecha, so they become null."""
    if config is None or config in UNKNOWN_CONFIGS or "-" not in config:
        return None
    return config


def _config(config: Optional[str]) -> str:
    written = _written_config(config)
    return "null" if written is None else _string(written, _Where())


def _check_key(key: str, where: _Where) -> None:
    bad = [c for c in _BAD_KEY_CHARS if c in key]
    if bad:
        raise _error(where, f"the dict key {key!r} holds {bad[0]!r}; .mecha keys are bare words "
                            "without spaces, quotes, backslashes, '=' or line breaks")
