"""Live Fly logs: one polling thread per app, shared by every subscriber of that app.

``subscribe_logs(app, callback)`` returns a ``LogSubscription`` (also a context
manager); ``tail_logs(app)`` is an iterator of ``LogEntry``. The callback receives
``LogBatch`` events (new entries, deduplicated by id) and, if the stream ends on
its own, one final ``LogsStopped`` (``unauthorized``, ``not_found``, ``errors`` or
``closed``).

Guarantees (each one a defect of the original SDK, see original_sdk.md §11):

* one streamer thread per app (and connection), created under a lock: concurrent
  first subscribers share it;
* it stops when its last subscriber leaves, and nothing restarts it (no zombie);
* the first batch goes to the first subscriber: it is registered before the first
  poll, which ``subscribe`` makes before returning (so lines written after it returns
  are never lost); later subscribers get the ring buffer's recent entries first
  (``backfill``);
* a callback that raises is logged and isolated: the others still get everything;
* polling follows flyctl: poll again at once after new entries, back off 64 ms ->
  4 s on empty pages, keep the previous ``next_token`` when the answer has none,
  and dedupe by entry id (never by timestamp arithmetic, which loses lines);
* a 401 is retried once with a freshly resolved token (``LogsClient``); a second
  401 ends the stream with ``LogsStopped("unauthorized")``, a 404 with
  ``"not_found"``, and ``max_errors`` consecutive failures with ``"errors"``.

Memory is bounded: the ring buffer keeps ``buffer_size`` entries, the dedupe window
``dedupe_window`` to twice that many ids, and a ``tail_logs`` queue ``maxsize`` entries.
Telemetry: ``fly.logs.poll`` ``{app, status, entries, new, wait_s, duration_ms}`` per
poll and ``fly.logs.stopped`` ``{app, reason}``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .. import telemetry
from .._http import HttpOption, RetryPolicy
from ..errors import AtlasError, NotFound, RateLimited, Unauthorized, UnknownError, ValidationError
from ..models import LogEntry
from .log_dedupe import SeenIds
from .log_events import LogBatch, LogCallback, LogsStopped, StopReason
from .log_subscription import LogSubscription, Subscriber
from .log_tail import LogTail
from .logs import LogPage, LogsClient, check_app
from .tokens import TokenSource

__all__ = ["LogStreams", "LogSubscription", "subscribe_logs", "tail_logs"]


class _Streamer:
    """Polls one app and dispatches to its subscribers (see the module docstring)."""

    def __init__(self, hub: LogStreams, key: tuple[Any, ...], app: str, client: LogsClient,
                 options: _Options) -> None:
        self.hub = hub
        self.key = key
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
        self.hub._forget(self)
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


@dataclass(frozen=True)
class _Options:
    min_wait_s: float
    max_wait_s: float
    max_errors: int
    buffer_size: int
    dedupe_window: int
    join_timeout_s: float
    pause: Callable[[float], object] | None


def _http_key(http: HttpOption) -> Any:
    if http is None or isinstance(http, (httpx.Client, httpx.BaseTransport)):
        return http
    return json.dumps(dict(http), sort_keys=True, default=repr)


class LogStreams:
    """The streamers of a process, one per (app, connection). ``subscribe_logs`` uses a default.

    Args:
        http: connection default (see ``LogsClient``); ``subscribe`` can override it.
        base_url: connection default (see ``LogsClient``); ``subscribe`` can override it.
        token: connection default (see ``LogsClient``); ``subscribe`` can override it.
        tokens: the token source (see ``LogsClient``).
        min_wait_s: the first empty-page backoff (flyctl: 64 ms).
        max_wait_s: the longest empty-page backoff (flyctl: ~4 s).
        max_errors: consecutive failures before a stream gives up.
        buffer_size: recent entries kept per app (backfill for late subscribers).
        dedupe_window: how many recent ids are remembered for dedupe.
        join_timeout_s: how long closing the last subscription waits for the thread.
        pause: ``pause(seconds)`` between polls (tests inject a recorder).
    """

    def __init__(
        self,
        *,
        http: HttpOption = None,
        base_url: str | Mapping[str, str] | None = None,
        token: str | None = None,
        tokens: TokenSource | None = None,
        min_wait_s: float = 0.064,
        max_wait_s: float = 4.0,
        max_errors: int = 10,
        buffer_size: int = 1000,
        dedupe_window: int = 10_000,
        join_timeout_s: float = 2.0,
        pause: Callable[[float], object] | None = None,
    ) -> None:
        if max_errors < 1 or buffer_size < 0 or dedupe_window < 1:
            raise ValidationError("max_errors and dedupe_window must be >= 1, buffer_size >= 0")
        self._http = http
        self._base_url = base_url
        self._token = token
        self._tokens = tokens
        self._options = _Options(min_wait_s, max_wait_s, max_errors, buffer_size,
                                 dedupe_window, join_timeout_s, pause)
        self._lock = threading.Lock()
        self._streamers: dict[tuple[Any, ...], _Streamer] = {}

    def __repr__(self) -> str:
        return f"LogStreams(running={self.running()})"

    def running(self) -> list[str]:
        """The apps with a live streamer."""
        with self._lock:
            return sorted({s.app for s in self._streamers.values()})

    def subscribe(
        self,
        app: str,
        callback: LogCallback,
        *,
        region: str | None = None,
        instance: str | None = None,
        backfill: bool = True,
        http: HttpOption = None,
        base_url: str | Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> LogSubscription:
        """Follow ``app``'s logs: ``callback(LogBatch | LogsStopped)`` on the streamer thread.

        ``region``/``instance`` filter what this subscriber sees; ``backfill`` replays
        the recent entries the app's streamer already has.

        Raises:
            ValidationError: bad app name or callback.
            Unauthorized: no token can be found (the message says how to provide one).
        """
        app = check_app(app)
        if not callable(callback):
            raise ValidationError("callback must be callable: callback(event) -> None")
        http = http if http is not None else self._http
        base_url = base_url if base_url is not None else self._base_url
        token = token if token is not None else self._token
        client = LogsClient(base_url=base_url, http=http, token=token, tokens=self._tokens,
                            retry=RetryPolicy(attempts=1))
        client.tokens.get(app)  # fail here, in the caller, when there is no token at all
        fingerprint = hashlib.sha256(token.encode()).hexdigest() if token else None
        key = (app, client.base_url, _http_key(http), fingerprint)
        sub = Subscriber(callback, region, instance)
        while True:
            with self._lock:
                streamer = self._streamers.get(key)
                if streamer is None:
                    streamer = _Streamer(self, key, app, client, self._options)
                    self._streamers[key] = streamer
            if streamer.add(sub, backfill=backfill):
                return LogSubscription(streamer, sub)
            self._forget(streamer)  # it is stopping: make a new one on the next turn

    def tail(self, app: str, *, timeout_s: float | None = None, max_entries: int | None = None,
             maxsize: int = 10_000, **subscribe: Any) -> LogTail:
        """An iterator of ``app``'s ``LogEntry`` (see ``LogTail``)."""
        return LogTail(self, app, timeout_s=timeout_s, max_entries=max_entries,
                       maxsize=maxsize, **subscribe)

    def close(self) -> None:
        """Stop every streamer; their subscribers get ``LogsStopped("closed")``."""
        with self._lock:
            streamers = list(self._streamers.values())
        for streamer in streamers:
            streamer.finish("closed", None)

    def _forget(self, streamer: _Streamer) -> None:
        with self._lock:
            if self._streamers.get(streamer.key) is streamer:
                del self._streamers[streamer.key]


