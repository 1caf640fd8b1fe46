"""One app's log streamer: a polling thread that dispatches each new page to subscribers.

``LogStreams`` (in ``streams``) creates one ``Streamer`` per (app, connection) and
forgets it when it stops; the guarantees are listed there. Polling follows flyctl:
poll again at once after new entries, back off on empty pages and errors, keep the
previous ``next_token`` when an answer has none, and dedupe by entry id.
Telemetry: ``fly.logs.poll`` ``{app, status, entries, new, wait_s, duration_ms}`` per
poll and ``fly.logs.stopped`` ``{app, reason}``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ... import telemetry
from ...errors import AtlasError, NotFound, RateLimited, Unauthorized, UnknownError
from ...models import LogEntry
from .client import LogsClient
from .dedupe import SeenIds
from .events import LogBatch, LogsStopped, StopReason
from .subscription import Subscriber
from .wire import LogPage

__all__ = ["PollPolicy", "Streamer"]


@dataclass(frozen=True)
class PollPolicy:
    """How a streamer polls and what it keeps (``LogStreams`` documents each field)."""

    min_wait_s: float
    max_wait_s: float
    max_errors: int
    buffer_size: int
    dedupe_window: int
    join_timeout_s: float
    pause: Callable[[float], object] | None


class Streamer:
    """Polls one app and dispatches to its subscribers (see the module docstring)."""

    def __init__(self, key: tuple[Any, ...], app: str, client: LogsClient,
                 options: PollPolicy, on_stop: Callable[[Streamer], object]) -> None:
        self.key = key
        self._on_stop = on_stop
        self.app = app
        self.client = client
        self.opt = options
        self.cursor = ""
        self._lock = threading.RLock()
        self._subs: tuple[Subscriber, ...] = ()
        self._stopping = False
        self._started = False
        self._stop = threading.Event()
        self._buffer: deque[LogEntry] = deque(maxlen=options.buffer_size)
        self._seen = SeenIds(options.dedupe_window)
        self._pause = options.pause or self._stop.wait
        self._wait = 0.0  # before the next poll (the empty-page / error backoff)
        self._errors = 0  # consecutive failed polls
        self.thread = threading.Thread(target=self._run, name=f"atlas-fly-logs-{app}",
                                       daemon=True)

    # -- subscribers -------------------------------------------------------------------
    def add(self, sub: Subscriber, *, backfill: bool, start: bool = True) -> bool:
        """Register ``sub`` (after replaying the buffer to it); ``False`` if stopping.

        The first subscriber's call also makes the first poll, in the caller's thread,
        before the polling thread starts: when ``subscribe`` returns, the stream's cursor
        is set, so no line written after that is lost, however fast lines then arrive
        (a first poll has no cursor and gets only the latest page). ``start=False``
        leaves polling alone (the benchmark feeds ``ingest`` itself).
        """
        with self._lock:
            if self._stopping:
                return False
            recent = tuple(self._buffer) if backfill else ()
            if recent:
                sub.batch(self.app, recent, LogBatch(self.app, recent, True), backfill=True)
            self._subs = (*self._subs, sub)
            first = start and not self._started
            if first:
                self._started = True
        if first and self._poll() and not self._stop.is_set():
            self.thread.start()
        return True

    def remove(self, sub: Subscriber) -> None:
        with self._lock:
            if sub not in self._subs:
                return
            self._subs = tuple(s for s in self._subs if s is not sub)
            sub.done.set()
            last = not self._subs and not self._stopping
            if last:
                self._stopping = True
        if last:
            self._shutdown()

    def finish(self, reason: StopReason, error: AtlasError | None) -> None:
        """End the stream on its own: every subscriber gets ``LogsStopped``."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            subs, self._subs = self._subs, ()
            event = LogsStopped(self.app, reason, error)
            for sub in subs:
                sub.stopped = event
                sub.send(event)
                sub.done.set()
        telemetry.emit("fly.logs.stopped", {"app": self.app, "reason": reason})
        self._shutdown()

    def _shutdown(self) -> None:
        self._stop.set()
        self._on_stop(self)
        if self.thread.ident is not None and threading.current_thread() is not self.thread:
            # Bounded: a poll in flight finishes (and is discarded) before the thread exits.
            self.thread.join(timeout=self.opt.join_timeout_s)

    # -- polling -----------------------------------------------------------------------
    def ingest(self, page: LogPage) -> int:
        """Take one page: advance the cursor, drop seen ids, buffer and dispatch the rest."""
        if page.next_token:  # an empty token keeps the previous cursor (flyctl does too)
            self.cursor = page.next_token
        ids = page.ids if len(page.ids) == len(page.entries) else tuple(
            e.id for e in page.entries)
        batch = self._seen.fresh(ids, page.entries)
        if not batch:
            return 0
        with self._lock:
            if self._stopping:
                return 0
            self._buffer.extend(batch)
            shared = LogBatch(self.app, batch)
            for sub in self._subs:
                sub.batch(self.app, batch, shared)
        return len(batch)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._wait > 0:
                self._pause(self._wait)
                if self._stop.is_set():
                    break
            if not self._poll():
                return

    def _poll(self) -> bool:
        """One request and its dispatch; ``False`` when the stream has ended."""
        opt = self.opt
        started = time.perf_counter()
        try:
            page = self.client.fetch(self.app, next_token=self.cursor or None)
        except Unauthorized as exc:
            self._emit("unauthorized", 0, 0, 0.0, started)
            self.finish("unauthorized", exc)
            return False
        except NotFound as exc:
            self._emit("not_found", 0, 0, 0.0, started)
            self.finish("not_found", exc)
            return False
        except Exception as exc:
            err = exc if isinstance(exc, AtlasError) else UnknownError(
                f"reading the logs of {self.app!r} failed: {type(exc).__name__}",
                provider="fly")
            self._errors += 1
            self._wait = min(max(self._wait * 2, opt.min_wait_s), opt.max_wait_s)
            if isinstance(err, RateLimited) and err.retry_after:
                self._wait = max(self._wait, err.retry_after)
            self._emit(err.kind, 0, 0, self._wait, started)
            if self._errors >= opt.max_errors:
                self.finish("errors", err)
                return False
            return True
        self._errors = 0
        new = self.ingest(page)
        self._wait = 0.0 if new else min(max(self._wait * 2, opt.min_wait_s), opt.max_wait_s)
        self._emit("ok", len(page.entries), new, self._wait, started)
        return True

    def _emit(self, status: str, entries: int, new: int, wait: float, started: float) -> None:
        telemetry.emit("fly.logs.poll", {
            "app": self.app, "status": status, "entries": entries, "new": new, "wait_s": wait,
            "duration_ms": (time.perf_counter() - started) * 1000.0,
        })
