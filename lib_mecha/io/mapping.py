"""Tensor views of a file's bytes through the page cache (mmap), without copying them.

A merge converts every input slice to the compute dtype anyway. Reading the slice with pread
first costs one more full copy (page cache -> buffer, in the kernel) before the conversion;
mapping the range lets the conversion read the page cache directly, and methods that take
inputs in their stored dtype read them there without any copy.

Each view maps only its own range, and the mapping goes away with the last tensor that uses it,
so the mapped set is the slices in flight, never the whole file. The mapping is private and
writable (copy-on-write): reading shares the page cache's pages, and a write into the view (a
merge method that writes into its input) copies the page it touches for this process only. It
never reaches the file, and never faults the way a write into a read-only mapping does. Where
the system has it (Linux 5.14 and later), the range is pre-faulted for reading at once, which
does not copy anything. Where files cannot be mapped (Windows, unusual file systems) callers get
None and read the bytes instead.

A file truncated by another program while one of its ranges is mapped would fault (SIGBUS) on
access; Python's mmap refuses a range past the current end of the file, which turns the usual
case (the file changed before the read) into the same clear error a short read gives.
"""
from __future__ import annotations

import mmap
import sys
from pathlib import Path
from typing import Optional

import torch

from ..errors import SafetensorsError

_PRIVATE = getattr(mmap, "MAP_PRIVATE", None)
_GRANULARITY = mmap.ALLOCATIONGRANULARITY
# madvise(MADV_POPULATE_READ): the pages are mapped for reading at once, without breaking
# copy-on-write (MAP_POPULATE on a writable private mapping would copy every page)
_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22) if sys.platform.startswith("linux") else None


def map_range(fd: int, path: Path, start: int, end: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """Bytes ``[start, end)`` of the open file ``fd`` as a 1-D tensor of ``dtype``, private to this
    process (writing into it changes nothing on disk).

    Returns None when the range cannot be mapped (no mmap, an empty range, a start that is not
    aligned to the dtype); the caller then reads the bytes with pread.

    Raises:
        SafetensorsError: the file is now shorter than the range (it changed after it was opened).
    """
    if _PRIVATE is None or end <= start:
        return None
    base = start - start % _GRANULARITY
    if (start - base) % dtype.itemsize:
        return None
    try:
        mapped = mmap.mmap(fd, end - base, flags=_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
    except ValueError:  # mmap refuses a length past the end of the file
        raise SafetensorsError(path, f"cannot read bytes {start}..{end}: the file is shorter now; "
                                     f"it changed after it was opened") from None
    except OSError:
        return None
    if _POPULATE_READ is not None:
        try:
            mapped.madvise(_POPULATE_READ)
        except (OSError, ValueError):  # an older kernel: pages fault in as they are read
            pass
    return torch.frombuffer(mapped, dtype=dtype, count=(end - start) // dtype.itemsize, offset=start - base)
