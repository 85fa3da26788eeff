"""No WebUI: folders come from the caller (CLI or standalone UI); nothing can be hot-loaded."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..engine.hashes import user_cache_dir
from ..errors import Busy, HostError
from .base import LoadedModel, MergeIdentity, ModelRef, OptionSpec, PreviewParams
from .paths import unique_dirs
from .recipes import RecipeStore
from .settings import DEFAULTS
from .webui import MODEL_EXTS, NETWORK_EXTS


class CounterProgress:
    """A ProgressSink that only counts (read ``done``/``total``/``text``)."""

    def __init__(self):
        self.total, self.done, self.text = 0, 0, ""

    def begin(self, total: int, text: str = "") -> None:
        self.total, self.done, self.text = int(total), 0, text

    def step(self, n: int = 1, text: str = "") -> None:
        self.done += n
        self.text = text or self.text

    def end(self) -> None:
        self.text = ""


class StandaloneHost:
    """A Host for running lib_mecha outside a WebUI. Thread safe."""

    name = "standalone"

    def __init__(self, checkpoint_dirs: Sequence[os.PathLike] = (), lora_dirs: Sequence[os.PathLike] = (),
                 vae_dirs: Sequence[os.PathLike] = (), data_dir: Optional[os.PathLike] = None,
                 save_dir: Optional[os.PathLike] = None, options: Optional[Dict[str, Any]] = None):
        self._ckpt = unique_dirs(checkpoint_dirs) or [Path.cwd()]
        self._lora = unique_dirs(lora_dirs)
        self._vae = unique_dirs(vae_dirs)
        self._data = Path(data_dir) if data_dir else user_cache_dir()
        self._save = Path(save_dir) if save_dir else self._ckpt[0]
        self._options = dict(DEFAULTS, **(options or {}))
        self._lock = threading.Lock()
        self._interrupt = threading.Event()
        self.recipes = RecipeStore(self._data)

    @property
    def gradio_major(self) -> int:
        import gradio
        return int(gradio.__version__.split(".")[0])

    def checkpoint_dirs(self) -> List[Path]:
        return list(self._ckpt)

    def default_save_dir(self) -> Path:
        return self._save

    def lora_dirs(self) -> List[Path]:
        return list(self._lora)

    def vae_dirs(self) -> List[Path]:
        return list(self._vae)

    def model_roots(self) -> List[Path]:
        return unique_dirs([*self._ckpt, *self._lora, *self._vae, self._save])

    def data_dir(self) -> Path:
        return self._data

    def outputs_dir(self, kind: str = "txt2img") -> Path:
        return self._data / "outputs" / kind

    def _walk(self, dirs, exts) -> List[ModelRef]:
        out = []
        for d in dirs:
            for root, _, files in os.walk(d, followlinks=True):
                for f in sorted(files):
                    if f.lower().endswith(exts):
                        path = os.path.join(root, f)
                        rel = os.path.relpath(path, d)
                        out.append(ModelRef(label=rel, path=path, name=rel))
        return out

    def list_checkpoints(self) -> List[ModelRef]:
        return self._walk(self._ckpt, MODEL_EXTS)

    def resolve_checkpoint(self, label: str) -> Optional[ModelRef]:
        for ref in self.list_checkpoints():
            if label in (ref.label, ref.name, ref.path, os.path.splitext(ref.label)[0]):
                return ref
        return None

    def refresh_checkpoints(self) -> None:
        """Nothing is cached: every listing walks the folders."""

    def list_loras(self) -> List[ModelRef]:
        return self._walk(self._lora, NETWORK_EXTS)

    def refresh_loras(self) -> None:
        """Nothing is cached: every listing walks the folders."""

    def list_vaes(self) -> List[ModelRef]:
        return self._walk(self._vae, MODEL_EXTS + (".pt",))

    def device(self):
        import torch
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def work_dtype(self):
        import torch
        return torch.float16

    def free_memory(self) -> None:
        import gc
        gc.collect()

    def run_exclusive(self, fn: Callable[..., Any], *args: Any, job: str = "mecha", wait: float = 0.0) -> Any:
        deadline = time.monotonic() + max(0.0, wait)
        while not self._lock.acquire(blocking=False):
            if time.monotonic() >= deadline:
                raise Busy(f"another merge is running; {job} was not started", "try again when it finishes")
            time.sleep(0.05)
        self._interrupt.clear()
        try:
            return fn(*args)
        finally:
            self._lock.release()

    def progress(self) -> CounterProgress:
        return CounterProgress()

    def interrupt(self) -> None:
        self._interrupt.set()

    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    def current_model(self) -> Optional[LoadedModel]:
        return None

    def hot_load(self, recipe, ident: MergeIdentity, options, *, progress=None, planned=None, cancel=None,
                 wait: float = 0.0):
        raise HostError("hot-loading needs a WebUI", "save the merge to a file instead")

    def restore(self, wait: float = 0.0) -> None:
        """Nothing was hot-loaded, so there is nothing to restore."""

    def hot_loaded(self) -> Optional[MergeIdentity]:
        return None

    def pending_selection(self) -> Optional[str]:
        return None

    def live_report(self):
        return None

    def pin_seeds(self, recipe):
        """Saves keep their null seeds: nothing is hot-loaded here that a save must reproduce."""
        return recipe

    def samplers(self) -> List[str]:
        return []  # no previews without a WebUI

    def generate(self, params: PreviewParams, extra_infotext=None, wait: float = 0.0):
        raise HostError("previews need a WebUI", "run the extension inside A1111 or Forge")

    def compare(self, params: PreviewParams, wait: float = 0.0):
        raise HostError("previews need a WebUI", "run the extension inside A1111 or Forge")

    def loaded_merge(self):
        return None

    def grid_report(self):
        return None

    def option(self, key: str, default: Any = None) -> Any:
        return self._options.get(key, default)

    def register_options(self, specs: Sequence[OptionSpec]) -> None:
        for spec in specs:
            self._options.setdefault(spec.key, spec.default)

    def on_model_replaced(self, callback) -> None:
        """No model is ever loaded here."""

    def close(self) -> None:
        """Nothing to undo."""
