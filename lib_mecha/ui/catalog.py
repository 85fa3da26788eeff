"""What the tab can pick from: the host's checkpoints, LoRAs and VAEs, and how they are named.

A model is written into the recipe by a portable name: its path relative to the model folder
that holds it (``sub/a.safetensors``), or its absolute path when it lies in no known folder.
The dropdowns show the host's own labels. This module maps between the two, detects a model's
architecture (for the block layout), and finds files by sha256 for a recipe whose model is
missing.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

STEP_PREFIX = "[step "
_STEP_RE = re.compile(r"^\[step (\d+)\]$")
_INPUT_COMMENT = re.compile(r"^input (.+) (\S+) sha256=([0-9a-fA-F]{64})$")
_LORA_KEY = re.compile(r"^(lora|lycoris)_|\.(lora_(up|down|A|B|mid)|hada_w[12]|lokr_w[12]|oft_|dora_scale)")
HASH_SIZE_LIMIT = 256 << 20   # files larger than this are matched by known hashes only


def step_label(index: int) -> str:
    """The dropdown entry for an earlier step's result (``[step 2]`` for index 1)."""
    return f"{STEP_PREFIX}{index + 1}]"


def parse_step_label(label: str) -> Optional[int]:
    m = _STEP_RE.match(label or "")
    return int(m.group(1)) - 1 if m else None


@dataclass(frozen=True)
class Entry:
    label: str       # what the dropdown shows
    name: str        # what the recipe says
    path: str        # the file
    sha256: Optional[str] = None


def _portable(path: str, roots: Sequence[Path]) -> str:
    real = os.path.abspath(path)
    for root in roots:
        root_s = os.path.abspath(str(root))
        if real.startswith(root_s.rstrip(os.sep) + os.sep):
            return Path(os.path.relpath(real, root_s)).as_posix()
    return real


