"""The one HTTP seam: builds httpx clients, retries, redacts and emits telemetry.

Every public call takes ``http=``: an ``httpx.Client``, an httpx transport, or a
dict of ``httpx.Client`` options. Tests inject ``httpx.MockTransport`` this way.

Retry rules: GET, HEAD, DELETE and requests marked ``idempotent=True`` are retried
on 408, 429, 5xx and transport errors, with bounded exponential backoff and
jitter, honouring ``Retry-After``. A request marked ``idempotent=False`` (a create)
is never replayed; its caller must look the resource up before trying again.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import contextvars
import functools
import json as jsonlib
import logging
import os
import random
import re
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.cookiejar import CookieJar
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from . import telemetry
from ._fork_safe_lock import ForkSafeLock
from .errors import (
    AtlasError,
    Timeout,
    TransportError,
    ValidationError,
    error_from_response,
    parse_retry_after,
)

__all__ = [
    "HttpClient", "HttpOption", "RetryPolicy", "client_for", "deadline", "redact_text",
    "redact_url", "user_timeout",
]

HttpOption = httpx.Client | httpx.BaseTransport | Mapping[str, Any] | None

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=16, max_keepalive_connections=16)
_SECRET_PARAM = re.compile(
    r"(api[_-]?key|key|token|secret|sig|signature|password|passwd|auth|access[_-]?token)$", re.I
)
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REDACTED = "REDACTED"


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, and how long to wait between them (seconds)."""

    attempts: int = 4
    backoff_base: float = 0.25
    backoff_max: float = 8.0
    retry_after_max: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Wait before attempt ``attempt + 1``: ``Retry-After`` if sent, else backoff + jitter."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        base: float = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)


NO_RETRY = RetryPolicy(attempts=1)

# A hard stop (``time.monotonic()``) for every request sent in this context: set by the
# orchestrator's shutdown paths, which have ~2 s in a kernel, so neither a server's
# ``Retry-After: 5`` nor our own backoff or a 30 s read timeout may outlive them.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "atlas_nb_http_deadline", default=None)


