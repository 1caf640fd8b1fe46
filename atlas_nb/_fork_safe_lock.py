"""A module-level lock that a forked child gets fresh.

``os.fork()`` copies a process with only the thread that called it. A lock that another
thread held at that moment (a background reaper sending a request and emitting its
telemetry, say) stays held forever in the child, and the child's first use of it hangs.
``multiprocessing`` workers started by fork, common in notebooks, hit exactly this. Locks
guarding module state that background threads touch are therefore ``ForkSafeLock``s: every
one is replaced by a new, unheld lock in the child, right after the fork.
"""

from __future__ import annotations

import os
import threading
import weakref
from types import TracebackType

__all__ = ["ForkSafeLock"]


class ForkSafeLock:
    """``threading.Lock`` for ``with`` blocks, renewed (unheld) in a forked child."""

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _every.add(self)

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._lock.__exit__(kind, exc, tb)


_every: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


def _renew_in_child() -> None:
    for lock in list(_every):
        lock._lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_in_child)
