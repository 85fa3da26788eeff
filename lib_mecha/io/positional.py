"""Positional reads and writes on a file descriptor, straight into/out of caller memory.

POSIX has ``preadv``/``pwrite``: no shared file position, so any number of threads can use one
descriptor at once, and the bytes go directly between the file and the tensor's memory. Windows
has neither; there a lock serializes seek + ``readinto``/``write`` on an unbuffered FileIO over the
same descriptor, which still avoids intermediate byte copies.

``LIB_MECHA_PORTABLE_IO=1`` in the environment makes lib_mecha.io take the paths it takes on
Windows on any system: no pread/pwrite here, and no memory-mapped reads (``mapping``). The test
suite runs its engine and io tests a second time that way (tools/test).
"""
from __future__ import annotations

import io
import os
import threading

#: flags for os.open: binary mode matters on Windows (text mode would translate newlines)
READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
CREATE_FLAGS = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
                | getattr(os, "O_CLOEXEC", 0))

#: the Windows code paths, forced (read once, at import)
PORTABLE_IO = os.environ.get("LIB_MECHA_PORTABLE_IO", "") not in ("", "0")
HAVE_POSITIONAL = hasattr(os, "preadv") and hasattr(os, "pwrite") and not PORTABLE_IO


class PositionalFile:
    """Thread-safe ``read_into``/``write_from`` at absolute offsets on an open descriptor.

    The descriptor stays owned by the caller. ``positional=False`` forces the seek+lock
    fallback (used on platforms without pread, and by the tests on all platforms).
    """

    def __init__(self, fd: int, writable: bool = False, positional: bool = HAVE_POSITIONAL):
        self.fd = fd
        self.positional = positional
        self._lock = threading.Lock()
        self._raw = None if positional else io.FileIO(fd, "r+" if writable else "r", closefd=False)

    def read_into(self, buffer: memoryview, offset: int) -> int:
        """Fill ``buffer`` from ``offset``; returns the bytes read (less than asked only at end of file)."""
        done, total = 0, len(buffer)
        while done < total:
            if self.positional:
                got = os.preadv(self.fd, [buffer[done:]], offset + done)
            else:
                with self._lock:
                    self._raw.seek(offset + done)
                    got = self._raw.readinto(buffer[done:])
            if not got:
                break
            done += got
        return done

    def write_from(self, buffer: memoryview, offset: int) -> None:
        """Write all of ``buffer`` at ``offset`` (loops over partial writes)."""
        done, total = 0, len(buffer)
        while done < total:
            if self.positional:
                put = os.pwrite(self.fd, buffer[done:], offset + done)
            else:
                with self._lock:
                    self._raw.seek(offset + done)
                    put = self._raw.write(buffer[done:])
            if not put:  # a regular file never accepts 0 bytes unless something is badly wrong
                raise OSError(f"write of {total - done} bytes at offset {offset + done} made no progress")
            done += put

