"""Files a user names (a catalog, a model directory's files, a photo): regular files only,
read within a limit. Standard library only, so every layer may use it: a FIFO would wait for
ever for a writer, a device (``/dev/zero``) be read for ever, a sparse file of gigabytes be
read whole into memory; each is an ``OSError`` here, with a ``strerror`` to show the user.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MAX_BYTES_SETTING = "LOOKALIKE_IMAGES__MAX_BYTES"
"""The setting that bounds a photo's size, named where a photo over it is refused."""


def check_regular(path: Path, note: str = "") -> os.stat_result:
    """``path``'s status (links followed); ``OSError(EINVAL, "not a regular file")`` for a
    folder, a FIFO, a socket or a device. ``note`` says what the file should be."""
    status = path.stat()
    if not stat.S_ISREG(status.st_mode):
        raise _not_regular(path, note)
    return status


def _not_regular(path: Path, note: str) -> OSError:
    return OSError(errno.EINVAL, f"not a regular file{f' ({note})' if note else ''}", str(path))


def read_regular(path: Path, max_bytes: int | None, note: str = "") -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (None: no limit). Opened without
    blocking (a FIFO answers at once) and checked on the open descriptor, so a path swapped
    meanwhile is checked too; a larger file is ``OSError(EFBIG)``, read no further than the
    limit. A pseudo-file (``/proc``, ``/sys``: "regular" to ``stat``, of size 0, yet it reads
    as text made on the fly) is refused as not regular once a byte is read from it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise _not_regular(path, note)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    finally:
        os.close(fd)
    if data and status.st_size == 0:
        raise _not_regular(path, note or "a pseudo-file, such as /proc's")
    if max_bytes is not None and len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes", str(path))
    return data


def photo_over_limit(photo: Path, max_bytes: int) -> str | None:
    """Why a local photo is refused before it is read (``N bytes > limit M (setting)``), from
    its size; None when it is within ``max_bytes`` or cannot be looked at (reading it says
    why). Read whole, a 1 GB file took 1.9 GB of memory, where ingest and the HTTP API refuse
    it: eval, search, compare-prices and train ask this first."""
    try:
        size = photo.stat().st_size
    except OSError:
        return None
    if size <= max_bytes:
        return None
    return f"{size} bytes > limit {max_bytes} ({MAX_BYTES_SETTING})"