@contextlib.contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Inside the block, requests end by ``at`` (``time.monotonic()``; ``None``: no cap):
    it caps each request's timeouts, and a retry whose wait would pass it is not made
    (the last answer is returned, or the transport error raised). Nested blocks keep
    the earlier deadline. Context-local: a thread sets its own."""
    if at is None:
        yield
        return
    outer = _deadline.get()
    token = _deadline.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _deadline.reset(token)


def _time_left() -> float | None:
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


_shared_lock = ForkSafeLock()
_shared: httpx.Client | None = None
_by_transport: weakref.WeakKeyDictionary[httpx.BaseTransport, httpx.Client] = (
    weakref.WeakKeyDictionary()
)
_by_options: dict[str, httpx.Client] = {}


def _forget_pools_in_child() -> None:
    """After ``os.fork()`` the child must not share the parent's keep-alive sockets (two
    processes writing one TLS stream corrupt both): it drops the pooled clients, unclosed
    (closing would shut the parent's connections too), and builds its own on first use."""
    global _shared
    _shared = None
    _by_options.clear()


os.register_at_fork(after_in_child=_forget_pools_in_child)


def client_for(http: HttpOption = None) -> httpx.Client:
    """The httpx client for an ``http=`` option; clients are pooled and reused."""
    global _shared
    if isinstance(http, httpx.Client):
        return http
    with _shared_lock:
        if http is None:
            if _shared is None or _shared.is_closed:
                _shared = _closed_at_exit(httpx.Client(
                    timeout=DEFAULT_TIMEOUT, limits=DEFAULT_LIMITS, cookies=_NoCookies()))
            return _shared
        if isinstance(http, httpx.BaseTransport):
            client = _by_transport.get(http)
            if client is None:
                client = httpx.Client(transport=http, timeout=DEFAULT_TIMEOUT,
                                      cookies=_NoCookies())
                _by_transport[http] = client
            return client
        if isinstance(http, Mapping):
            key = jsonlib.dumps(dict(http), sort_keys=True, default=repr)
            client = _by_options.get(key)
            if client is None or client.is_closed:
                opts = {"timeout": DEFAULT_TIMEOUT, "limits": DEFAULT_LIMITS,
                        "cookies": _NoCookies(), **http}
                client = _closed_at_exit(httpx.Client(**opts))
                _by_options[key] = client
            return client
    raise ValidationError(
        f"http= must be an httpx.Client, an httpx transport or a dict of httpx.Client options, "
        f"not {type(http).__name__}"
    )


def user_timeout(http: HttpOption) -> httpx.Timeout | None:
    """The timeout the user chose through ``http=``, or ``None`` when they chose none.

    An ``httpx.Client`` brings its ``timeout`` unless that is httpx's untouched default
    (5 s for every phase), which a client cannot tell apart from no choice: honouring it
    would cut every 60 s Fly ``/wait`` short and fail calls that used to get 30 s. A dict
    brings its ``"timeout"`` key. A transport, or no ``http=`` at all, sets no cap.
    """
    if isinstance(http, httpx.Client):
        return None if http.timeout == _HTTPX_DEFAULT_TIMEOUT else http.timeout
    if isinstance(http, Mapping) and "timeout" in http:
        chosen = http["timeout"]
        return chosen if isinstance(chosen, httpx.Timeout) else httpx.Timeout(chosen)
    return None


def _effective_timeout(
    requested: float | httpx.Timeout | None, cap: float | httpx.Timeout | None
) -> httpx.Timeout:
    """The timeout one request is sent with: its own (or ``DEFAULT_TIMEOUT``), each phase
    (connect, read, write, pool) capped by ``cap`` (the user's ``http=`` timeout, or any
    other bound on how long a caller may wait). ``None`` in a phase means "no limit"."""
    if requested is None:
        want = DEFAULT_TIMEOUT
    else:
        want = requested if isinstance(requested, httpx.Timeout) else httpx.Timeout(requested)
    if cap is None:
        return want
    bound = cap if isinstance(cap, httpx.Timeout) else httpx.Timeout(cap)

    def least(a: float | None, b: float | None) -> float | None:
        return b if a is None else a if b is None else min(a, b)

    return httpx.Timeout(
        connect=least(want.connect, bound.connect), read=least(want.read, bound.read),
        write=least(want.write, bound.write), pool=least(want.pool, bound.pool),
    )


_HTTPX_DEFAULT_TIMEOUT = httpx.Timeout(5.0)  # what httpx.Client() uses when not told
LONG_POLL_MARGIN_S = 1.0
"""How much shorter than the user's read timeout a server-held window must be: room for
the round trip and for a server that answers a little after its window closes."""


class _NoCookies(CookieJar):
    """A jar that keeps nothing, for the clients built here: every provider API is
    token-authenticated, and stdlib cookie parsing costs more per request than the rest
    of a call's local work. Pass ``http={"cookies": ...}`` to keep cookies."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None


@functools.lru_cache(maxsize=512)
def _parsed(url: str) -> httpx.URL:
    # httpx parses a URL string on every request (as long as the rest of a GET's local
    # work); the same URLs recur (a polled pod, an endpoint's /run), and URLs are immutable.
    return httpx.URL(url)


def _closed_at_exit(client: httpx.Client) -> httpx.Client:
    # Pooled keep-alive sockets would otherwise be garbage-collected open at interpreter
    # exit, each a ResourceWarning (e.g. after a sandbox that served them has stopped).
    atexit.register(_close_if_made_here, client, os.getpid())
    return client


def _close_if_made_here(client: httpx.Client, pid: int) -> None:
    # A forked child inherits this handler but not the threads of its parent: a pool lock
    # one of them held at the fork stays held forever, and closing would hang the child's
    # exit. The child's sockets are the parent's anyway; they close with the process.
    if os.getpid() == pid:
        client.close()


class _RedactUrls(logging.Filter):
    """Redact secret query params in httpx's own request log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(str(a)) if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


_log_filter_installed = False


def _install_log_filter() -> None:
    # Done on first use, not at import: importing atlas_nb must not touch logging.
    global _log_filter_installed
    if not _log_filter_installed:
        logging.getLogger("httpx").addFilter(_RedactUrls())
        _log_filter_installed = True


def redact_url(url: str) -> str:
    """Replace the values of secret-looking query parameters with ``REDACTED``."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = [
        (k, REDACTED if _SECRET_PARAM.search(k) else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def redact_text(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each (non-trivial) secret in ``text``.

    Besides the plain secret, this catches the forms a server is likely to echo it in:
    URL-encoded (``quote``, ``quote_plus``, any mix of escaped and literal characters,
    either hex case) and base64 (standard or urlsafe, padded or not, also inside a longer
    encoded string such as an HTTP Basic ``user:key`` pair).
    """
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET_LEN:
            if secret in text:
                text = text.replace(secret, REDACTED)
            text = _encoded_forms(secret).sub(REDACTED, text)
    return text


_MIN_SECRET_LEN = 6


@functools.lru_cache(maxsize=64)
def _encoded_forms(secret: str) -> re.Pattern[str]:
    """One pattern matching ``secret`` URL-encoded or base64-encoded at any alignment."""
    return re.compile("|".join([_percent_pattern(secret), *_base64_cores(secret.encode())]))


def _percent_pattern(secret: str) -> str:
    # Every character may appear as itself or as its %XX escapes (in either hex case); a
    # space may also be '+' (quote_plus). This covers quote(safe=...) for any safe set.
    parts = []
    for char in secret:
        escaped = "".join(
            "%" + "".join(f"[{d.upper()}{d.lower()}]" if d.isalpha() else d for d in f"{b:02X}")
            for b in char.encode()
        )
        choices = [re.escape(char), escaped] + (["\\+"] if char == " " else [])
        parts.append("(?:" + "|".join(choices) + ")")
    return "".join(parts)


def _base64_cores(raw: bytes) -> list[str]:
    """Base64 of ``raw`` as it reads inside any longer base64 string, one per alignment.

    Base64 turns 3 bytes into 4 characters, so the characters that encode ``raw`` depend
    on its offset (mod 3) in the encoded data, and the first and last may mix in bits of
    the neighbours. For each offset keep only the characters made of ``raw``'s bits alone;
    padding never falls inside them. '+' and '/' also match urlsafe '-' and '_'.
    """
    cores = []
    for offset in range(3):
        stream = bytes(offset) + raw + bytes(2)
        encoded = base64.b64encode(stream).decode()
        first_bit, end_bit = 8 * offset, 8 * (offset + len(raw))
        chars = [encoded[i] for i in range(len(encoded))
                 if 6 * i >= first_bit and 6 * i + 6 <= end_bit]
        if len(chars) >= _MIN_SECRET_LEN:
            cores.append("".join({"+": "[+-]", "/": "[/_]"}.get(c, c) for c in chars))
    return cores


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    if not secrets:
        return value
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value


def decode(response: httpx.Response) -> Any:
    """The body as JSON when it parses, else as text (``None`` when empty)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _fits(wait: float) -> bool:
    """Whether waiting ``wait`` s still leaves time for another attempt before the deadline."""
    left = _time_left()
    return left is None or wait < left


class HttpClient:
    """Requests to one API of one provider, with auth, retries, redaction and telemetry.

    Args:
        provider: provider name, for errors and telemetry.
        api: which of the provider's APIs (``"rest"``, ``"graphql"``, ...).
        base_url: joined in front of every path.
        headers: sent on every request (e.g. ``Authorization``); never logged.
        secrets: values to scrub from errors and telemetry (the API key).
        message_of: reads a message out of the provider's own error bodies first.
        http: the ``http=`` option (client, transport or options dict).
        retry: the retry policy; ``sleep`` is injectable for tests.
    """

    def __init__(
        self,
        *,
        provider: str,
        api: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str | None] = (),
        message_of: Callable[[Any], str | None] | None = None,
        http: HttpOption = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self._message_of = message_of
        self.api = api
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self._secrets = tuple(s for s in secrets if s)
        self._http = http
        self._client = client_for(http)
        self._pid = os.getpid()
        self._cap = user_timeout(http)
        _install_log_filter()
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"HttpClient({self.provider!r}, api={self.api!r}, base_url={self.base_url!r})"

    @property
    def timeout_cap(self) -> httpx.Timeout | None:
        """The user's ``http=`` timeout that caps every request (``None``: no cap)."""
        return self._cap

    def poll_window(self, want_s: float) -> float:
        """The longest server-held window (seconds, at most ``want_s``) that ends inside
        the user's read timeout, ``LONG_POLL_MARGIN_S`` before it; ``want_s`` without a
        cap. Long polls (Fly ``/wait``, RunPod ``/runsync``) ask the server for this, so
        the answer arrives before the user's timeout cuts the request off. May be <= 0.
        """
        read = self._cap.read if self._cap is not None else None
        return want_s if read is None else min(want_s, read - LONG_POLL_MARGIN_S)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: str | bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        ok: Callable[[int], bool] | None = None,
    ) -> Any:
        """Send a request and return the decoded body; raise an ``AtlasError`` otherwise.

        ``idempotent=None`` means "by method" (GET/HEAD/OPTIONS/DELETE retry).
        ``ok`` decides which statuses are success (default: any 2xx).
        """
        response = self.send(
            method, path, json=json, content=content, params=params, headers=headers,
            idempotent=idempotent, timeout=timeout, retry=retry,
        )
        is_ok = ok(response.status_code) if ok else response.is_success
        body = decode(response)
        if not is_ok:
            raise self.error(response.status_code, body, response.headers)
        return body

    def error(self, status: int, body: Any, headers: Any = None) -> AtlasError:
        """The ``AtlasError`` for an error answer, with secrets scrubbed."""
        err = error_from_response(
            status, _scrub(body, self._secrets), provider=self.provider, headers=headers,
            message_of=self._message_of,
        )
        err.message = redact_text(err.message, self._secrets)
        err.args = (err.message,)
        return err

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: str | bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send with retries; return the final response whatever its status."""
        method = method.upper()
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        replayable = method in _IDEMPOTENT_METHODS if idempotent is None else idempotent
        policy = (retry or self.retry) if replayable else NO_RETRY
        merged = {**self._headers, **headers} if headers else self._headers
        clean_params = {k: v for k, v in params.items() if v is not None} if params else None
        want = DEFAULT_TIMEOUT if timeout is None else timeout
        sent_with = _effective_timeout(want, self._cap)
        # Cut short by the user's own timeout: replaying would only make them wait as long
        # again, past the time they said they would wait.
        user_bound = sent_with != _effective_timeout(want, None)
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            if (self._client.is_closed or self._pid != os.getpid()) and not isinstance(
                    self._http, httpx.Client):
                # A pooled client closed by its atexit handler (later atexit cleanups, the
                # orchestrator's terminates, still need one), or the parent's after a fork.
                self._client = client_for(self._http)
                self._pid = os.getpid()
            left = _time_left()
            if left is not None and left <= 0:
                raise Timeout(f"{method} {redact_url(url)} not sent: the shutdown deadline "
                              "passed", provider=self.provider)
            try:
                response = self._client.request(
                    method, _parsed(url), json=json, content=content, params=clean_params,
                    headers=merged, timeout=_effective_timeout(sent_with, left),
                )
            except httpx.TransportError as exc:
                self._emit(method, url, None, started, attempt, type(exc).__name__)
                wait = policy.delay(attempt, None)
                timed_out = isinstance(exc, httpx.TimeoutException)
                if attempt < policy.attempts and _fits(wait) and not (timed_out and user_bound):
                    self._sleep(wait)
                    continue
                kind = Timeout if isinstance(exc, httpx.TimeoutException) else TransportError
                msg = redact_text(f"{type(exc).__name__}: {exc}", self._secrets)
                raise kind(
                    f"{method} {redact_url(url)} failed: {msg}", provider=self.provider
                ) from None
            self._emit(method, response.url, response.status_code, started, attempt, None)
            status = response.status_code
            if status in _RETRY_STATUSES and attempt < policy.attempts:
                wait = policy.delay(attempt, parse_retry_after(response.headers.get("retry-after")))
                if not _fits(wait):
                    return response  # the deadline comes first: the caller sees this answer
                response.close()
                self._sleep(wait)
                continue
            return response

    def _emit(
        self, method: str, url: str | httpx.URL, status: int | None, started: float,
        attempt: int, error: str | None,
    ) -> None:
        if not telemetry.enabled("http.request"):  # keep the hot path free of redaction work
            return
        telemetry.emit(
            "http.request",
            {
                "provider": self.provider,
                "api": self.api,
                "method": method,
                "url": redact_text(redact_url(str(url)), self._secrets),
                "status": status,
                "duration_ms": (time.perf_counter() - started) * 1000.0,
                "attempt": attempt,
                "error": error,
            },
        )