_default_hub = LogStreams()


def subscribe_logs(
    app: str,
    callback: LogCallback,
    *,
    region: str | None = None,
    instance: str | None = None,
    backfill: bool = True,
    http: HttpOption = None,
    base_url: str | Mapping[str, str] | None = None,
    token: str | None = None,
) -> LogSubscription:
    """Follow ``app``'s logs: ``callback(LogBatch | LogsStopped)`` (see ``LogStreams.subscribe``).

    >>> with subscribe_logs("my-app", print):  # doctest: +SKIP
    ...     time.sleep(30)
    """
    return _default_hub.subscribe(app, callback, region=region, instance=instance,
                                  backfill=backfill, http=http, base_url=base_url, token=token)


def tail_logs(
    app: str,
    *,
    timeout_s: float | None = None,
    max_entries: int | None = None,
    maxsize: int = 10_000,
    region: str | None = None,
    instance: str | None = None,
    backfill: bool = True,
    http: HttpOption = None,
    base_url: str | Mapping[str, str] | None = None,
    token: str | None = None,
) -> LogTail:
    """Iterate ``app``'s log entries live (see ``LogTail``).

    >>> for entry in tail_logs("my-app", timeout_s=10):  # doctest: +SKIP
    ...     print(entry)
    """
    return _default_hub.tail(app, timeout_s=timeout_s, max_entries=max_entries,
                             maxsize=maxsize, region=region, instance=instance,
                             backfill=backfill, http=http, base_url=base_url, token=token)
