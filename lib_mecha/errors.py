"""One exception family for everything a user can get wrong.

Every error carries a message that names the culprit (file, key, line, parameter) and,
where one exists, a hint saying what to do. ``format_message()`` is what the UI shows and
the command line prints; the attributes carry the same context for callers that want it.
Built-in exceptions stay reserved for programming errors.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Optional, Sequence


class MechaError(Exception):
    """Base of every error a user can cause. ``exit_code`` is what the command line returns."""

    exit_code = 1

    def __init__(self, message: str, hint: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def format_message(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message

    def __str__(self) -> str:
        return self.format_message()


def suggest(name: str, known: Iterable[str], n: int = 3) -> list:
    """The known names closest to ``name``, best first."""
    return difflib.get_close_matches(name, list(known), n=n, cutoff=0.6)


def _did_you_mean(suggestions: Sequence[str]) -> Optional[str]:
    if not suggestions:
        return None
    return "did you mean " + " or ".join(repr(s) for s in suggestions) + "?"


# --- recipes and .mecha text -------------------------------------------------------------

class RecipeError(MechaError):
    """A recipe that cannot be built or planned."""


class RecipeSyntaxError(RecipeError):
    """A .mecha text that cannot be read; ``line`` is 1-based and counts every line of the text."""

    exit_code = 2

    def __init__(self, problem: str, line: int, text: str = "", column: Optional[int] = None):
        where = f"line {line}" + (f", column {column}" if column is not None else "")
        shown = f": {text.strip()!r}" if text.strip() else ""
        super().__init__(f".mecha {where}: {problem}{shown}")
        self.problem = problem
        self.line = line
        self.column = column
        self.text = text


class UnknownMethod(RecipeError):
    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.suggestions = suggest(name, known)
        super().__init__(f"unknown merge method {name!r}", _did_you_mean(self.suggestions)
                         or "run 'python -m lib_mecha methods' for the list")


class ParameterError(RecipeError):
    """A wrong, missing or out-of-range argument of a merge method."""

    def __init__(self, method: str, param: Optional[str], problem: str, hint: Optional[str] = None):
        self.method = method
        self.param = param
        what = f"{method}: parameter {param!r}" if param else method
        super().__init__(f"{what}: {problem}", hint)


class MergeSpaceError(RecipeError):
    """Weights given where deltas are expected, or the reverse."""


# --- models and files --------------------------------------------------------------------

class ModelNotFound(MechaError):
    def __init__(self, name: str, searched: Sequence[str] = (), hint: Optional[str] = None):
        self.name = name
        self.searched = list(searched)
        where = f" (looked in: {', '.join(self.searched)})" if self.searched else ""
        super().__init__(f"model not found: {name}{where}", hint)


class SafetensorsError(MechaError):
    """A file that is not valid safetensors: truncated, hostile or of another format."""

    def __init__(self, path, problem: str, hint: Optional[str] = None):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}", hint)


class UnsafeFormat(SafetensorsError):
    """A pickled checkpoint (.ckpt/.pt/.bin): never unpickled, since that can run code."""


class LoraConfigError(SafetensorsError):
    """A PEFT LoRA config (``adapter_config.json`` or a LoRA file's ``lora_adapter_metadata``) that
    cannot be read, or that disagrees with the weights it describes."""


class UnknownArchitecture(MechaError):
    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.suggestions = suggest(name, known)
        super().__init__(f"unknown architecture {name!r}", _did_you_mean(self.suggestions))


class ArchitectureMismatch(MechaError):
    """Inputs of different architectures combined in one key-wise operation."""


class ShapeMismatch(MechaError):
    def __init__(self, key: str, first: tuple, second: tuple, where: str = ""):
        self.key = key
        self.shapes = (tuple(first), tuple(second))
        suffix = f" ({where})" if where else ""
        super().__init__(f"shapes disagree for key {key!r}: {list(first)} vs {list(second)}{suffix}")


class NothingToMerge(MechaError):
    """No output key can be produced: the inputs share no keys."""


# --- output ------------------------------------------------------------------------------

class OutputError(MechaError):
    """The output cannot be written where asked."""


class OutputExists(OutputError):
    def __init__(self, path):
        self.path = str(path)
        super().__init__(f"output already exists: {self.path}",
                         "choose another name, or ask for overwriting (--overwrite)")


class OutputIsInput(OutputError):
    """An output path that is one of the merge's own inputs (never overwritten, even when asked)."""

    def __init__(self, output, model):
        self.path = str(output)
        self.model = str(model)
        same = "" if str(output) == str(model) else f", {self.model}"
        super().__init__(f"refusing to write {self.path}: it is an input of this recipe{same}",
                         "inputs are never overwritten, even when asked; save under another name")


class PathEscape(OutputError):
    """A name that would leave the folder it must stay in."""


# --- running -----------------------------------------------------------------------------

class MergeCancelled(MechaError):
    exit_code = 130

    def __init__(self, message: str = "merge cancelled; nothing was written"):
        super().__init__(message)


class LentMemoryKept(MechaError):
    """A merge method kept memory the engine lent it past the key (or loop) it was lent for."""

    def __init__(self, lent_to: str):
        self.lent_to = lent_to
        super().__init__(f"memory lent to {lent_to} is still in use after it: a merge method kept a buffer "
                         "of its workspace (or a view of it), which the next key would overwrite",
                         "a method may keep only memory it allocated itself; see lib_mecha/methods/spec.py")


class HostError(MechaError):
    """The WebUI host cannot do what was asked (no model loaded, busy, unsupported)."""


class Busy(HostError):
    """Another merge or a generation holds the lock."""
