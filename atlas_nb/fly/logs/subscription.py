"""One subscriber of a Fly app's log stream, and the public handle on it."""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Protocol

from ...models import LogEntry
from .events import LogBatch, LogCallback, LogEvent, LogsStopped

__all__ = ["LogSubscription", "Subscriber"]

_log = logging.getLogger("atlas_nb.fly")


class Subscriber:
    """One registered callback and its filters (internal to the streamer)."""

    __slots__ = ("callback", "done", "instance", "region", "stopped")

    def __init__(self, callback: LogCallback, region: str | None, instance: str | None) -> None:
        self.callback = callback
        self.region = region
        self.instance = instance
        self.stopped: LogsStopped | None = None
        self.done = threading.Event()

    def batch(self, app: str, entries: tuple[LogEntry, ...], shared: LogBatch | None,
              backfill: bool = False) -> None:
        if self.region is None and self.instance is None and shared is not None:
            self.send(shared)
            return
        picked = tuple(e for e in entries
                       if (self.region is None or e.region == self.region)
                       and (self.instance is None or e.instance == self.instance))
        if picked:
            self.send(LogBatch(app, picked, backfill))

    def send(self, event: LogEvent) -> None:
        try:
            self.callback(event)
        except Exception:  # one bad subscriber must not starve the others
            _log.exception("a Fly logs subscriber raised; it stays subscribed")


class _Stream(Protocol):
    """What a subscription needs of its app's streamer (kept abstract: no import cycle)."""

    @property
    def app(self) -> str: ...

    def remove(self, sub: Subscriber) -> None: ...


class LogSubscription:
    """A handle on one subscription; ``close()`` (or leaving the ``with`` block) ends it."""

    def __init__(self, streamer: _Stream, sub: Subscriber) -> None:
        self._streamer = streamer
        self._sub = sub

    def __repr__(self) -> str:
        state = "active" if self.active else "closed"
        return f"LogSubscription(app={self.app!r}, {state})"

    @property
    def app(self) -> str:
        """The app being followed."""
        return self._streamer.app

    @property
    def active(self) -> bool:
        """Still receiving entries."""
        return not self._sub.done.is_set()

    @property
    def stopped(self) -> LogsStopped | None:
        """Why the stream ended on its own, or ``None``."""
        return self._sub.stopped

    def wait(self, timeout: float | None = None) -> bool:
        """Block until this subscription ends; ``True`` if it did within ``timeout``."""
        return self._sub.done.wait(timeout)

    def close(self) -> None:
        """Unsubscribe; the app's streamer stops when its last subscriber leaves."""
        self._streamer.remove(self._sub)

    def __enter__(self) -> LogSubscription:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
