"""Splitting one .mecha line into tokens.

The rules are sd-mecha's (reference §2.1), with two deliberate differences that only make the
reader more tolerant: a quoted string may hold ``=`` without being split into a keyword argument,
and tabs separate arguments like spaces. Garbage that sd-mecha would read in surprising ways
(text glued to a closing quote, a lone trailing backslash) is an error here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from ..errors import RecipeSyntaxError

_SPACES = " \t"


@dataclass(frozen=True)
class Token:
    """One argument of an instruction.

    Attributes:
        name: the keyword (text before the first unquoted ``=``), or None for a positional one.
        text: the unescaped string content, or the bare word.
        quoted: True for a double-quoted string.
        column: 1-based column of the token's first character in the line.
    """

    name: Optional[str]
    text: str
    quoted: bool
    column: int


class _Builder:
    __slots__ = ("start", "name", "chars", "quoted", "closed")

    def __init__(self, start: int):
        self.start = start
        self.name: Optional[str] = None
        self.chars: List[str] = []
        self.quoted = False
        self.closed = False  # a closing quote was seen: only a separator may follow


_SHOWN = 120  # characters of a long line quoted in an error message


def syntax_error(problem: str, line_no: int, line: str, column: Optional[int] = None) -> RecipeSyntaxError:
    """A RecipeSyntaxError quoting the line, or for a long line (a big dict) the part around
    ``column``, so that the message stays readable."""
    shown = line.strip()
    if len(shown) > _SHOWN:
        start = max(0, (column or 1) - 1 - (len(line) - len(line.lstrip())) - _SHOWN // 2)
        piece = shown[start:start + _SHOWN]
        shown = ("…" if start else "") + piece + ("…" if start + _SHOWN < len(shown) else "")
    return RecipeSyntaxError(problem, line_no, shown, column)


def tokenize(line: str, line_no: int) -> List[Token]:
    """The tokens of ``line`` (a whole line of the text, leading whitespace included).

    Raises:
        RecipeSyntaxError: an unbalanced quote, text glued to a quoted string, a lone trailing
            backslash, or ``name=`` without a value.
    """
    tokens: List[Token] = []
    current: Optional[_Builder] = None
    in_quotes = False
    escaped = False
    quote_col = 0

    def fail(problem: str, index: int):
        raise syntax_error(problem, line_no, line, index + 1)

    def finish(b: _Builder):
        if b.name is not None and not b.chars and not b.quoted:
            fail(f"'{b.name}=' has no value", b.start)
        tokens.append(Token(b.name, "".join(b.chars), b.quoted, b.start + 1))

    for i, c in enumerate(line):
        if escaped:
            current.chars.append(c)
            escaped = False
            continue
        if in_quotes:
            if c == "\\":
                escaped = True
            elif c == '"':
                in_quotes = False
                current.closed = True
            else:
                current.chars.append(c)
            continue
        if c in _SPACES:
            if current is not None:
                finish(current)
                current = None
            continue
        if current is None:
            current = _Builder(i)
        elif current.closed:
            fail("expected a space after the closing quote", i)
        if c == "\\":
            escaped = True
        elif c == '"':
            if current.chars:
                fail("a quote in the middle of a word (strings are written \"...\")", i)
            in_quotes = True
            current.quoted = True
            quote_col = i
        elif c == "=" and current.name is None:
            current.name = "".join(current.chars)
            current.chars = []
        else:
            current.chars.append(c)
    if in_quotes:
        fail("unbalanced quote: the string is not closed", quote_col)
    if escaped:
        fail("the line ends with a lone backslash", len(line) - 1)
    if current is not None:
        finish(current)
    return tokens
