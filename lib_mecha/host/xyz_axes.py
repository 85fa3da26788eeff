"""The Mecha axes of the host's X/Y/Z plot: their labels, value syntax, and each value's recipe.

The labels are fixed (the host builds its axis list once, at start-up); what they vary is looked
up when a grid starts, in the recipe of the merge loaded then:

* ``Mecha: alpha (step N)``, N = 1 to 4: ``alpha`` of step N; numbers in the host's syntax
  (``0.2, 0.4``, ``0-1 (+0.25)``, ``0-1 [5]``);
* ``Mecha: parameter``: any numeric parameter of any step as ``step.parameter=value``
  (``2.k=0.2, 2.k=0.4``), or one block's value of it as ``step.parameter.BLOCK=value``
  (``1.alpha.IN04=0.3``; the other blocks keep theirs); the value may be a range too
  (``2.k=0-1 [5]``);
* ``Mecha: block weights``: a value per block for the parameter that has block weights: a preset
  name of its layout, or the blocks' values in order (separated by spaces, or by commas inside
  quotes; ``|`` may separate the axis's values instead of commas). ``step.parameter=`` in front
  names the parameter when the recipe has none or several with block weights;
* ``Mecha: recipe``: ``.mecha`` files of the recipes folder (``<WebUI data folder>/mecha/recipes``)
  by name; needs no merge loaded;
* ``Mecha: method (step N)``: another method for step N, computed from the same inputs.

Steps are numbered as the Mecha tab numbers them (:mod:`lib_mecha.recipe_edit`).
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from ..errors import ParameterError, RecipeError
from ..recipe_edit import (block_weight_parameters, block_weights_of, parameter_node, step_of, value_parameter,
                           with_block_value, with_block_weights, with_method, with_parameter)

PREFIX = "Mecha: "
STEPS = 4                                    # steps 1..4 get an alpha and a method axis each
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
NUMBER = re.compile(rf"\s*{_NUMBER}\s*")
RANGE = re.compile(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})\s*(?:\(\s*({_NUMBER})\s*\)|\[\s*(\d+)\s*\])?\s*")
ASSIGNMENT = re.compile(r"\s*(\d+)\s*\.\s*([A-Za-z_]\w*)\s*(?:\.\s*(\w+)\s*)?=\s*(.*?)\s*", re.S)


@dataclass(frozen=True)
class Axis:
    """One Mecha axis. ``variant(session, recipe, value)`` is ``recipe`` with the value applied."""

    label: str
    kind: type                                   # what the host converts each value to
    variant: Callable[[Any, Any, Any], Any]
    order: int                                   # a cell applies a recipe file, then a method, then values
    cost: float                                  # the host runs the costliest axis outermost
    varies_merge: bool = True                    # needs a merge loaded
    planned: bool = False                        # keys or architecture may change: values are planned
    prepare: Optional[Callable[[str], List[str]]] = None
    choices: Optional[Callable[[Any], List[str]]] = None      # (host) -> what the host lists
    shown: Callable[[Any], str] = str                         # the value in the grid's legend


# --- value syntax ------------------------------------------------------------------------------------

def number_text(value: float) -> str:
    """A number as the recipe and the legend show it (10 significant digits: no 0.30000000000000004)."""
    return f"{value:.10g}"


def rounded(value: float) -> float:
    return float(number_text(float(value)))


def split_values(text: str) -> List[str]:
    """Comma-separated values, quotes respected, blanks dropped (as the host splits its axes)."""
    rows = csv.reader(io.StringIO(text or ""), skipinitialspace=True)
    return [v.strip() for row in rows for v in row if v.strip()]


def expand(text: str) -> List[float]:
    """A number, or a range as the host writes them: ``0-1`` (step 1), ``0-1 (+0.25)`` (step),
    ``0-1 [5]`` (count)."""
    if NUMBER.fullmatch(text):
        return [float(text)]
    m = RANGE.fullmatch(text)
    if m is None:
        raise RecipeError(f"{text.strip()!r} is not a number or a range", "write 0.5, 0-1 (+0.25) or 0-1 [5]")
    start, end = float(m[1]), float(m[2])
    if m[4] is not None:
        count = int(m[4])
        return [start + (end - start) * i / (count - 1) for i in range(count)] if count > 1 else [start] * count
    step = float(m[3]) if m[3] is not None else 1.0
    if step == 0 or (end - start) * step < 0:
        raise RecipeError(f"the range {text.strip()!r} never reaches its end", "use a step towards the end")
    return [start + i * step for i in range(int(math.floor((end - start) / step + 1e-9)) + 1)]


def assignment(text: str) -> Tuple[int, str, Optional[str], str]:
    """``2.k=0.4`` → ``(2, "k", None, "0.4")``; ``1.alpha.IN04=0.3`` → ``(1, "alpha", "IN04", "0.3")``."""
    m = ASSIGNMENT.fullmatch(text)
    if m is None:
        raise RecipeError(f"{text.strip()!r} does not name a step's parameter",
                          "write step.parameter=value (e.g. 2.k=0.4) or step.parameter.BLOCK=value "
                          "(e.g. 1.alpha.IN04=0.3); steps are numbered as in the Mecha tab")
    return int(m[1]), m[2], m[3], m[4]


def _one_number(text: str) -> float:
    values = expand(text)
    if len(values) != 1:
        raise RecipeError(f"{text.strip()!r} is a range, where one value is expected")
    return values[0]


# --- alpha and any numeric parameter ----------------------------------------------------------------

def _alpha(number: int):
    def variant(session, recipe, value):
        return with_parameter(recipe, number, "alpha", rounded(value))
    return variant


def prepare_parameters(text: str) -> List[str]:
    """Each ``step.parameter=value`` with its range expanded: ``2.k=0-1 [3]`` → three values."""
    out = []
    for item in split_values(text):
        step, name, block, value = assignment(item)
        target = f"{step}.{name}" + (f".{block}" if block else "")
        out.extend(f"{target}={number_text(v)}" for v in expand(value))
    return out


def _parameter(session, recipe, value):
    step, name, block, text = assignment(str(value))
    node = step_of(recipe, step)
    from ..methods import resolve
    p = value_parameter(resolve(node.method), name)
    if p.kind not in ("float", "int"):
        raise ParameterError(node.method, name, f"is a {p.kind} parameter; {PREFIX}parameter takes numbers")
    number = _one_number(text)
    if block is not None:
        return with_block_value(recipe, step, name, block, rounded(number), _layout_of(session, recipe, step, name))
    return with_parameter(recipe, step, name, int(number) if p.kind == "int" and number.is_integer()
                          else rounded(number))


# --- block weights ------------------------------------------------------------------------------------

def prepare_blocks(text: str) -> List[str]:
    """The axis's values: ``|``-separated when the text has a ``|``, else comma-separated."""
    if "|" in (text or ""):
        return [v.strip() for v in text.split("|") if v.strip()]
    return split_values(text)


