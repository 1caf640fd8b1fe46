"""Daemon worker threads for panels, with stop events, and one registry to stop them all.

A ``Worker`` runs ``target(stop)`` in a daemon thread; ``target`` must return soon
after ``stop`` is set (use ``stop.wait(seconds)`` to sleep). ``stop_all()`` (called by
``%unload_ext``) stops every live worker and closes every registered panel.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["Worker", "close_on_unload", "live_workers", "spawn", "stop_all"]

_log = logging.getLogger("atlas_nb.notebook")
_lock = threading.Lock()
_workers: set[Worker] = set()
_closables: weakref.WeakSet[Any] = weakref.WeakSet()


class Worker:
    """One daemon thread with a stop event."""

    def __init__(self, target: Callable[[threading.Event], None], *, name: str,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.name = name
        self.stop_event = threading.Event()
        self._target = target
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name=f"atlas-nb-{name}", daemon=True)

    def __repr__(self) -> str:
        return f"Worker({self.name!r}, alive={self.alive})"

    def _run(self) -> None:
        try:
            self._target(self.stop_event)
        except Exception as exc:  # a panel thread must report, never die silently
            if self._on_error is not None:
                try:
                    self._on_error(exc)
                except Exception:
                    _log.exception("atlas_nb panel error handler failed")
            else:
                _log.exception("atlas_nb background task %s failed", self.name)
        finally:
            with _lock:
                _workers.discard(self)

    def start(self) -> Worker:
        """Start the thread (registered until it ends)."""
        with _lock:
            _workers.add(self)
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """Whether the thread is still running."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the thread to stop and wait up to ``timeout``; ``True`` if it ended."""
        self.stop_event.set()
        if self._thread is threading.current_thread() or not self._thread.is_alive():
            return not self._thread.is_alive() or self._thread is threading.current_thread()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to finish on its own; ``True`` if it ended."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()


def spawn(target: Callable[[threading.Event], None], *, name: str,
          on_error: Callable[[BaseException], None] | None = None) -> Worker:
    """Start a ``Worker`` running ``target(stop_event)``."""
    return Worker(target, name=name, on_error=on_error).start()


def live_workers() -> list[Worker]:
    """Workers still running."""
    with _lock:
        return [w for w in _workers if w.alive]


def close_on_unload(obj: Any) -> None:
    """Have ``stop_all`` call ``obj.close()`` (held weakly)."""
    with _lock:
        _closables.add(obj)


def stop_all(timeout: float = 2.0) -> int:
    """Close every registered panel and stop every worker; returns how many were running."""
    with _lock:
        panels = list(_closables)
        workers = list(_workers)
    for panel in panels:
        try:
            panel.close()
        except Exception:
            _log.exception("closing %r failed", panel)
    for worker in workers:
        worker.stop(timeout)
    return len(workers)
