"""PEFT adapters: the scale of each module, from the LoRA config that peft keeps out of the weights.

A file with peft's ``lora_A`` / ``lora_B`` names holds no alpha. Its config is found, in order:

* the file's ``lora_adapter_metadata`` metadata entry (diffusers' ``save_lora_adapter`` writes the
  config itself; ``save_lora_weights`` writes one per component, each key prefixed with the
  component's name: ``unet.r``, ``transformer.lora_alpha``, ``text_encoder.rank_pattern``...);
* ``<name>.adapter_config.json`` next to ``<name>.safetensors`` (a renamed adapter);
* ``adapter_config.json`` in the same folder (peft's ``save_pretrained`` layout).

As peft applies it, a module at path ``p`` (its name in the network the adapter wraps) takes r
and alpha from the first key of ``rank_pattern`` / ``alpha_pattern`` for which
``re.match(rf"(.*\\.)?({key})$", p)`` holds, else ``r`` / ``lora_alpha``; its scale is alpha / r,
or alpha / √r with ``use_rslora``. ``use_dora`` says every module holds a magnitude vector.

A file whose modules have PEFT names, no alpha of their own and no config is taken at alpha = r
(scale 1) with a note saying so, except files written by ai-toolkit, whose PEFT-format LoRAs are
trained at alpha = rank and saved without it (ai-toolkit ``toolkit/lora_special.py``).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..errors import LoraConfigError

METADATA_KEY = "lora_adapter_metadata"
CONFIG_NAME = "adapter_config.json"
MAX_BYTES = 1 << 20      # a real config is a few KB; anything this large is not one
COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
_PEFT_DOWN = (".lora_A.weight", ".lora_A.default.weight")
_WRAPPER = "base_model.model."


@dataclass(frozen=True)
class AdapterConfig:
    """What of a peft ``LoraConfig`` sets the merged weights (defaults are peft's)."""

    source: str
    r: int = 8
    lora_alpha: float = 8.0
    rank_pattern: Tuple[Tuple[str, int], ...] = ()
    alpha_pattern: Tuple[Tuple[str, float], ...] = ()
    use_rslora: bool = False
    use_dora: bool = False

    def rank(self, module: str) -> int:
        return _lookup(self.rank_pattern, module, self.r)

    def alpha(self, module: str) -> float:
        return _lookup(self.alpha_pattern, module, self.lora_alpha)

    def scale(self, module: str) -> float:
        r = self.rank(module)
        return self.alpha(module) / (math.sqrt(r) if self.use_rslora else r)


def _lookup(patterns, module: str, default):
    for pattern, value in patterns:
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


@dataclass(frozen=True)
class PeftModule:
    """One module of a file with PEFT names: its path in the wrapped network, its component
    (``unet``... or '' when the file names none), its rank and whether it holds a magnitude."""

    path: str
    component: str
    rank: int
    has_magnitude: bool


def peft_module(down_key: str, rank: int, has_magnitude: bool) -> Optional[PeftModule]:
    """The module behind a ``lora_A`` file key, or None when the key is not spelled as peft's."""
    suffix = next((s for s in _PEFT_DOWN if down_key.endswith(s)), None)
    if suffix is None:
        return None
    path = down_key[:-len(suffix)]
    if path.startswith(_WRAPPER):
        path = path[len(_WRAPPER):]
    first, _, rest = path.partition(".")
    if first in COMPONENTS and rest:
        return PeftModule(rest, first, rank, has_magnitude)
    return PeftModule(path, "", rank, has_magnitude)


def module_scales(path: str, modules: Mapping[str, PeftModule],
                  metadata: Optional[Mapping[str, str]]) -> Tuple[Dict[str, float], List[str]]:
    """The scale of each PEFT module without an alpha of its own, and notes for the user.

    Args:
        path: the LoRA file.
        modules: module name (as the LoRA file's modules are named) → :class:`PeftModule`.
        metadata: the file's ``__metadata__``.

    Returns:
        ``({module name: scale}, notes)``; modules left out are taken at alpha = rank.

    Raises:
        LoraConfigError: a config that cannot be read, or that disagrees with the weights
            (another r, or DoRA where the file has no magnitude vectors or the reverse).
    """
    configs = find_configs(path, metadata or {})
    scales: Dict[str, float] = {}
    unconfigured = []
    for name, module in modules.items():
        config = configs.get(module.component) or configs.get("")
        if config is None:
            unconfigured.append(name)
            continue
        _check(config, module)
        scales[name] = config.scale(module.path)
    notes = []
    if unconfigured and not _written_by_ai_toolkit(metadata or {}):
        notes.append(f"{path}: {len(unconfigured)} PEFT LoRA modules have no alpha and no config "
                     f"(no {METADATA_KEY} metadata, no {CONFIG_NAME} beside the file): alpha = rank assumed "
                     "(scale 1)")
    return scales, notes


def _check(config: AdapterConfig, module: PeftModule) -> None:
    r = config.rank(module.path)
    if r != module.rank:
        raise LoraConfigError(config.source, f"r = {r} for module {module.path!r}, but its lora_A holds rank "
                                             f"{module.rank}", "this config belongs to another adapter")
    if config.use_dora != module.has_magnitude:
        said = "use_dora is true" if config.use_dora else "use_dora is false"
        held = "has no" if config.use_dora else "has a"
        raise LoraConfigError(config.source, f"{said}, but module {module.path!r} {held} magnitude vector",
                              "this config belongs to another adapter")


def _written_by_ai_toolkit(metadata: Mapping[str, str]) -> bool:
    try:
        software = json.loads(metadata.get("software", "{}"))
    except (ValueError, RecursionError):
        return False
    return isinstance(software, dict) and software.get("name") == "ai-toolkit"


# --- finding and reading the config ------------------------------------------------------

def find_configs(path: str, metadata: Mapping[str, str]) -> Dict[str, AdapterConfig]:
    """Component ('' for all) → config, from the first place that has one; {} when none does."""
    raw = metadata.get(METADATA_KEY)
    if raw is not None:
        source = f"{path} (metadata {METADATA_KEY})"
        if len(raw) > MAX_BYTES:
            raise LoraConfigError(source, f"is {len(raw)} characters long; a LoRA config is a few KB")
        return _by_component(_loads(raw, source), source)
    file = Path(path)
    for candidate in (file.with_name(file.stem + "." + CONFIG_NAME), file.with_name(CONFIG_NAME)):
        if candidate.is_file():
            return {"": parse_config(_read_json(candidate), str(candidate))}
    return {}


def _read_json(path: Path):
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise LoraConfigError(path, f"is {size} bytes; a LoRA config is a few KB")
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise LoraConfigError(path, f"cannot be read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LoraConfigError(path, "is not UTF-8 text, so not JSON") from None
    return _loads(text, str(path))


def _loads(text: str, source: str):
    try:
        return json.loads(text)
    except RecursionError:
        raise LoraConfigError(source, "is nested too deeply to be a LoRA config") from None
    except ValueError as e:
        raise LoraConfigError(source, f"is not valid JSON ({e})") from None


def _by_component(data, source: str) -> Dict[str, AdapterConfig]:
    """diffusers' per-component form (``unet.r``...) or one config for the whole file."""
    if isinstance(data, dict):
        parts: Dict[str, Dict[str, Any]] = {}
        for key, value in data.items():
            component, _, field = str(key).partition(".")
            if component in COMPONENTS and field:
                parts.setdefault(component, {})[field] = value
        if parts:
            return {c: parse_config(d, f"{source} [{c}]") for c, d in parts.items()}
    return {"": parse_config(data, source)}


def parse_config(data, source: str) -> AdapterConfig:
    """An :class:`AdapterConfig` from a decoded config, every field checked.

    Raises:
        LoraConfigError: not an object, not a LoRA config, or a field of the wrong type.
    """
    if not isinstance(data, dict):
        raise LoraConfigError(source, f"holds {type(data).__name__}, not a JSON object")
    kind = data.get("peft_type", "LORA")
    if kind != "LORA":
        raise LoraConfigError(source, f"is a {kind!r} adapter config, not a LoRA one")

    def field(name, check, default):
        value = data.get(name)
        return default if value is None else check(value, name, source)

    return AdapterConfig(
        source=source, r=field("r", _rank, 8), lora_alpha=field("lora_alpha", _number, 8.0),
        rank_pattern=field("rank_pattern", _patterns(_rank), ()),
        alpha_pattern=field("alpha_pattern", _patterns(_number), ()),
        use_rslora=field("use_rslora", _flag, False), use_dora=field("use_dora", _flag, False))


def _rank(value, name: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LoraConfigError(source, f"{name} must be a whole number ≥ 1, not {_shown(value)}")
    return value


def _number(value, name: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LoraConfigError(source, f"{name} must be a finite number, not {_shown(value)}")
    return float(value)


def _flag(value, name: str, source: str) -> bool:
    if not isinstance(value, bool):
        raise LoraConfigError(source, f"{name} must be true or false, not {_shown(value)}")
    return value


def _patterns(check: Callable) -> Callable:
    def parse(value, name: str, source: str):
        if not isinstance(value, dict):
            raise LoraConfigError(source, f"{name} must map module patterns to values, not {_shown(value)}")
        out = []
        for pattern, item in value.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise LoraConfigError(source, f"{name} key {_shown(pattern)} is not a regular expression ({e})") \
                    from None
            out.append((pattern, check(item, f"{name}[{pattern!r}]", source)))
        return tuple(out)
    return parse


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
