"""Read-only tensor views of a file's bytes through the page cache (mmap), without copying them.

A merge converts every input slice to the compute dtype anyway. Reading the slice with pread
first costs one more full copy (page cache -> buffer, in the kernel) before the conversion;
mapping the range lets the conversion read the page cache directly. Measured on the 2-core
bench machine: 0.71 ns per fp16 element for pread + cast, 0.55 for a mapped range + cast.

Each view maps only its own range (pre-faulted with MAP_POPULATE where the OS has it), and the
mapping goes away with the last tensor that uses it, so the mapped set is the slices in flight,
never the whole file. Where files cannot be mapped (Windows, unusual file systems) callers get
None and read the bytes instead.

A file truncated by another program while one of its ranges is mapped would fault (SIGBUS) on
access; Python's mmap refuses a range past the current end of the file, which turns the usual
case (the file changed before the read) into the same clear error a short read gives.
"""
from __future__ import annotations

import mmap
import warnings
from pathlib import Path
from typing import Optional

import torch

from ..errors import SafetensorsError

_FLAGS = (mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)) if hasattr(mmap, "MAP_SHARED") else None
_GRANULARITY = mmap.ALLOCATIONGRANULARITY

# torch warns that a read-only buffer gives a writable tensor; the views made here are only
# ever read (every caller copies out of them), so the warning says nothing about this use.
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning,
                        module=__name__)


def map_range(fd: int, path: Path, start: int, end: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """Bytes ``[start, end)`` of the open file ``fd`` as a read-only 1-D tensor of ``dtype``.

    Returns None when the range cannot be mapped (no mmap, an empty range, a start that is not
    aligned to the dtype); the caller then reads the bytes with pread.

    Raises:
        SafetensorsError: the file is now shorter than the range (it changed after it was opened).
    """
    if _FLAGS is None or end <= start:
        return None
    base = start - start % _GRANULARITY
    if (start - base) % dtype.itemsize:
        return None
    try:
        mapped = mmap.mmap(fd, end - base, flags=_FLAGS, prot=mmap.PROT_READ, offset=base)
    except ValueError:  # mmap refuses a length past the end of the file
        raise SafetensorsError(path, f"cannot read bytes {start}..{end}: the file is shorter now; "
                                     f"it changed after it was opened") from None
    except OSError:
        return None
    return torch.frombuffer(mapped, dtype=dtype, count=(end - start) // dtype.itemsize, offset=start - base)
