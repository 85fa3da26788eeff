"""Extracting a LoRA into the host's LoRA folder, for the tab and the REST routes alike: the name is
checked to stay inside that folder before anything runs, and the host's LoRA list is refreshed
afterwards, so the LoRA can be used in a prompt at once."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..errors import MechaError, PathEscape
from .paths import output_path

DTYPES = ("fp16", "bf16", "fp32")
REFRESH_WAIT = 300.0   # seconds the list refresh waits for a running generation


@dataclass(frozen=True)
class ExtractRequest:
    """What to extract and where to: ``name`` inside the host's first LoRA folder."""

    name: str
    rank: Optional[int] = 32               # None: by energy alone
    energy: Optional[float] = None
    conv_rank: Optional[int] = None        # None: as rank; 0: no 3×3 convolutions
    components: Optional[Tuple[str, ...]] = None
    dtype: str = "fp16"
    overwrite: bool = False

    def check(self) -> None:
        """Raise for a bad rank, energy or dtype (before a job starts)."""
        from ..lora.extract import check_rank
        if self.dtype not in DTYPES:
            raise MechaError(f"unknown dtype {self.dtype!r}", f"choose one of {', '.join(DTYPES)}")
        check_rank(self.rank, self.energy, "extract LoRA")
        if self.conv_rank:
            check_rank(self.conv_rank, None, "extract LoRA (convolutions)")


def lora_target(host, name: str, overwrite: bool) -> Path:
    """The output path for a LoRA name inside the host's first LoRA folder.

    Raises:
        PathEscape: the name is empty, absolute or climbs out of the folder; the host has none.
        OutputExists: the file exists and ``overwrite`` is false.
    """
    folders = list(host.lora_dirs())
    if not folders:
        raise PathEscape("this host has no LoRA folder to save into", "start it with a LoRA folder")
    return output_path(name, folders[0], folders, overwrite=overwrite)


def extract_to_host(host, tuned, base, target: Path, request: ExtractRequest, options, job) -> Dict[str, Any]:
    """Extract ``tuned − base`` into ``target`` as ``job`` (a :class:`~lib_mecha.jobs.Job`), then have the
    host re-read its LoRA list. Returns what the job reports."""
    from ..lora.extract import extract_lora
    os.makedirs(target.parent, exist_ok=True)  # validated inside the LoRA folder
    saved = extract_lora(tuned, base, target, rank=request.rank, energy=request.energy,
                         conv_rank=request.conv_rank, components=request.components, dtype=request.dtype,
                         overwrite=request.overwrite, progress=job.progress, cancel=job.cancel, options=options)
    job.phase = "refreshing the LoRA list"
    try:
        host.run_exclusive(host.refresh_loras, job="refresh", wait=REFRESH_WAIT)
    except MechaError:
        pass  # the file is written; the host lists it after its own next refresh
    return {"path": str(saved.path), "modules": saved.modules, "max_rank": saved.max_rank,
            "warnings": list(saved.warnings)}
