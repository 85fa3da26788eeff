"""The host boundary: what the UI and the REST routes may ask of a WebUI (or of no WebUI).

One :class:`Host` implementation exists per host family (A1111, Forge 2.x, the Forge-1 family,
Neo, standalone); ``detect.make_host()`` picks one by feature detection. Implementations import
the WebUI's ``modules`` lazily, inside their methods, so this package imports without a WebUI.

Thread safety: every method may be called from any thread. Methods that touch the loaded model or
generate images take the host's lock themselves (``run_exclusive``); the caller must not hold it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable


@dataclass(frozen=True)
class ModelRef:
    """One model file the host knows: ``label`` is what the host's own dropdowns show."""

    label: str
    path: str
    name: str
    sha256: Optional[str] = None


@dataclass(frozen=True)
class MergeIdentity:
    """How an unsaved merge presents itself to the host: name and hashes shown in infotexts.

    The hashes are derived from the recipe text, so the same recipe always shows the same
    identity; ``short_id`` is the key under which the full recipe can be retrieved.
    """

    sha256: str
    display_name: str
    recipe_text: str

    @property
    def h10(self) -> str:
        return self.sha256[:10]

    @property
    def h8(self) -> str:
        return self.sha256[:8]

    @property
    def short_id(self) -> str:
        return self.sha256[:10]

    @classmethod
    def from_recipe(cls, recipe_text: str, display_name: Optional[str] = None) -> "MergeIdentity":
        """The identity of a recipe's merge. ``display_name`` defaults to ``mecha-<h8>``."""
        digest = hashlib.sha256(recipe_text.encode("utf-8")).hexdigest()
        name = display_name or f"mecha-{digest[:8]}"
        return cls(sha256=digest, display_name=name, recipe_text=recipe_text)


@dataclass(frozen=True)
class PreviewParams:
    """The txt2img fields a preview may set; everything else stays at the host's defaults."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 20
    width: int = 512
    height: int = 512
    cfg_scale: float = 7.0
    sampler_name: str = "Euler a"
    batch_size: int = 1
    save: bool = False


@dataclass(frozen=True)
class LoadedModel:
    """The model the host would generate with now."""

    label: str
    path: Optional[str]
    arch: Optional[str]
    is_merge: bool = False
    identity: Optional[MergeIdentity] = None


@dataclass(frozen=True)
class OptionSpec:
    """One WebUI setting of ours (the key carries the ``mecha_`` prefix)."""

    key: str
    default: Any
    label: str
    kind: str = "text"                      # text | number | slider | choice | check
    choices: Tuple[Any, ...] = ()
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    step: Optional[float] = None
    help: str = ""


class ProgressSink(Protocol):
    def begin(self, total: int, text: str = "") -> None: ...
    def step(self, n: int = 1, text: str = "") -> None: ...
    def end(self) -> None: ...


@runtime_checkable
class Host(Protocol):
    """What a host offers. Methods that a host cannot do raise :class:`lib_mecha.errors.HostError`."""

    name: str                 # "a1111" | "forge2" | "forge1" | "neo" | "standalone"
    gradio_major: int

    # paths
    def checkpoint_dirs(self) -> List[Path]: ...
    def default_save_dir(self) -> Path: ...
    def lora_dirs(self) -> List[Path]: ...
    def vae_dirs(self) -> List[Path]: ...
    def model_roots(self) -> List[Path]: ...
    def data_dir(self) -> Path: ...
    def outputs_dir(self, kind: str = "txt2img") -> Path: ...

    # catalogue
    def list_checkpoints(self) -> List[ModelRef]: ...
    def resolve_checkpoint(self, label: str) -> Optional[ModelRef]: ...
    def refresh_checkpoints(self) -> None: ...
    def list_loras(self) -> List[ModelRef]: ...
    def refresh_loras(self) -> None: ...
    def list_vaes(self) -> List[ModelRef]: ...

    # runtime
    def device(self) -> Any: ...
    def work_dtype(self) -> Any: ...
    def free_memory(self) -> None: ...

    # jobs
    def run_exclusive(self, fn: Callable[..., Any], *args: Any, job: str = "mecha", wait: float = 0.0) -> Any: ...
    def progress(self) -> ProgressSink: ...
    def interrupted(self) -> bool: ...

    # model (a hot-load streams a recipe's merge into the running model: lib_mecha.live)
    def current_model(self) -> Optional[LoadedModel]: ...
    def hot_load(self, recipe: Any, ident: MergeIdentity, options: Any, *, progress: Any = None,
                 planned: Any = None, cancel: Any = None, wait: float = 0.0) -> Any: ...  # -> LiveReport
    def restore(self, wait: float = 0.0) -> Any: ...                     # -> LiveReport | None
    def hot_loaded(self) -> Optional[MergeIdentity]: ...
    def loaded_merge(self) -> Any: ...                  # LoadedMerge (ident, recipe, options) | None
    def live_report(self) -> Any: ...                   # LiveReport of the loaded merge's hot-load
    def pending_selection(self) -> Optional[str]: ...   # a checkpoint selected but not loaded yet
    def pin_seeds(self, recipe: Any) -> Any: ...        # concrete seeds for fresh-seed methods

    # generation
    def samplers(self) -> List[str]: ...  # the names the host's own sampler dropdown offers
    def generate(self, params: PreviewParams,
                 extra_infotext: Optional[Dict[str, str]] = None) -> List[Tuple[Any, str]]: ...
    def compare(self, params: PreviewParams, wait: float = 0.0) -> Any: ...  # -> host.compare.Comparison
    def grid_report(self) -> Optional[Dict[str, Any]]: ...  # the latest X/Y/Z plot over Mecha axes

    # settings and events
    def option(self, key: str, default: Any = None) -> Any: ...
    def register_options(self, specs: Sequence[OptionSpec]) -> None: ...
    def on_model_replaced(self, callback: Callable[[], None]) -> None: ...