def _blocks(session, recipe, value):
    text = str(value).strip()
    m = ASSIGNMENT.fullmatch(text)
    if m is not None and m[3] is None:
        step, name, text = int(m[1]), m[2], m[4]
        layout = _layout_of(session, recipe, step, name)
    else:
        targets = block_weight_parameters(recipe)
        if len(targets) != 1:
            which = ", ".join(f"{s}.{n}" for s, n, _ in targets) or "none has"
            raise RecipeError(f"{PREFIX}block weights needs one parameter with block weights in the recipe "
                              f"({which})", "write the parameter before the value, e.g. 1.alpha=GRAD_V")
        step, name, layout = targets[0]
    if "," not in text and len(text.split()) > 1:
        text = ",".join(text.split())     # values separated by spaces
    return with_block_weights(recipe, step, name, text, layout)


def _layout_of(session, recipe, step: int, name: str) -> str:
    """The parameter's block layout, or the first one of the loaded model's architecture."""
    from ..arch.layouts import layouts_for
    found = block_weights_of(parameter_node(recipe, step, name))
    if found is not None:
        return found[0]
    current = session.host.current_model()
    layouts = layouts_for(current.arch) if current is not None and current.arch else ()
    if not layouts:
        raise RecipeError("no block layout is known for the loaded model's architecture")
    return layouts[0]


