"""Live Fly logs: one polling thread per app, shared by every subscriber of that app.

``subscribe_logs(app, callback)`` returns a ``LogSubscription`` (also a context
manager); ``tail_logs(app)`` is an iterator of ``LogEntry``. Both take the app name
or a ``LogSource`` (filters and connection), and ``LogSource`` fields as keywords.
The callback receives ``LogBatch`` events (new entries, deduplicated by id) and, if
the stream ends on its own, one final ``LogsStopped`` (``unauthorized``,
``not_found``, ``errors`` or ``closed``).

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
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, Unpack

import httpx

from ..._http import HttpOption, RetryPolicy
from ...errors import ValidationError
from ..tokens import TokenSource
from .client import LogsClient
from .events import LogCallback
from .source import LogSource, LogSourceOptions
from .streamer import PollPolicy, Streamer
from .subscription import LogSubscription, Subscriber
from .tail import LogTail
from .wire import check_app

__all__ = ["LogStreams", "subscribe_logs", "tail_logs"]


def _http_key(http: HttpOption) -> Any:
    if http is None or isinstance(http, (httpx.Client, httpx.BaseTransport)):
        return http
    return json.dumps(dict(http), sort_keys=True, default=repr)


class LogStreams:
    """The streamers of a process, one per (app, connection). ``subscribe_logs`` uses a default.

    Args:
        http: connection default (see ``LogsClient``); a ``LogSource`` can override it.
        base_url: connection default (see ``LogsClient``); a ``LogSource`` can override it.
        token: connection default (see ``LogsClient``); a ``LogSource`` can override it.
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
        self.policy = PollPolicy(min_wait_s, max_wait_s, max_errors, buffer_size,
                                 dedupe_window, join_timeout_s, pause)
        self._lock = threading.Lock()
        self._streamers: dict[tuple[Any, ...], Streamer] = {}

    def __repr__(self) -> str:
        return f"LogStreams(running={self.running()})"

    def running(self) -> list[str]:
        """The apps with a live streamer."""
        with self._lock:
            return sorted({s.app for s in self._streamers.values()})

    def subscribe(
        self,
        source: str | LogSource,
        callback: LogCallback,
        *,
        backfill: bool = True,
        **options: Unpack[LogSourceOptions],
    ) -> LogSubscription:
        """Follow an app's logs: ``callback(LogBatch | LogsStopped)`` on the streamer thread.

        ``source`` is the app name or a ``LogSource``; ``options`` are ``LogSource``
        fields (``region``, ``instance``, ``http``, ``base_url``, ``token``).
        ``region``/``instance`` filter what this subscriber sees; ``backfill`` replays
        the recent entries the app's streamer already has.

        Raises:
            ValidationError: bad app name or callback.
            Unauthorized: no token can be found (the message says how to provide one).
        """
        src = LogSource.of(source, **options)
        app = check_app(src.app)
        if not callable(callback):
            raise ValidationError("callback must be callable: callback(event) -> None")
        http = src.http if src.http is not None else self._http
        base_url = src.base_url if src.base_url is not None else self._base_url
        token = src.token if src.token is not None else self._token
        client = LogsClient(base_url=base_url, http=http, token=token, tokens=self._tokens,
                            retry=RetryPolicy(attempts=1))
        client.tokens.get(app)  # fail here, in the caller, when there is no token at all
        fingerprint = hashlib.sha256(token.encode()).hexdigest() if token else None
        key = (app, client.base_url, _http_key(http), fingerprint)
        sub = Subscriber(callback, src.region, src.instance)
        while True:
            with self._lock:
                streamer = self._streamers.get(key)
                if streamer is None:
                    streamer = Streamer(key, app, client, self.policy, self._forget)
                    self._streamers[key] = streamer
            if streamer.add(sub, backfill=backfill):
                return LogSubscription(streamer, sub)
            self._forget(streamer)  # it is stopping: make a new one on the next turn

    def tail(self, source: str | LogSource, *, timeout_s: float | None = None,
             max_entries: int | None = None, maxsize: int = 10_000, backfill: bool = True,
             **options: Unpack[LogSourceOptions]) -> LogTail:
        """An iterator of an app's ``LogEntry`` (see ``LogTail``); arguments as ``subscribe``."""
        src = LogSource.of(source, **options)
        return LogTail(lambda callback: self.subscribe(src, callback, backfill=backfill),
                       timeout_s=timeout_s, max_entries=max_entries, maxsize=maxsize)

    def close(self) -> None:
        """Stop every streamer; their subscribers get ``LogsStopped("closed")``."""
        with self._lock:
            streamers = list(self._streamers.values())
        for streamer in streamers:
            streamer.finish("closed", None)

    def _forget(self, streamer: Streamer) -> None:
        with self._lock:
            if self._streamers.get(streamer.key) is streamer:
                del self._streamers[streamer.key]


_default_hub = LogStreams()


def subscribe_logs(
    source: str | LogSource,
    callback: LogCallback,
    *,
    backfill: bool = True,
    **options: Unpack[LogSourceOptions],
) -> LogSubscription:
    """Follow an app's logs: ``callback(LogBatch | LogsStopped)`` (see ``LogStreams.subscribe``).

    ``source`` is the app name or a ``LogSource``; ``options`` are ``LogSource`` fields
    (``region``, ``instance``, ``http``, ``base_url``, ``token``).

    >>> with subscribe_logs("my-app", print):  # doctest: +SKIP
    ...     time.sleep(30)
    """
    return _default_hub.subscribe(source, callback, backfill=backfill, **options)


def tail_logs(
    source: str | LogSource,
    *,
    timeout_s: float | None = None,
    max_entries: int | None = None,
    maxsize: int = 10_000,
    backfill: bool = True,
    **options: Unpack[LogSourceOptions],
) -> LogTail:
    """Iterate an app's log entries live (see ``LogTail``); arguments as ``subscribe_logs``.

    >>> for entry in tail_logs("my-app", timeout_s=10):  # doctest: +SKIP
    ...     print(entry)
    """
    return _default_hub.tail(source, timeout_s=timeout_s, max_entries=max_entries,
                             maxsize=maxsize, backfill=backfill, **options)
