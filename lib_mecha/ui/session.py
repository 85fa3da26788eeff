"""One browser tab's editing state, and every edit the builder can make to it.

A :class:`Session` lives in a ``gr.State``. Gradio hands each event the session object itself,
so edits mutate it in place under its lock: two events of one tab never lose each other's
edit, whatever the gradio version's concurrency. Each browser tab starts with a fresh session
(``__deepcopy__``, which gradio uses to create per-tab state, returns a new one).

Nothing here imports gradio: the panels turn widget values into these calls and render the
session back into widget updates.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import MechaError
from ..methods import all_methods, resolve
from ..methods.spec import Param
from . import model as m
from .catalog import Catalog, parse_step_label, step_label
from .lora_support import LORA_METHODS

DEFAULT_METHOD = "weighted_sum"
# block converters are written by the block weights panel, LoRA methods by the LoRA panel
HIDDEN_CATEGORIES = ("blocks", "lora")


def builder_methods() -> List[str]:
    """Methods the builder offers: those that take models or step results and produce a model."""
    out = []
    for name, spec in all_methods().items():
        if spec.category in HIDDEN_CATEGORIES or name in LORA_METHODS:
            continue
        if spec.returns == "param" or any(p.is_tensor and p.space == "param" for p in spec.params):
            continue  # per-key values (masks...) feed parameters, which the builder's steps never do
        if not any(p.is_tensor for p in spec.params):
            continue
        out.append(name)
    return sorted(out, key=lambda n: (all_methods()[n].category, n))


def coerce(p: Param, raw):
    """A widget's value as the parameter's Python value (Number gives floats, "" means None...)."""
    if p.kind == "bool":
        return bool(raw)
    if p.kind == "str":
        if raw in (None, "", NONE_CHOICE) and (p.nullable or p.default is None):
            return None
        return "" if raw is None else str(raw)
    if raw is None or raw == "":
        return None if p.nullable else (p.default if not p.required else 0)
    if p.kind == "int":
        return int(round(float(raw)))
    return float(raw)


NONE_CHOICE = "(none)"


class Session:
    """The draft recipe plus what the tab has selected. Use ``with session.lock``."""

    def __init__(self, draft: Optional[m.Draft] = None):
        self.lock = threading.RLock()
        self.draft: m.Draft = draft if draft is not None else (m.new_step(DEFAULT_METHOD),)
        self.selected = 0
        self.mbw_target: Optional[str] = None   # "p:<step>:<param>" or "l:<step>:<lora>"
        self.text_message = ""
        self.message = ""
        self.message_at = ""    # the panel whose control the message is about (see tab.py)
        self.warnings: Tuple[str, ...] = ()
        self.pending_save: Optional[dict] = None  # a save waiting for overwrite confirmation
        self._followed: Dict[str, Any] = {}      # place -> the job its next follower shows
        self.compiled: Optional[tuple] = None   # (draft, recipe_io.Compiled): compiled once per draft

    def __deepcopy__(self, memo):
        return Session(self.draft)

    # --- jobs started from this tab --------------------------------------------------------

    def follow(self, place: str, job) -> None:
        """Hand ``job`` to the next follower of ``place`` (the listener chained after the button's)."""
        with self.lock:
            self._followed[place] = job

    def take_followed(self, place: str):
        with self.lock:
            return self._followed.pop(place, None)

    # --- steps -----------------------------------------------------------------------------

    @property
    def step(self) -> m.Step:
        self.selected = max(0, min(self.selected, len(self.draft) - 1))
        return self.draft[self.selected]

    def spec(self):
        return resolve(self.step.method)

    def _put(self, step: m.Step, index: Optional[int] = None) -> None:
        i = self.selected if index is None else index
        self.draft = self.draft[:i] + (step,) + self.draft[i + 1:]

    def select(self, index: int) -> None:
        if 0 <= index < len(self.draft):
            self.selected = index

    def add_step(self) -> None:
        """A new last step that takes the current last step as its first input."""
        method = self.draft[-1].method if self.draft else DEFAULT_METHOD
        step = m.new_step(method)
        spec = resolve(method)
        first = m.tensor_params(spec)
        if first:
            step = step.with_input(first[0].name, m.Input.of_step(len(self.draft) - 1))
        elif spec.variadic is not None:
            step = replace(step, extra=(m.Input.of_step(len(self.draft) - 1),))
        self.draft = self.draft + (replace(step, loras=()),)
        self.selected = len(self.draft) - 1

    def remove_step(self) -> None:
        if len(self.draft) <= 1:
            self.message = "the recipe needs at least one step"
            return
        self.draft = m.remove_step(self.draft, self.selected)
        self.selected = min(self.selected, len(self.draft) - 1)
        self.mbw_target = None

    def set_method(self, method: str) -> None:
        if method == self.step.method:
            return
        self._put(m.new_step(method, self.step))
        self.mbw_target = None

    # --- inputs ----------------------------------------------------------------------------

    def input_from_label(self, label: Optional[str], catalog: Catalog) -> m.Input:
        if not label:
            return m.Input()
        index = parse_step_label(label)
        if index is not None:
            return m.Input.of_step(index)
        return m.Input.model(catalog.checkpoint_name(label))

    def input_label(self, value: m.Input, catalog: Catalog) -> Optional[str]:
        if value.kind == "step":
            return step_label(value.step)
        if value.kind == "model":
            return catalog.checkpoint_label(value.path)
        return None

    def set_input(self, name: str, label: Optional[str], catalog: Catalog) -> None:
        old = self.step.input(name)
        new = self.input_from_label(label, catalog)
        if new.kind == "model" and old.kind == "model" and new.path == old.path:
            return  # keep a pasted model's config and merge space
        self._put(self.step.with_input(name, new))

    def set_extra(self, labels: Sequence[str], catalog: Catalog) -> None:
        old = {self.input_label(v, catalog): v for v in self.step.extra}
        values = tuple(old.get(lb) or self.input_from_label(lb, catalog) for lb in labels or ())
        self._put(replace(self.step, extra=tuple(v for v in values if v.is_set)))

    # --- parameter values ------------------------------------------------------------------

    def set_value(self, name: str, raw) -> None:
        p = self.spec().param(name)
        pv = self.step.param(name)
        self._put(self.step.with_param(name, replace(pv, value=coerce(p, raw))))

    def set_mode(self, name: str, mode: str, layout: Optional[str], arch: Optional[str]) -> None:
        """Switch a parameter between one value, per-block values and per-key patterns."""
        pv = self.step.param(name)
        self._put(self.step.with_param(name, switch_mode(pv, mode, layout, arch)))
        key = f"p:{self.selected}:{name}"
        if mode == m.BLOCKS:
            self.mbw_target = key
        elif self.mbw_target == key:
            self.mbw_target = None

    def set_patterns(self, name: str, text: str) -> None:
        pv = self.step.param(name)
        self._put(self.step.with_param(name, replace(pv, patterns=text or "")))

    # --- LoRAs -----------------------------------------------------------------------------

    def add_lora(self, label: Optional[str], catalog: Catalog) -> None:
        if not label:
            loras = catalog.loras()
            if not loras:
                self.message = "no LoRA files found in the LoRA folders"
                return
            label = loras[0].label
        entry = m.LoraEntry(catalog.lora_name(label))
        self._put(replace(self.step, loras=self.step.loras + (entry,)))

    def set_lora(self, index: int, label: Optional[str], catalog: Catalog) -> None:
        loras = list(self.step.loras)
        if 0 <= index < len(loras) and label:
            loras[index] = replace(loras[index], path=catalog.lora_name(label))
            self._put(replace(self.step, loras=tuple(loras)))

    def set_lora_strength(self, index: int, raw) -> None:
        loras = list(self.step.loras)
        if 0 <= index < len(loras) and raw is not None:
            loras[index] = replace(loras[index], strength=replace(loras[index].strength, value=float(raw)))
            self._put(replace(self.step, loras=tuple(loras)))

    def set_lora_blocks(self, index: int, on: bool, layout: Optional[str]) -> None:
        loras = list(self.step.loras)
        if not 0 <= index < len(loras):
            return
        mode = m.BLOCKS if on else m.VALUE
        loras[index] = replace(loras[index], strength=switch_mode(loras[index].strength, mode, layout, None))
        self._put(replace(self.step, loras=tuple(loras)))
        key = f"l:{self.selected}:{index}"
        if on:
            self.mbw_target = key
        elif self.mbw_target == key:
            self.mbw_target = None

    def remove_lora(self, index: int) -> None:
        loras = list(self.step.loras)
        if 0 <= index < len(loras):
            del loras[index]
            self._put(replace(self.step, loras=tuple(loras)))
            self.mbw_target = None

    # --- block weights (MBW) ---------------------------------------------------------------

    def mbw_targets(self) -> List[Tuple[str, str]]:
        """``(label, key)`` of every value in blocks mode, over all steps."""
        out = []
        for i, step in enumerate(self.draft):
            for name, pv in step.params:
                if pv.mode == m.BLOCKS:
                    out.append((f"step {i + 1} · {step.method} · {name}", f"p:{i}:{name}"))
            for j, lora in enumerate(step.loras):
                if lora.strength.mode == m.BLOCKS:
                    out.append((f"step {i + 1} · LoRA {j + 1} ({_short(lora.path)}) · strength", f"l:{i}:{j}"))
        return out

    def current_target(self) -> Optional[str]:
        keys = [k for _, k in self.mbw_targets()]
        if self.mbw_target not in keys:
            self.mbw_target = keys[0] if keys else None
        return self.mbw_target

    def target_value(self, key: Optional[str] = None) -> Optional[m.ParamValue]:
        key = key or self.current_target()
        if not key:
            return None
        kind, i, what = key.split(":", 2)
        step = self.draft[int(i)]
        if kind == "p":
            return step.param(what)
        return step.loras[int(what)].strength

    def set_target_value(self, pv: m.ParamValue, key: Optional[str] = None) -> None:
        key = key or self.current_target()
        if not key:
            return
        kind, i, what = key.split(":", 2)
        index = int(i)
        step = self.draft[index]
        if kind == "p":
            step = step.with_param(what, pv)
        else:
            loras = list(step.loras)
            loras[int(what)] = replace(loras[int(what)], strength=pv)
            step = replace(step, loras=tuple(loras))
        self._put(step, index)

    def set_block(self, block: str, value) -> None:
        pv = self.target_value()
        if pv is None or value is None:
            return
        values = pv.block_map
        values[block] = float(value)
        self.set_target_value(replace(pv, blocks=_ordered(pv.config, values)))

    def set_blocks_text(self, text: str) -> None:
        """A comma list in block order; empty entries take the default value."""
        from ..arch.block_weights import block_values
        pv = self.target_value()
        if pv is None:
            self.message = "no value is in block mode; switch a parameter to 'per block' first"
            return
        values = block_values(pv.config, text if "," in (text or "") else (text or "").strip())
        self.set_target_value(replace(pv, blocks=_ordered(pv.config, values)))

    def set_layout(self, layout: str, arch: Optional[str] = None) -> None:
        """Give the edited value the blocks of ``layout``; refused when ``arch`` (the step's
        models') is known and the layout groups another architecture's keys."""
        pv = self.target_value()
        if pv is None or not layout or layout == pv.config:
            return
        from ..arch.layouts import resolve_layout
        check_layout(layout, arch, self.target_step())
        blocks = resolve_layout(layout).blocks
        self.set_target_value(replace(pv, config=layout, blocks=tuple((b, pv.value) for b in blocks)))

    def target_step(self) -> Optional[int]:
        """The step whose value the block weights panel edits."""
        key = self.current_target()
        return int(key.split(":")[1]) if key else None

    def apply_preset(self, name: str) -> None:
        from ..arch.presets import preset
        pv = self.target_value()
        if pv is None or not name:
            return
        self.set_target_value(replace(pv, blocks=preset(pv.config, name).values))

    # --- recipe ----------------------------------------------------------------------------

    def first_model(self, index: Optional[int] = None) -> Optional[str]:
        """The first model feeding step ``index`` (through earlier steps), for architecture detection."""
        seen = set()

        def visit(i: int) -> Optional[str]:
            if i in seen or not 0 <= i < len(self.draft):
                return None
            seen.add(i)
            step = self.draft[i]
            for value in [v for _, v in step.inputs] + list(step.extra):
                if value.kind == "model" and value.path:
                    return value.path
                if value.kind == "step":
                    found = visit(value.step)
                    if found:
                        return found
            return None
        return visit(self.selected if index is None else index)


def check_layout(layout: str, arch: Optional[str], step: Optional[int]) -> None:
    """Raise when block layout ``layout`` is not one of architecture ``arch`` (unknown: no check)."""
    from ..arch.layouts import layouts_for, resolve_layout
    owner = resolve_layout(layout).architecture
    if arch and owner != arch:
        which = f"step {step + 1}'s models are" if step is not None else "the models are"
        fits = ", ".join(layouts_for(arch)) or "none"
        raise MechaError(f"block layout {layout} is for {owner} models, but {which} {arch}",
                         f"choose a layout of {arch} ({fits})")


def switch_mode(pv: m.ParamValue, mode: str, layout: Optional[str], arch: Optional[str]) -> m.ParamValue:
    """The value in another mode. Entering block mode fills every block with the plain value,
    so the merge is unchanged until a block is moved."""
    if mode == pv.mode:
        return pv
    if mode == m.BLOCKS:
        config = pv.config if pv.mode == m.BLOCKS else layout
        if not config:
            raise MechaError("no block layout is known for these inputs",
                             "pick the step's models first (a recognised architecture has a layout)")
        from ..arch.layouts import resolve_layout
        blocks = pv.blocks or tuple((b, _number(pv.value)) for b in resolve_layout(config).blocks)
        return replace(pv, mode=m.BLOCKS, config=config, blocks=blocks)
    if mode == m.PATTERNS:
        if not arch:
            raise MechaError("per-key patterns need the inputs' architecture", "pick the step's models first")
        return replace(pv, mode=m.PATTERNS, config=arch)
    return replace(pv, mode=m.VALUE)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _ordered(layout_id: Optional[str], values: dict) -> Tuple[Tuple[str, float], ...]:
    from ..arch.layouts import resolve_layout
    blocks = resolve_layout(layout_id).blocks
    return tuple((b, float(values[b])) for b in blocks if b in values)


def _short(path: str) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name[:-len(".safetensors")] if name.endswith(".safetensors") else name


def guarded(session: Session, edit: Callable[[], None]) -> None:
    """Run an edit; a MechaError becomes the session's message instead of a traceback."""
    try:
        edit()
    except MechaError as e:
        session.message = e.format_message()
