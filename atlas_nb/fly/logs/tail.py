"""``tail_logs``: a Fly app's log entries as a blocking iterator with a bounded queue."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

from ...models import LogEntry
from .events import LogBatch, LogCallback, LogEvent, LogsStopped
from .subscription import LogSubscription

__all__ = ["LogTail"]


class LogTail:
    """Iterate ``LogEntry`` as they arrive; a context manager that unsubscribes on exit.

    Iteration ends after ``timeout_s`` seconds or ``max_entries`` entries (either
    ``None``: no limit), or when the stream stops; a stop caused by an error
    (401, 404, too many failures) raises that ``AtlasError`` once the queued entries
    are consumed. The queue holds at most ``maxsize`` entries: when the consumer falls
    behind, the oldest are dropped and counted in ``dropped``.

    ``subscribe(callback)`` starts the subscription this tail reads (``LogStreams.tail``
    passes one bound to an app and its options).
    """

    def __init__(self, subscribe: Callable[[LogCallback], LogSubscription], *,
                 timeout_s: float | None, max_entries: int | None, maxsize: int) -> None:
        self._cond = threading.Condition()
        self._items: deque[LogEntry] = deque()
        self._maxsize = max(1, maxsize)
        self._stopped: LogsStopped | None = None
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._left = max_entries
        self.dropped = 0
        self._sub = subscribe(self._on_event)

    def __repr__(self) -> str:
        return f"LogTail(app={self._sub.app!r}, queued={len(self._items)})"

    @property
    def subscription(self) -> LogSubscription:
        """The underlying subscription (``wait()``, ``stopped``, ``active``)."""
        return self._sub

    def _on_event(self, event: LogEvent) -> None:
        with self._cond:
            if isinstance(event, LogBatch):
                self._items.extend(event.entries)
                overflow = len(self._items) - self._maxsize
                for _ in range(max(0, overflow)):
                    self._items.popleft()
                self.dropped += max(0, overflow)
            else:
                self._stopped = event
            self._cond.notify_all()

    def __iter__(self) -> LogTail:
        return self

    def __next__(self) -> LogEntry:
        if self._left is not None and self._left <= 0:
            self.close()
            raise StopIteration
        stopped: LogsStopped | None = None
        with self._cond:
            while not self._items:
                stopped = self._stopped
                remaining = None if self._deadline is None else self._deadline - time.monotonic()
                if stopped is not None or (remaining is not None and remaining <= 0):
                    break
                self._cond.wait(remaining)
            else:
                entry = self._items.popleft()
                if self._left is not None:
                    self._left -= 1
                return entry
        # Closed outside the condition: close() takes the streamer's lock, which the
        # streamer thread holds while it calls _on_event (which takes the condition).
        self.close()
        if stopped is not None and stopped.error is not None:
            raise stopped.error
        raise StopIteration

    def close(self) -> None:
        """Unsubscribe (idempotent)."""
        self._sub.close()

    def __enter__(self) -> LogTail:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
