"""The running model as something the engine writes into, key by key.

A host adapter describes its loaded model as a :class:`LiveModel`: the tensors that hold its
weights (by the host's own names), how a checkpoint key becomes those names (the host's own
renames and splits), which tensors a merge must cover, and what to do before and after writing
(detach LoRA backups, clear caches). :class:`LiveTarget` builds on that:

* :meth:`LiveTarget.routes` checks, before anything is written, that every output key lands on
  tensors of the same shape and of a plain floating-point storage, and that every tensor the
  model needs is covered by some key; anything else is refused with the first culprit named;
* :meth:`LiveTarget.write` / :meth:`LiveTarget.write_slice` copy a finished tensor (or a slice
  of one) into the live tensors inside ``torch.inference_mode()`` (Forge's weights are inference
  tensors); ``copy_`` casts to the live dtype and moves to the live device.

Keys that have no tensor in the live model are left out, as the hosts' own loaders leave out
unexpected keys (``load_state_dict(strict=False)``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Dict, List, Mapping, Protocol, Tuple

import torch

from ..errors import HostError

PLAIN_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
Entry = Tuple[Tuple[int, ...], torch.dtype]   # an output key's shape and dtype


class LiveModel(Protocol):
    """What a host adapter offers of its running model (names are the host's own)."""

    label: str

    def tensors(self) -> Mapping[str, torch.Tensor]:
        """Every tensor a checkpoint can set, by name (parameters and persistent buffers)."""

    def convert(self, key: str, value: torch.Tensor) -> Mapping[str, torch.Tensor]:
        """A checkpoint key and its value as the host's loader would place them: name → value.
        Called with meta tensors too, to learn where a key goes without data."""

    def required(self, name: str, tensor: torch.Tensor) -> bool:
        """Whether a merge must set this tensor (False for what a checkpoint need not carry)."""

    def before_write(self, names: Collection[str]) -> None:
        """Called once before the first write with every name about to be written."""

    def after_write(self) -> None:
        """Called after the last write (also after a failed one)."""


@dataclass(frozen=True)
class Route:
    """Where one output key goes: the live names it sets. ``direct``: the key is one live
    tensor of its own shape, so slices of it can be written straight in."""

    key: str
    names: Tuple[str, ...]
    direct: bool


@dataclass
class RouteTable:
    routes: Dict[str, Route] = field(default_factory=dict)
    unmapped: List[str] = field(default_factory=list)   # keys the live model has no place for


class LiveTarget:
    """Writes finished keys into a :class:`LiveModel`. Thread safe for distinct keys."""

    def __init__(self, model: LiveModel):
        self.model = model
        self._live: Dict[str, torch.Tensor] = {}

    @property
    def label(self) -> str:
        return self.model.label

    def routes(self, entries: Mapping[str, Entry], what: str, complete: bool = True) -> RouteTable:
        """Where each key goes, or :class:`HostError` naming the first key or tensor that does
        not fit; with ``complete``, also when a tensor the model needs has no key. Reads no data:
        keys are placed as meta tensors."""
        live = dict(self.model.tensors())
        table = RouteTable()
        covered = set()
        for key, (shape, dtype) in entries.items():
            placeholder = torch.empty(tuple(shape), dtype=dtype, device="meta")
            converted = self._convert(key, placeholder, what)
            names = []
            for name, value in converted.items():
                target = live.get(name)
                if target is None:
                    continue
                self._check_fit(key, name, value, target, what)
                names.append(name)
                covered.add(id(target))
            if not names:
                table.unmapped.append(key)
                continue
            direct = (len(converted) == 1 and next(iter(converted.values())) is placeholder
                      and live[names[0]].is_contiguous())
            table.routes[key] = Route(key, tuple(names), direct)
        missing = [n for n, t in live.items() if complete and self.model.required(n, t) and id(t) not in covered]
        if missing:
            raise HostError(f"cannot hot-load {what}: it does not fit the loaded model ({self.label}): "
                            f"{len(missing)} of the model's weights have no key in the merge (first: {missing[0]}); "
                            "its architecture differs from the loaded model's",
                            "load a checkpoint of the merge's architecture first, or save the merge instead")
        return table

    def _convert(self, key: str, value: torch.Tensor, what: str) -> Mapping[str, torch.Tensor]:
        try:
            return self.model.convert(key, value)
        except Exception as exc:  # the host's own conversion refused the key
            raise HostError(f"cannot hot-load {what}: the WebUI cannot place key {key!r} "
                            f"({type(exc).__name__}: {exc})", "save the merge and load the file instead") from exc

    def _check_fit(self, key: str, name: str, value: torch.Tensor, target: torch.Tensor, what: str) -> None:
        if tuple(value.shape) != tuple(target.shape):
            shown = key if name == key else f"{key!r} ({name} in the WebUI)"
            raise HostError(f"cannot hot-load {what}: key {shown} has shape {list(value.shape)}, "
                            f"the loaded model ({self.label}) has {list(target.shape)}",
                            "the merge's architecture differs from the loaded model's; save it instead")
        plain = type(target) in (torch.Tensor, torch.nn.Parameter)
        if value.dtype.is_floating_point and (not plain or target.dtype not in PLAIN_FLOATS):
            raise HostError(f"cannot hot-load {what}: the loaded model stores {name} in a quantized format "
                            f"({type(target).__name__}, {target.dtype})",
                            "load the model in fp16/bf16/fp32 (e.g. 'Diffusion in Low Bits': Automatic), "
                            "or save the merge and load the file")

    # --- writing --------------------------------------------------------------------------

    def begin(self, names: Collection[str]) -> None:
        """Prepare the model for writing ``names`` (once, before the first write)."""
        self.model.before_write(names)
        self._live = dict(self.model.tensors())  # detaching LoRA may have replaced parameters

    def write(self, route: Route, value: torch.Tensor) -> None:
        """Copy a whole key into the live tensors (cast to their dtype, moved to their device)."""
        with torch.inference_mode():
            if route.direct:
                self._live[route.names[0]].copy_(value.view(self._live[route.names[0]].shape))
                return
            for name, part in self.model.convert(route.key, value).items():
                target = self._live.get(name)
                if target is not None:
                    target.copy_(part)

    def write_slice(self, route: Route, start: int, flat: torch.Tensor) -> None:
        """Copy a slice of a flattened key (``direct`` routes only)."""
        with torch.inference_mode():
            self._live[route.names[0]].view(-1)[start:start + flat.numel()].copy_(flat)

    def end(self) -> None:
        self.model.after_write()