class Catalog:
    """The host's model lists, re-read on :meth:`refresh`. Thread safe."""

    def __init__(self, host):
        self.host = host
        self._lock = threading.Lock()
        self._checkpoints: List[Entry] = []
        self._loras: List[Entry] = []
        self._vaes: List[Entry] = []
        self._arch_cache: Dict[Tuple[str, int, int], Optional[str]] = {}
        self._lora_cache: Dict[Tuple[str, int, int], bool] = {}
        self.refresh()

    # --- lists -----------------------------------------------------------------------------

    def refresh(self) -> None:
        ckpt_dirs = list(self.host.checkpoint_dirs())
        lora_dirs = list(self.host.lora_dirs())
        vae_dirs = list(self.host.vae_dirs())
        checkpoints = self._entries(self.host.list_checkpoints(), ckpt_dirs)
        loras = self._entries(self.host.list_loras(), lora_dirs)
        shared = {e.path for e in checkpoints} & {e.path for e in loras}
        if shared:  # one folder for both (the standalone tab): sort its files by their keys
            is_lora = {p: self._is_lora(p) for p in shared}
            checkpoints = [e for e in checkpoints if not is_lora.get(e.path, False)]
            loras = [e for e in loras if is_lora.get(e.path, True)]
        vaes = self._entries(self.host.list_vaes(), vae_dirs + ckpt_dirs)
        with self._lock:
            self._checkpoints, self._loras, self._vaes = checkpoints, loras, vaes

    @staticmethod
    def _entries(refs, roots) -> List[Entry]:
        out = []
        for ref in refs:
            out.append(Entry(ref.label, _portable(ref.path, roots), ref.path, getattr(ref, "sha256", None)))
        return out

    def _is_lora(self, path: str) -> bool:
        """Whether a file holds LoRA/LyCORIS modules rather than a model (read from its header)."""
        try:
            st = os.stat(path)
            key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
        except OSError:
            return False
        with self._lock:
            if key in self._lora_cache:
                return self._lora_cache[key]
        try:
            from ..io import read_header
            names = list(read_header(path).tensors)
        except Exception:  # unreadable: leave it in both lists, the merge will say why
            names = []
        found = any(_LORA_KEY.search(n) for n in names)
        with self._lock:
            self._lora_cache[key] = found
        return found

    def checkpoints(self) -> List[Entry]:
        with self._lock:
            return list(self._checkpoints)

    def loras(self) -> List[Entry]:
        with self._lock:
            return list(self._loras)

    def vaes(self) -> List[Entry]:
        with self._lock:
            return list(self._vaes)

    def model_dirs(self) -> List[str]:
        """Folders the engine searches for relative names: checkpoints, then LoRAs, then VAEs."""
        seen: List[str] = []
        for d in [*self.host.checkpoint_dirs(), *self.host.lora_dirs(), *self.host.vae_dirs()]:
            s = str(d)
            if s not in seen:
                seen.append(s)
        return seen

    # --- names <-> labels ------------------------------------------------------------------

    @staticmethod
    def _match(entries: Iterable[Entry], name: str) -> Optional[Entry]:
        if not name:
            return None
        want = name.replace("\\", "/")
        stem = want[:-len(".safetensors")] if want.lower().endswith(".safetensors") else want
        for e in entries:
            if want in (e.label, e.name, e.path.replace("\\", "/")):
                return e
        for e in entries:
            if os.path.splitext(e.name)[0] == stem:
                return e
        return None

    def checkpoint(self, name_or_label: str) -> Optional[Entry]:
        return self._match(self.checkpoints(), name_or_label)

    def lora(self, name_or_label: str) -> Optional[Entry]:
        return self._match(self.loras(), name_or_label)

    def vae(self, name_or_label: str) -> Optional[Entry]:
        return self._match(self.vaes(), name_or_label)

    def checkpoint_label(self, name: str) -> str:
        """The dropdown label of a recipe's model name (the name itself when unknown)."""
        e = self.checkpoint(name)
        return e.label if e else name

    def lora_label(self, name: str) -> str:
        e = self.lora(name)
        return e.label if e else name

    def checkpoint_name(self, label: str) -> str:
        """The recipe name for a dropdown label (a typed-in name is kept as typed)."""
        e = self.checkpoint(label)
        return e.name if e else label

    def lora_name(self, label: str) -> str:
        e = self.lora(label)
        return e.name if e else label

    # --- architecture ----------------------------------------------------------------------

    def architecture_of(self, name: str) -> Optional[str]:
        """The architecture id of a checkpoint (None when unknown or unreadable); cached by file."""
        e = self.checkpoint(name) or self.vae(name)
        path = e.path if e else name
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._arch_cache:
                return self._arch_cache[key]
        try:
            from ..model_info import describe_model
            arch = describe_model(path)["architecture"]
        except Exception:  # an unreadable file has no layout; the merge itself reports why
            arch = None
        with self._lock:
            self._arch_cache[key] = arch
        return arch

    # --- missing models --------------------------------------------------------------------

    def same_hash(self, sha256: str) -> List[Entry]:
        """Checkpoints whose sha256 is ``sha256``: known hashes, or computed for small files."""
        from ..engine.hashes import cached_sha256, sha256_of
        want = sha256.lower()
        found = []
        for e in self.checkpoints():
            digest = (e.sha256 or "").lower() or None
            if digest is None:
                try:
                    digest = cached_sha256(e.path)
                    if digest is None and os.path.getsize(e.path) <= HASH_SIZE_LIMIT:
                        digest = sha256_of(e.path)
                except OSError:
                    continue
            if digest and digest.lower() == want:
                found.append(e)
        return found

    def missing_models(self, names: Iterable[str], comments: Sequence[str] = ()) -> List[str]:
        """A message for each recipe model that is not in the lists, naming files with its hash.

        ``comments`` are the .mecha comment lines; ``input <file> <arch> sha256=<hex>`` lines
        (written by lib_mecha into every merged file's recipe) give the hashes.
        """
        hashes = {}
        for c in comments:
            m = _INPUT_COMMENT.match(c.strip())
            if m:
                hashes[m.group(1)] = m.group(3)
        out = []
        for name in names:
            if self.checkpoint(name) or self.lora(name) or self.vae(name) or os.path.isfile(name):
                continue
            digest = hashes.get(os.path.basename(name)) or hashes.get(name)
            matches = self.same_hash(digest) if digest else []
            if matches:
                out.append(f"model not found: {name}; same sha256: {', '.join(e.label for e in matches)}")
            else:
                out.append(f"model not found: {name}")
        return out
