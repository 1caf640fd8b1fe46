"""The Fly app logs HTTP API: one page of log lines, and the pure wire translation.

``GET {base}/api/v1/apps/{app}/logs?next_token=&instance=&region=`` (base
``https://api.fly.io``; with a sandbox active, ``S/fly/api``) answers JSON:API::

    {"data": [{"id": "...", "type": "logs",
               "attributes": {"timestamp", "message", "level", "instance", "region",
                              "meta": {...}}}],
     "meta": {"next_token": "<nanosecond cursor>"}}

This is the endpoint flyctl polls (providers.md §2.1; undocumented for external
use). ``_entry_from_wire`` / ``page_from_wire`` are pure; ``LogsClient.fetch``
sends the request through the one HTTP seam with the flyctl-style
``Authorization`` header, and on a 401 invalidates the token source, fetches a
fresh token and retries **once**.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha1
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel
from pydantic_core import from_json

from .. import telemetry
from .._http import HttpClient, HttpOption, RetryPolicy, decode
from ..config import resolve_base_url
from ..errors import AtlasError, NotFound, Unauthorized, UnknownError, ValidationError
from ..models import LogEntry
from .auth_header import authorization
from .tokens import FixedToken, TokenSource, default_chain

__all__ = [
    "DEFAULT_BASE_URL",
    "LogPage",
    "LogsClient",
    "fetch_logs",
    "page_from_bytes",
    "page_from_wire",
]

DEFAULT_BASE_URL = "https://api.fly.io"

@dataclass(frozen=True, slots=True)
class LogPage:
    """One answer of the logs API: its entries and the cursor for the next poll.

    ``next_token`` is ``""`` when the server sent none (keep the previous one).
    ``ids`` are the entries' ids, in order (what streams deduplicate on).
    """

    entries: tuple[LogEntry, ...]
    next_token: str
    ids: tuple[str, ...] = ()


# The hot path of log tailing builds the frozen model without re-validating what the
# wire translation has already checked: model_construct costs ~3x more per line, and a
# tail parses tens of thousands of lines (bench/fly_logs_dispatch.py). A test checks the
# result equals, reprs, dumps and copies like LogEntry(...) built the validated way.
_new = object.__new__
_set_dict = object.__setattr__
_set_fields = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
# Shared by every fast-built entry: pydantic only reads it, and model_copy copies it first.
_FIELDS_SET = set(LogEntry.model_fields)


def _new_entry(timestamp: datetime, message: str, level: str, region: str | None,
               instance: str | None, app: str, entry_id: str, raw: dict[str, Any]) -> LogEntry:
    entry: LogEntry = _new(LogEntry)
    _set_dict(entry, "__dict__", {
        "timestamp": timestamp, "message": message, "level": level, "region": region,
        "instance": instance, "app": app, "id": entry_id, "raw": raw,
    })
    _set_fields(entry, _FIELDS_SET)
    _set_extra(entry, None)
    _set_private(entry, None)
    return entry


def _timestamp(value: Any, fallback: datetime) -> datetime:
    if type(value) is str:
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            return fallback
        return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    if type(value) is int:  # nanoseconds since the epoch
        return datetime.fromtimestamp(value / 1e9, UTC)
    return fallback


def _text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    return str(value)


def _entry_from_wire(item: Any, app: str, received: datetime) -> LogEntry | None:
    """One JSON:API ``data`` item as a ``LogEntry`` (``None`` if it is not a log item).

    A line is never dropped for a bad field: an unparseable timestamp becomes
    ``received`` (the time the page arrived), a missing id is derived from the
    line's content, and ``raw`` keeps the attributes as sent.
    """
    if type(item) is not dict:
        return None
    attrs = item.get("attributes")
    if type(attrs) is not dict:
        return None
    meta = attrs.get("meta")
    meta = meta if type(meta) is dict else {}
    message = attrs.get("message")
    message = message if type(message) is str else ("" if message is None else str(message))
    level = attrs.get("level")
    region = attrs.get("region") or meta.get("region")
    instance = attrs.get("instance") or meta.get("instance")
    timestamp = attrs.get("timestamp")
    entry_id = item.get("id")
    if type(entry_id) is not str or not entry_id:
        # Content-derived, so the same line seen twice still dedupes.
        entry_id = "h" + sha1(
            f"{timestamp}|{instance}|{region}|{message}".encode(), usedforsecurity=False
        ).hexdigest()[:24]
    return _new_entry(
        _timestamp(timestamp, received), message,
        level if type(level) is str and level else "info",
        _text(region), _text(instance), app, entry_id, attrs,
    )


class _Irregular(Exception):
    """An item the fast path of ``page_from_wire`` leaves to ``_entry_from_wire``."""


def page_from_wire(body: Any, app: str) -> LogPage:
    """A decoded logs response as a ``LogPage`` (``_entry_from_wire`` for each item).

    Raises:
        UnknownError: the body is not the JSON:API document the endpoint returns.
    """
    if type(body) is not dict or type(body.get("data")) is not list:
        raise UnknownError(
            f"unexpected answer from the Fly logs API for app {app!r}: want "
            f"{{'data': [...], 'meta': {{'next_token': ...}}}}, got {type(body).__name__}",
            provider="fly",
        )
    received = datetime.now(UTC)
    entries: list[LogEntry] = []
    ids: list[str] = []
    add_entry, add_id = entries.append, ids.append
    # Locals, not globals, in the per-line loop (measurably faster on CPython).
    parse_ts, new, cls, fields = datetime.fromisoformat, _new, LogEntry, _FIELDS_SET
    set_dict, set_fields, set_extra, set_private = _set_dict, _set_fields, _set_extra, _set_private
    for item in body["data"]:
        # Inlined fast path for a well-formed item (every field present with its type);
        # anything else goes through _entry_from_wire, which has the fallbacks.
        try:
            attrs = item["attributes"]
            entry_id = item["id"]
            message = attrs["message"]
            level = attrs["level"]
            region = attrs["region"]
            instance = attrs["instance"]
            timestamp = parse_ts(attrs["timestamp"])
            # (attrs is a dict: decoded JSON of any other type raised TypeError above.)
            if not (type(entry_id) is type(message) is type(level) is type(region)
                    is type(instance) is str and entry_id and level and region and instance
                    and timestamp.tzinfo is not None):
                raise _Irregular
        except (KeyError, TypeError, ValueError, _Irregular):
            entry = _entry_from_wire(item, app, received)
            if entry is None:
                continue
            add_entry(entry)
            add_id(entry.id)
            continue
        entry = new(cls)
        set_dict(entry, "__dict__", {
            "timestamp": timestamp, "message": message, "level": level, "region": region,
            "instance": instance, "app": app, "id": entry_id, "raw": attrs,
        })
        set_fields(entry, fields)
        set_extra(entry, None)
        set_private(entry, None)
        add_entry(entry)
        add_id(entry_id)
    meta = body.get("meta")
    token = meta.get("next_token") if type(meta) is dict else None
    return LogPage(tuple(entries), str(token) if token not in (None, "") else "", tuple(ids))


def page_from_bytes(content: bytes, app: str) -> LogPage:
    """A raw logs response body as a ``LogPage`` (what ``LogsClient.fetch`` does with it).

    Parsed with pydantic-core's JSON parser, which is faster than ``json.loads`` on these
    pages (bench/fly_logs_dispatch.py), then translated by ``page_from_wire``.
    """
    try:
        body = from_json(content)
    except ValueError:
        raise UnknownError(f"the Fly logs API answered something that is not JSON for app "
                           f"{app!r}", provider="fly") from None
    return page_from_wire(body, app)


def check_app(app: Any) -> str:
    """A Fly app name, or a ``ValidationError`` saying what is wrong."""
    if not isinstance(app, str) or not app.strip() or any(c.isspace() for c in app.strip()):
        raise ValidationError(f"app must be a Fly app name like 'my-app', not {app!r}")
    return app.strip()


class LogsClient:
    """Fetches pages of one Fly app's logs.

    Args:
        base_url: the API base (default: the sandbox's ``S/fly/api`` when one is
            active, else the config file's ``providers.fly.base_url.api``, else
            ``https://api.fly.io``).
        http: the ``http=`` option (client, transport or options dict).
        token: use exactly this token (no chain, no re-resolution).
        tokens: where tokens come from (default: the process-wide ``tokens`` chain,
            or the sandbox key when talking to the active sandbox).
        retry: the HTTP retry policy (a poller passes ``RetryPolicy(attempts=1)`` and
            counts errors itself).
    """

    def __init__(
        self,
        *,
        base_url: str | Mapping[str, str] | None = None,
        http: HttpOption = None,
        token: str | None = None,
        tokens: TokenSource | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        from .. import sandbox

        self.base_url = resolve_base_url("fly", "api", DEFAULT_BASE_URL, base_url)
        if token is not None:
            self.tokens: TokenSource = FixedToken(token)
        elif tokens is not None:
            self.tokens = tokens
        elif base_url is None and sandbox.active_url() and \
                self.base_url == f"{sandbox.active_url()}/fly/api":
            self.tokens = FixedToken(sandbox.sandbox_key("fly"), source="sandbox")
        else:
            self.tokens = default_chain()
        self._http = http
        self._retry = retry
        self._clients: dict[str, HttpClient] = {}

    def __repr__(self) -> str:
        return f"LogsClient(base_url={self.base_url!r}, tokens={self.tokens!r})"

    def _client(self, token: str) -> HttpClient:
        client = self._clients.get(token)
        if client is None:
            self._clients.clear()  # one live token at a time; forget rejected ones
            client = HttpClient(
                provider="fly", api="api", base_url=self.base_url,
                headers={"Authorization": authorization(token), "Accept": "application/json"},
                secrets=(token,), http=self._http, retry=self._retry,
            )
            self._clients[token] = client
        return client

    def fetch(
        self,
        app: str,
        *,
        next_token: str | None = None,
        instance: str | None = None,
        region: str | None = None,
        timeout: float | None = None,
    ) -> LogPage:
        """One page of ``app``'s logs after ``next_token`` (``None``: the most recent lines).

        Raises:
            Unauthorized: the token was refused twice (once after re-resolving it).
            NotFound: no such app.
            AtlasError: any other failure (``TransportError``, ``ProviderError``...).
        """
        app = check_app(app)
        path = f"/api/v1/apps/{quote(app, safe='')}/logs"
        params = {"next_token": next_token or None, "instance": instance, "region": region}
        token = self.tokens.get(app)
        try:
            content = self._get(token, path, params, timeout)
        except Unauthorized as refused:
            # The token may be stale or revoked: drop every cached layer, resolve a fresh
            # one and try exactly once more (a second 401 is the caller's to report).
            self.tokens.invalidate(app, rejected=token)
            try:
                fresh = self.tokens.get(app)
            except AtlasError:
                telemetry.emit("fly.logs.reauth", {"app": app, "fresh_token": False})
                raise refused from None  # the server's 401 says more than "no token left"
            telemetry.emit("fly.logs.reauth", {"app": app, "fresh_token": fresh != token})
            try:
                content = self._get(fresh, path, params, timeout)
            except NotFound as exc:
                raise _app_not_found(app, exc) from None
        except NotFound as exc:
            raise _app_not_found(app, exc) from None
        return page_from_bytes(content, app)

    def _get(self, token: str, path: str, params: Mapping[str, Any],
             timeout: float | None) -> bytes:
        """The raw body of a 2xx answer (parsed by ``page_from_bytes``), else the error."""
        client = self._client(token)
        response = client.send("GET", path, params=params, timeout=timeout)
        if not response.is_success:
            raise client.error(response.status_code, decode(response), response.headers)
        return response.content


def _app_not_found(app: str, exc: NotFound) -> NotFound:
    return NotFound(f"Fly app {app!r} not found (its logs answered 404); check the name with "
                    "`fly apps list`", provider="fly", status=404, raw=exc.raw)


def fetch_logs(
    app: str,
    *,
    next_token: str | None = None,
    instance: str | None = None,
    region: str | None = None,
    token: str | None = None,
    base_url: str | Mapping[str, str] | None = None,
    http: HttpOption = None,
) -> LogPage:
    """One page of ``app``'s logs (see ``LogsClient``); follow ``page.next_token`` for more."""
    started = time.perf_counter()
    client = LogsClient(base_url=base_url, http=http, token=token)
    page = client.fetch(app, next_token=next_token, instance=instance, region=region)
    telemetry.emit("fly.logs.fetch", {"app": app, "count": len(page.entries),
                                      "duration_ms": (time.perf_counter() - started) * 1000.0})
    return page
