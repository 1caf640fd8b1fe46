"""``exclusive_lock(path)``: an advisory lock on a file that every process on the machine sees.

The token store holds it around each load-modify-save, so concurrent writers (several
kernels, a CLI, a ``multiprocessing`` pool) queue instead of overwriting each other's
entries. POSIX uses ``fcntl.flock`` (released by the kernel when the process dies, so a
crash never leaves it held); Windows locks the first byte with ``msvcrt.locking``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["exclusive_lock"]


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created 0600, never deleted) for the block.

    Blocks until the lock is free. Raises ``OSError`` when the file cannot be opened.
    The lock belongs to the open file description, so two opens in one process also
    exclude each other; callers still serialise their own threads first, which is cheaper.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _acquire(fd)
        yield
    finally:
        os.close(fd)  # closing releases the lock


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _acquire(fd: int) -> None:
        while True:
            try:  # LK_LOCK retries for about 10 s, then raises; keep waiting like flock
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
            except OSError as exc:
                if exc.errno != errno.EDEADLOCK:
                    raise

else:
    import fcntl

    def _acquire(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)
