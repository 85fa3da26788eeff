"""The session's recipe as .mecha text, and a .mecha text (pasted or uploaded) back into a session."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..errors import MechaError, RecipeSyntaxError
from ..recipe import RecipeNode, models_of
from . import lora_support
from .catalog import Catalog
from .model import DraftError, to_node, unused_steps
from .reading import NotExpressible, from_node
from .session import Session


@dataclass
class Compiled:
    """The draft as a recipe: ``node`` and ``text`` when complete, else ``problem`` says why."""

    node: Optional[RecipeNode]
    text: str
    problem: str
    warnings: Tuple[str, ...]


def compile_session(session: Session) -> Compiled:
    """The session's recipe node and .mecha text (never raises for a user's mistake).

    Kept until the draft changes: one edit renders several panels that all need it."""
    cached = session.compiled
    if cached is not None and cached[0] is session.draft:
        return cached[1]
    compiled = _compile(session.draft)
    session.compiled = (session.draft, compiled)
    return compiled


def _compile(draft) -> Compiled:
    from ..recipe_text import serialize
    warnings: List[str] = []
    unused = unused_steps(draft)
    if unused:
        warnings.append("not used by the last step, so not merged: "
                        + ", ".join(f"step {i + 1}" for i in unused))
    try:
        node = to_node(draft, lora_support.builder(), warnings.append)
        text = serialize(node)
    except DraftError as e:
        return Compiled(None, "", "incomplete: " + e.format_message(), tuple(warnings))
    except MechaError as e:
        return Compiled(None, "", e.format_message(), tuple(warnings))
    return Compiled(node, text, "", tuple(warnings))


def load_text(session: Session, text: str, catalog: Catalog) -> bool:
    """Replace the session's draft by the recipe in ``text``.

    On any problem the draft is left untouched and ``session.text_message`` says what is wrong:
    the line and problem of a syntax error, or the part of the recipe the builder cannot show.
    A model that is not in the lists is named (with files sharing its sha256) but still loaded.
    """
    from ..recipe_text import deserialize_with_comments
    if not (text or "").strip():
        session.text_message = "nothing to load: paste a .mecha recipe first"
        return False
    try:
        node, comments = deserialize_with_comments(text)
    except RecipeSyntaxError as e:
        session.text_message = e.format_message() + _cause(e)
        return False
    except MechaError as e:
        session.text_message = e.format_message()
        return False
    try:
        draft = from_node(node, lora_support.reader(), lora_support.builder())
    except NotExpressible as e:
        session.text_message = "the builder cannot show this recipe: " + e.format_message()
        return False
    session.draft = draft
    session.selected = len(draft) - 1
    session.mbw_target = None
    missing = catalog.missing_models([n.path for n in models_of(node)], comments)
    session.text_message = "; ".join(missing) if missing else f"loaded a recipe of {len(draft)} step(s)"
    return True


def _cause(e: BaseException) -> str:
    cause = e.__cause__
    if isinstance(cause, MechaError):
        text = cause.format_message()
        return "" if text in e.format_message() else f" ({text})"
    return ""
