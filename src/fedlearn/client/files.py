"""Durable file writes for the client's state folder."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

Buffer = bytes | bytearray | memoryview

__all__ = ["TEMP_SUFFIX", "write_atomic"]

TEMP_SUFFIX = ".tmp"


def write_atomic(path: Path, data: Buffer, *more: Buffer, sync: bool = True) -> None:
    """Write ``data`` (then ``more``, in order) to ``path`` so that a crash leaves the old
    file or the new one; parts save joining a header to a large payload in memory.

    The bytes go to a temporary file in the same folder, which is renamed over ``path``
    with ``os.replace``: a process that dies at any point leaves the old file or the new
    one. With ``sync`` (the default) the file is flushed to disk with ``fsync`` before
    the rename and the folder after it, so the new file also survives a power cut.
    Without it the kernel writes the file back when it likes (or never, if it is deleted
    first): a power cut may lose the new file or leave a torn one, so only data that can
    be checked on reading and done again may be written so.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            for part in more:
                out.write(part)
            out.flush()
            if sync:
                os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if sync:
        _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    if os.name != "posix":  # Windows cannot open a folder for fsync
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
