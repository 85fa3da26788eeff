"""Reading .mecha text into recipe nodes.

Each instruction line becomes one value in a list; ``&N`` refers to the N-th of them. Merge
lines are bound through the method registry exactly like a Python call, and sd-mecha's scalar
triple (``dict key=v`` / ``literal ... "singleton-mecha"`` / ``merge "convert_singleton"``)
collapses back into one scalar :class:`~lib_mecha.recipe.LiteralNode`.

Every error is a :class:`~lib_mecha.errors.RecipeSyntaxError` naming the 1-based line of the whole
text (version line, comments and blank lines counted) and, where there is one, the column.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..errors import RecipeError, RecipeSyntaxError
from ..methods.registry import bind, resolve
from ..methods.spec import SPACES
from ..recipe import LiteralNode, ModelNode, RecipeNode
from .tokens import Token, syntax_error, tokenize

FORMAT_VERSION = "0.1.0"
VERSION_LINE = f"version {FORMAT_VERSION}"
SINGLETON_CONFIG = "singleton-mecha"
SINGLETON_METHOD = "convert_singleton"
SINGLETON_KEY = "key"
# sd-mecha writes "structural" for inputs of no known architecture but cannot read it back;
# for lib_mecha it means what None means: detect the architecture when planning.
UNKNOWN_CONFIGS = frozenset({"structural"})
CONSTANTS = {"null": None, "true": True, "false": False}
COMMANDS = ("model", "dict", "literal", "merge")


@dataclass(frozen=True)
class _Dict:
    """The value of a ``dict`` line: ordered ``(key, value)`` pairs, not yet a node."""

    items: Tuple[Tuple[str, object], ...]

    def node(self) -> LiteralNode:
        return LiteralNode(self.items)


Value = Union[RecipeNode, _Dict, int, float, bool, str, None]


@dataclass
class _Line:
    number: int  # 1-based in the whole text
    text: str


def split_lines(text: Union[str, bytes, Sequence[str]]) -> List[str]:
    """The text's lines, without their line ends (``\\n``, ``\\r\\n``); a list of lines
    (as ``readlines()`` gives, line ends kept or not) is accepted too."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if isinstance(text, os.PathLike):
        raise TypeError("deserialize() takes the recipe's text; use deserialize_path() for a file")
    if not isinstance(text, str):
        text = "\n".join(line.rstrip("\r\n") for line in text)
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read(text: Union[str, bytes, Sequence[str]]) -> Tuple[RecipeNode, Tuple[str, ...]]:
    """The recipe root and the comment lines' texts (without ``#`` and one following space)."""
    lines = split_lines(text)
    comments: List[str] = []
    instructions: List[_Line] = []
    version_seen = False
    version_line = 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            body = stripped[1:]
            comments.append(body[1:] if body.startswith(" ") else body)
            continue
        if not version_seen:
            _check_version(raw, number)
            version_seen = True
            version_line = number
            continue
        instructions.append(_Line(number, raw))
    if not version_seen:
        problem = "missing version line" if comments else "the text is empty"
        raise RecipeSyntaxError(f"{problem}: a recipe starts with the line '{VERSION_LINE}'", 1)
    if not instructions:
        raise syntax_error("the recipe has no instruction after the version line", version_line,
                           lines[version_line - 1])
    results = _Interpreter(instructions).run()
    root = results[-1]
    return (root.node() if isinstance(root, _Dict) else root), tuple(comments)


def _check_version(raw: str, number: int) -> None:
    words = raw.split()
    if words[0] != "version":
        raise syntax_error(f"missing version line: the recipe must start with '{VERSION_LINE}'", number, raw)
    if len(words) != 2:
        raise syntax_error(f"bad version line; expected '{VERSION_LINE}'", number, raw)
    if words[1] != FORMAT_VERSION:
        raise syntax_error(f"unsupported format version {words[1]}; this reader knows {FORMAT_VERSION}",
                                number, raw)