def block_presets(host) -> List[str]:
    """Preset names of the loaded merge's block layouts (else of the loaded model's architecture)."""
    from ..arch.layouts import layouts_for
    from ..arch.presets import presets
    merge = host.loaded_merge() if host is not None else None
    layouts = [t[2] for t in block_weight_parameters(merge.recipe)] if merge is not None else []
    current = host.current_model() if host is not None else None
    if not layouts and current is not None and current.arch:
        layouts = list(layouts_for(current.arch))
    names: List[str] = []
    for layout in layouts:
        names.extend(n for n in presets(layout) if n not in names)
    return names


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:23] + "…"


# --- recipe files -------------------------------------------------------------------------------------

def recipes_folder(host) -> Path:
    return Path(host.data_dir()) / "recipes"


def recipe_names(host) -> List[str]:
    """The ``.mecha`` files of the recipes folder, by name (sub-folders as ``sub/name``)."""
    folder = recipes_folder(host) if host is not None else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.mecha") if p.is_file())


def read_recipe(host, name: str):
    """The recipe of ``<recipes folder>/<name>.mecha``; its models must lie in the model folders."""
    import lib_mecha
    from .jobs import check_recipe_paths
    from .paths import require_inside
    folder = recipes_folder(host)
    rel = name.strip()
    rel = rel if rel.lower().endswith(".mecha") else rel + ".mecha"
    path = require_inside(Path(os.path.abspath(folder / rel)), [folder], "recipe")
    if not path.is_file():
        known = ", ".join(recipe_names(host)) or "none"
        raise RecipeError(f"recipe file {rel} not found in {folder}", f"recipes there: {known}")
    try:
        node = lib_mecha.deserialize(path.read_text(encoding="utf-8"))
    except RecipeError as exc:
        raise RecipeError(f"{rel}: {exc.message}", exc.hint) from exc
    check_recipe_paths(node, host)
    return node


def _recipe(session, recipe, value):
    name = str(value)
    if name not in session.files:
        session.files[name] = read_recipe(session.host, name)
    return session.files[name]


# --- methods ------------------------------------------------------------------------------------------

def step_methods(host=None) -> List[str]:
    """Methods that can compute a step: they take models and return a model or a difference."""
    from ..methods import all_methods
    from ..methods.spec import PARAM
    from ..recipe_edit import LORA_METHOD
    return sorted(name for name, spec in all_methods().items()
                  if spec.returns != PARAM and name not in (LORA_METHOD, "lora_delta")
                  and any(p.is_tensor for p in spec.params))


def _method(number: int):
    def variant(session, recipe, value):
        return with_method(recipe, number, str(value).strip())
    return variant


# --- the axes -------------------------------------------------------------------------------------------

def _axes() -> Tuple[Axis, ...]:
    alphas = tuple(Axis(f"{PREFIX}alpha (step {n})", float, _alpha(n), order=2, cost=0.85,
                        shown=lambda v: f"alpha {number_text(v)}") for n in range(1, STEPS + 1))
    methods = tuple(Axis(f"{PREFIX}method (step {n})", str, _method(n), order=1, cost=0.9, planned=True,
                         choices=step_methods) for n in range(1, STEPS + 1))
    return alphas + (
        Axis(f"{PREFIX}parameter", str, _parameter, order=2, cost=0.8, prepare=prepare_parameters),
        Axis(f"{PREFIX}block weights", str, _blocks, order=2, cost=0.75, prepare=prepare_blocks,
             choices=block_presets, shown=_short),
        Axis(f"{PREFIX}recipe", str, _recipe, order=0, cost=0.95, varies_merge=False, planned=True,
             choices=recipe_names),
    ) + methods


AXES: Tuple[Axis, ...] = _axes()
