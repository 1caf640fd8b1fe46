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
import functools
import json as jsonlib
import logging
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.cookiejar import CookieJar
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from . import telemetry
from .errors import (
    AtlasError,
    Timeout,
    TransportError,
    ValidationError,
    error_from_response,
    parse_retry_after,
)

__all__ = ["HttpClient", "HttpOption", "RetryPolicy", "client_for", "redact_text", "redact_url"]

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

_shared_lock = threading.Lock()
_shared: httpx.Client | None = None
_by_transport: weakref.WeakKeyDictionary[httpx.BaseTransport, httpx.Client] = (
    weakref.WeakKeyDictionary()
)
_by_options: dict[str, httpx.Client] = {}


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
    atexit.register(client.close)
    return client


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
    """Replace every occurrence of each (non-trivial) secret in ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, REDACTED)
    return text


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
        _install_log_filter()
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"HttpClient({self.provider!r}, api={self.api!r}, base_url={self.base_url!r})"

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
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            if self._client.is_closed and not isinstance(self._http, httpx.Client):
                # A pooled client closed by its atexit handler: later atexit cleanups
                # (the orchestrator's terminates) still need one.
                self._client = client_for(self._http)
            try:
                response = self._client.request(
                    method, _parsed(url), json=json, content=content, params=clean_params,
                    headers=merged, timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
                )
            except httpx.TransportError as exc:
                self._emit(method, url, None, started, attempt, type(exc).__name__)
                if attempt < policy.attempts:
                    self._sleep(policy.delay(attempt, None))
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

