"""Matching a LoRA file's modules to an architecture's keys, and telling which model it is for.

:func:`analyse` reads a LoRA file's header (and its scalar ``alpha`` tensors), groups the keys
into modules, checks every module, and matches each one by name and by shape against an
architecture's key table. The result says, for every checkpoint key the LoRA changes, which
modules (and which rows of the key) contribute, and lists every module that matches nothing,
so nothing a LoRA holds is dropped without being reported.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..arch.base import Architecture, architecture_ids, resolve_architecture
from ..errors import ArchitectureMismatch, SafetensorsError
from .adapter_config import module_scales, peft_module
from .algorithms import Algorithm
from .formats import group
from .modules import detect_algorithm
from .naming import Part, lora_names


@dataclass(frozen=True)
class LoraModule:
    """One module of a LoRA file: its algorithm and its tensors (name in module → file key)."""

    name: str
    algorithm: Algorithm
    tensors: Tuple[Tuple[str, str], ...]
    shapes: Tuple[Tuple[str, Tuple[int, ...]], ...]

    @property
    def keys(self) -> Mapping[str, str]:
        return dict(self.tensors)

    def shape(self, tensor: str) -> Optional[Tuple[int, ...]]:
        return dict(self.shapes).get(tensor)


@dataclass
class LoraFile:
    """A LoRA file grouped into checked modules (no architecture involved yet)."""

    path: str
    modules: Dict[str, LoraModule]
    other_keys: List[str]
    scalars: Dict[str, float] = field(default_factory=dict)  # file key -> value of alpha/scale/on_input
    notes: List[str] = field(default_factory=list)           # what was assumed in reading it


@dataclass
class Match:
    """How one LoRA file meets one architecture."""

    lora: LoraFile
    architecture: Architecture
    weights: Dict[str, List[Tuple[LoraModule, Part]]] = field(default_factory=dict)  # checkpoint key -> parts
    biases: Dict[str, List[Tuple[LoraModule, Part]]] = field(default_factory=dict)
    unmatched: List[str] = field(default_factory=list)      # module names no key answers to
    misfits: List[Tuple[str, str]] = field(default_factory=list)  # (module, why): named right, wrong shape

    @property
    def matched(self) -> int:
        return len(self.lora.modules) - len(self.unmatched) - len(self.misfits)

    def report(self, examples: int = 5) -> str:
        """One line on what did not match (modules, and tensors that belong to no module) and what was
        assumed in reading the file, or ''."""
        def sample(names):
            more = f" and {len(names) - examples} more" if len(names) > examples else ""
            return ", ".join(names[:examples]) + more

        bad = self.unmatched + [m for m, _ in self.misfits]
        text = []
        if bad:
            shown = sample(bad)
            text.append(f"{len(bad)} of {len(self.lora.modules)} modules of {self.lora.path} match nothing in "
                        f"{self.architecture.identifier}: {shown}")
            if self.misfits:
                text.append(f"({self.misfits[0][0]}: {self.misfits[0][1]})")
        text.extend(self.lora.notes)
        other = self.lora.other_keys
        if other:
            text.append(f"{len(other)} tensors of {self.lora.path} are no LoRA module and were ignored: "
                        f"{sample(other)}")
        return "; ".join(text)


def read_lora(path: str, tensors: Mapping[str, Tuple[Tuple[int, ...], object]], read_scalar,
              metadata: Optional[Mapping[str, str]] = None) -> LoraFile:
    """Group and check a LoRA file's tensors.

    Args:
        path: the file, for messages (and where a PEFT adapter's config is looked for).
        tensors: stored key → (shape, dtype) from the header.
        read_scalar: key → tensor, used for ``alpha``/``scale``/``on_input`` (one element each).
        metadata: the file's ``__metadata__``; PEFT modules take their scale from the config
            it holds (or one beside the file, see :mod:`.adapter_config`).

    Raises:
        SafetensorsError: a malformed module (see :func:`~.modules.detect_algorithm`), or a
            PEFT config that cannot be read or disagrees with the weights.
    """
    grouped, other = group(tensors, path)
    algorithms: Dict[str, Algorithm] = {}
    scalars: Dict[str, float] = {}
    for name, keys in grouped.items():
        view = {}
        for tensor, key in keys.items():
            shape = tuple(tensors[key][0])
            if tensor in ("alpha", "scale", "on_input"):
                view[tensor] = read_scalar(key)
            else:
                view[tensor] = shape
                dtype = tensors[key][1]
                if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
                    raise SafetensorsError(path, f"LoRA module {name!r}: {tensor} holds {dtype}, not numbers "
                                                 "a weight can be made of")
        algorithms[name] = detect_algorithm(name, view, path)
        for tensor, key in keys.items():
            if tensor in ("alpha", "scale", "on_input"):
                v = view[tensor]
                if v.numel() != 1:
                    raise SafetensorsError(path, f"LoRA module {name!r}: {tensor} is not one number")
                scalars[key] = float(v.reshape(-1)[0].item())
    notes = _peft_scales(path, grouped, algorithms, tensors, metadata, scalars)
    modules: Dict[str, LoraModule] = {}
    for name, keys in grouped.items():
        shapes = tuple((t, tuple(tensors[k][0]) if k in tensors else ()) for t, k in sorted(keys.items()))
        modules[name] = LoraModule(name, algorithms[name], tuple(sorted(keys.items())), shapes)
    return LoraFile(path, modules, other, scalars, notes)


def read_lora_file(path, handle) -> LoraFile:
    """:func:`read_lora` of an opened file (:func:`lib_mecha.io.open_model`): its header, its
    scalars and its metadata."""
    tensors = {k: (tuple(i.shape), i.dtype) for k, i in handle.tensors.items()}
    return read_lora(str(path), tensors, handle.read, getattr(handle, "metadata", None))


def _peft_scales(path, grouped, algorithms, tensors, metadata, scalars) -> List[str]:
    """Give each PEFT-named LoRA module without an alpha the scale its adapter config says, as a
    ``scale`` entry that is no key of the file (its value is in ``scalars``); the notes to show."""
    peft = {}
    for name, keys in grouped.items():
        if algorithms[name].name != "lora" or "alpha" in keys or "scale" in keys:
            continue
        down = keys["lora_down.weight"]
        found = peft_module(down, tuple(tensors[down][0])[0], "dora_magnitude" in keys)
        if found is not None:
            peft[name] = found
    if not peft:
        return []
    scales, notes = module_scales(path, peft, metadata)
    for name, scale in scales.items():
        virtual = f"{name}.scale"  # module names are flat, PEFT file keys dotted: never a file key
        grouped[name]["scale"] = virtual
        scalars[virtual] = scale
    return notes


def implied_shape(module: LoraModule) -> Optional[Tuple[int, int]]:
    """(out, in·kernel) of the module's ΔW when its tensors say so without the target weight."""
    s = module.shape
    name = module.algorithm.name
    if name == "lora":
        up, down, mid = s("lora_up.weight"), s("lora_down.weight"), s("lora_mid.weight")
        inner = math.prod(down[1:]) * (math.prod(mid[2:]) if mid else 1)
        return up[0], inner
    if name == "loha":
        a, b, core = s("hada_w1_a"), s("hada_w1_b"), s("hada_t1")
        if core:
            return a[1], b[1] * math.prod(core[2:])
        return a[0], math.prod(b[1:])
    if name == "lokr":
        w1 = s("lokr_w1") or (s("lokr_w1_a")[0], s("lokr_w1_b")[1])
        if s("lokr_w2"):
            w2 = s("lokr_w2")
            w2 = (w2[0], math.prod(w2[1:]))
        elif s("lokr_t2"):
            w2 = (s("lokr_w2_a")[1], s("lokr_w2_b")[1] * math.prod(s("lokr_t2")[2:]))
        else:
            w2 = (s("lokr_w2_a")[0], math.prod(s("lokr_w2_b")[1:]))
        return w1[0] * w2[0], w1[1] * w2[1]
    if name == "full":
        d = s("diff")
        return d[0], math.prod(d[1:])
    if name == "norm":
        return math.prod(s("w_norm")), 1
    return None


def fits(module: LoraModule, target: Tuple[int, ...]) -> Optional[str]:
    """Why the module's ΔW cannot apply to a weight (or row slice) of shape ``target``, or None."""
    out = target[0] if target else 1
    rest = math.prod(target[1:]) if len(target) > 1 else 1
    implied = implied_shape(module)
    name = module.algorithm.name
    if implied is not None:
        if implied == (out, rest) or math.prod(implied) == out * rest and name == "norm":
            return None
        # a 4-channel LoRA on a 9-channel inpainting conv_in: zero-padded, as the WebUI does
        if len(target) == 4 and implied[0] == out and implied[1] < rest and implied[1] % (target[2] * target[3]) == 0:
            return None
        return f"its ΔW is {implied[0]}×{implied[1]} but the weight is {list(target)}"
    if name == "ia3":
        n = math.prod(module.shape("weight"))
        return None if n in (out, target[1] if len(target) > 1 else out) else f"{n} scales for a weight {list(target)}"
    if name == "oft":
        b = module.shape("oft_blocks") or module.shape("oft_diag")
        rows = b[0] * b[1] if len(b) == 3 else b[1] * b[2]
        return None if rows == out else f"rotates {rows} rows of a weight {list(target)}"
    if name == "glora":
        outs = {module.shape("b1.weight")[0], module.shape("b2.weight")[0]}
        return None if out in outs else f"does not produce {out} rows"
    return None


_names_lock = threading.Lock()
_names_cache: Dict[str, Dict[str, List[Part]]] = {}


def names_of(arch: Architecture) -> Dict[str, List[Part]]:
    with _names_lock:
        names = _names_cache.get(arch.identifier)
    if names is None:
        names = lora_names(arch)
        with _names_lock:
            _names_cache[arch.identifier] = names
    return names


def match(lora: LoraFile, arch: Architecture, shape_of: Optional[Callable[[str], Optional[tuple]]] = None) -> Match:
    """Match every module of ``lora`` to ``arch`` by name, then by shape.

    ``shape_of(key)`` gives the shape of a key in the model the LoRA is applied to (None when
    that model lacks the key); by default the architecture table's shape.
    """
    names = names_of(arch)
    result = Match(lora, arch)
    shape_of = shape_of or (lambda k: tuple(arch.keys[k].shape))
    for module in lora.modules.values():
        parts = names.get(module.name)
        if not parts:
            result.unmatched.append(module.name)
            continue
        why = None
        for part in parts:
            target = shape_of(part.key)
            if target is None:
                why = f"the model has no {part.key}"
                break
            target = tuple(target)
            rows = part.row_range(target[0]) if target else None
            if rows is not None:
                target = (rows[1] - rows[0],) + target[1:]
            why = fits(module, target)
            if why is not None:
                break
        if why is not None:
            result.misfits.append((module.name, why))
            continue
        for part in parts:
            result.weights.setdefault(part.key, []).append((module, part))
            if part.bias is not None and module.algorithm.bias_delta is not None:
                result.biases.setdefault(part.bias, []).append((module, part))
    return result


def best_match(lora: LoraFile, ids: Optional[Sequence[str]] = None) -> Optional[Match]:
    """The architecture that explains most of the LoRA's modules (None if none explains any)."""
    from ..arch.layouts import is_layout
    best = None
    for ident in ids or architecture_ids():
        if is_layout(ident):
            continue
        try:
            arch = resolve_architecture(ident)
        except Exception:  # an architecture whose table cannot be built is no candidate
            continue
        m = match(lora, arch)
        if m.matched and (best is None or m.matched > best.matched):
            best = m
    return best


def match_for(lora: LoraFile, arch: Architecture, shape_of=None) -> Match:
    """Match to the architecture it is applied to, failing loudly when it is for another one.

    Raises:
        ArchitectureMismatch: nothing matches (naming the architecture the LoRA is for, when one
            of the known architectures explains it better).
    """
    m = match(lora, arch, shape_of)
    # only a LoRA that leaves modules unmatched can be for another model: don't build every table
    best = best_match(lora) if m.matched < len(lora.modules) else None
    if best is not None and best.architecture.identifier != arch.identifier and best.matched > m.matched:
        raise ArchitectureMismatch(
            f"LoRA {lora.path} is for {best.architecture.identifier} ({best.matched} of "
            f"{len(lora.modules)} modules match it), not {arch.identifier} ({m.matched} match)",
            f"apply it to a {best.architecture.identifier} model")
    if m.matched == 0:
        sample = ", ".join(sorted(lora.modules)[:3])
        raise ArchitectureMismatch(
            f"LoRA {lora.path} matches nothing in {arch.identifier}: none of its {len(lora.modules)} "
            f"modules ({sample}, ...) names a weight of that model",
            "check that the LoRA was made for this kind of model")
    return m