class _Interpreter:
    def __init__(self, lines: List[_Line]):
        self.lines = lines
        self.results: List[Value] = []
        self.line: Optional[_Line] = None

    def run(self) -> List[Value]:
        for line in self.lines:
            self.line = line
            tokens = tokenize(line.text, line.number)
            command, args = tokens[0], tokens[1:]
            if command.quoted or command.name is not None or command.text not in COMMANDS:
                self.fail(f"unknown command {command.text!r}; expected one of {', '.join(COMMANDS)}", command)
            self.results.append(getattr(self, f"do_{command.text}")(command, args))
        return self.results

    # --- errors and values ----------------------------------------------------------------

    def fail(self, problem: str, token: Optional[Token] = None, cause: Optional[BaseException] = None):
        column = token.column if token else None
        raise syntax_error(problem, self.line.number, self.line.text, column) from cause

    def value(self, token: Token) -> Value:
        if token.quoted:
            return token.text
        word = token.text
        if word in CONSTANTS:
            return CONSTANTS[word]
        if word.startswith("&"):
            return self.reference(token)
        if "." in word or "e" in word.lower():
            try:
                number = float(word)
            except ValueError:
                self.fail(self.bad_word(word), token)
            if not math.isfinite(number):
                self.fail(f"the number {word} is out of range", token)
            return number
        try:
            return int(word)
        except ValueError:
            self.fail(self.bad_word(word), token)

    @staticmethod
    def bad_word(word: str) -> str:
        lowered = word.lower().lstrip("+-")
        if lowered in ("inf", "infinity", "nan"):
            return f"{word} is not a valid number here (use a large finite number such as 1e+30)"
        if word.replace("_", "").isalnum() and not word[:1].isdigit():
            return f"unquoted word {word!r} (strings are written in double quotes)"
        return f"bad number {word!r}"

    def reference(self, token: Token) -> Value:
        digits = token.text[1:]
        if not (digits.isascii() and digits.isdigit()):
            self.fail(f"bad reference {token.text!r}: expected & followed by an instruction number", token)
        index = int(digits)
        here = len(self.results)
        if index < here:
            return self.results[index]
        if index == here:
            self.fail(f"{token.text} refers to this line itself; references must point to earlier lines", token)
        if index < len(self.lines):
            later = self.lines[index].number
            self.fail(f"{token.text} refers to a later line ({later}); references must point to earlier lines",
                      token)
        self.fail(f"{token.text} refers to no instruction (the recipe has {len(self.lines)}, numbered from 0)",
                  token)

    def split(self, args: List[Token]):
        positional: List[Tuple[Token, Value]] = []
        keywords: Dict[str, Tuple[Token, Value]] = {}
        for token in args:
            if token.name is None:
                if keywords:
                    self.fail("a positional argument after a keyword argument", token)
                positional.append((token, self.value(token)))
            else:
                if token.name in keywords:
                    self.fail(f"{token.name!r} is given twice", token)
                keywords[token.name] = (token, self.value(token))
        return positional, keywords

    def config_and_space(self, command: str, extra: List[Tuple[Token, Value]],
                         keywords: Dict[str, Tuple[Token, Value]]):
        names = ("model_config", "merge_space")
        if len(extra) > len(names):
            self.fail(f"{command} takes at most {len(names) + 1} positional arguments", extra[len(names)][0])
        given = {}
        for name, item in zip(names, extra):
            given[name] = item
        for name, item in keywords.items():
            if name not in names:
                self.fail(f"{command} has no argument {name!r}; it takes model_config= and merge_space=", item[0])
            if name in given:
                self.fail(f"{name!r} is given twice", item[0])
            given[name] = item
        config = space = None
        if "model_config" in given:
            token, config = given["model_config"]
            if config is not None and not isinstance(config, str):
                self.fail("model_config must be a quoted identifier or null", token)
            if config in UNKNOWN_CONFIGS:
                config = None
        if "merge_space" in given:
            token, space = given["merge_space"]
            if space is not None and space not in SPACES:
                self.fail(f"unknown merge_space {space!r}; expected one of {', '.join(SPACES)} or null", token)
        return config, space

    # --- commands -------------------------------------------------------------------------

    def do_model(self, command: Token, args: List[Token]) -> ModelNode:
        positional, keywords = self.split(args)
        if "path" in keywords or not positional:
            self.fail('model takes the path first, as a quoted string: model "a.safetensors"', command)
        token, path = positional[0]
        if not isinstance(path, str) or not path:
            self.fail('the model path must be a non-empty quoted string', token)
        config, space = self.config_and_space("model", positional[1:], keywords)
        return ModelNode(path, config, space)

    def do_dict(self, command: Token, args: List[Token]) -> _Dict:
        items = []
        seen = set()
        for token in args:
            if token.name is None:
                self.fail("dict takes key=value pairs only", token)
            if token.name in seen:
                self.fail(f"key {token.name!r} is given twice", token)
            seen.add(token.name)
            value = self.value(token)
            if isinstance(value, _Dict):
                self.fail("a dict value cannot be another dict; wrap it in a literal line", token)
            items.append((token.name, value))
        return _Dict(tuple(items))

    def do_literal(self, command: Token, args: List[Token]) -> LiteralNode:
        positional, keywords = self.split(args)
        if not positional or not isinstance(positional[0][1], _Dict):
            where = positional[0][0] if positional else command
            self.fail("literal takes a reference to a dict line first: literal &N model_config=...", where)
        config, space = self.config_and_space("literal", positional[1:], keywords)
        return LiteralNode(positional[0][1].items, config, space)

    def do_merge(self, command: Token, args: List[Token]) -> RecipeNode:
        if args and args[0].name is None and not args[0].quoted:
            self.fail('the method name must be a quoted string: merge "weighted_sum" ...', args[0])
        positional, keywords = self.split(args)
        if not positional:
            self.fail('merge takes a quoted method name first: merge "weighted_sum" &0 &1', command)
        method_token, method = positional[0]
        rest = positional[1:]
        if method == SINGLETON_METHOD:
            return self.singleton(method_token, rest, keywords)
        try:
            spec = resolve(method)
        except RecipeError as e:
            self.fail(e.format_message(), method_token, e)
        call_args = [_as_argument(v) for _, v in rest]
        call_kwargs = {name: _as_argument(v) for name, (_, v) in keywords.items()}
        try:
            return bind(spec, call_args, call_kwargs)
        except RecipeError as e:
            self.fail(e.format_message(), _culprit(spec, getattr(e, "param", None), rest, keywords), e)

    def singleton(self, method_token: Token, rest, keywords) -> LiteralNode:
        if keywords or len(rest) != 1:
            self.fail(f"{SINGLETON_METHOD} takes exactly one reference to a singleton literal", method_token)
        token, value = rest[0]
        ok = (isinstance(value, LiteralNode) and value.is_dict and value.model_config == SINGLETON_CONFIG
              and len(value.value) == 1 and value.value[0][0] == SINGLETON_KEY
              and not isinstance(value.value[0][1], RecipeNode))
        if not ok:
            self.fail(f'{SINGLETON_METHOD} takes a literal of one plain value "key" under '
                      f'model_config="{SINGLETON_CONFIG}"', token)
        return LiteralNode(value.value[0][1], None, value.merge_space)


def _as_argument(value: Value):
    return value.node() if isinstance(value, _Dict) else value


def _culprit(spec, param: Optional[str], rest, keywords) -> Optional[Token]:
    """The token that gave the parameter an error names, for the column."""
    if param is None:
        return None
    if param in keywords:
        return keywords[param][0]
    fixed = [p.name for p in spec.positional if not p.variadic]
    if param in fixed and fixed.index(param) < len(rest):
        return rest[fixed.index(param)][0]
    return None
