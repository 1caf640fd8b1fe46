"""The Fly app logs API's wire format: one page of log lines, translated by pure functions.

``GET {base}/api/v1/apps/{app}/logs?next_token=&instance=&region=`` answers JSON:API::

    {"data": [{"id": "...", "type": "logs",
               "attributes": {"timestamp", "message", "level", "instance", "region",
                              "meta": {...}}}],
     "meta": {"next_token": "<nanosecond cursor>"}}

This is the endpoint flyctl polls (providers.md §2.1; undocumented for external
use). ``_entry_from_wire`` / ``page_from_wire`` / ``page_from_bytes`` are pure; the
client that sends the request is ``client.LogsClient``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha1
from typing import Any

from pydantic import BaseModel
from pydantic_core import from_json

from ...errors import UnknownError, ValidationError
from ...models import LogEntry

__all__ = ["LogPage", "check_app", "page_from_bytes", "page_from_wire"]


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


def _key(mapping: dict[Any, Any], key: str) -> Any:
    """``mapping[key]``, else the value of a key equal to it ignoring case, else ``None``.

    fly-go decodes a page into untagged Go fields (``resource_logs.go`` ``getLogsResponse``,
    ``types.go`` ``LogEntry``) and Go's encoding/json matches keys case-insensitively,
    preferring an exact match: the server's casing is therefore not pinned down
    (providers.md §2.1, casing **unverified**), so every key is read the same way here.
    """
    if key in mapping:
        return mapping[key]
    for name, value in mapping.items():
        if type(name) is str and name.lower() == key:
            return value
    return None


def _entry_from_wire(item: Any, app: str, received: datetime) -> LogEntry | None:
    """One JSON:API ``data`` item as a ``LogEntry`` (``None`` if it is not a log item).

    A line is never dropped for a bad field: an unparseable timestamp becomes
    ``received`` (the time the page arrived), a missing id is derived from the
    line's content, and ``raw`` keeps the attributes as sent.
    """
    if type(item) is not dict:
        return None
    attrs = _key(item, "attributes")
    if type(attrs) is not dict:
        return None
    meta = _key(attrs, "meta")
    meta = meta if type(meta) is dict else {}
    message = _key(attrs, "message")
    message = message if type(message) is str else ("" if message is None else str(message))
    level = _key(attrs, "level")
    region = _key(attrs, "region") or _key(meta, "region")
    instance = _key(attrs, "instance") or _key(meta, "instance")
    timestamp = _key(attrs, "timestamp")
    entry_id = _key(item, "id")
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
    data = _key(body, "data") if type(body) is dict else None
    if type(data) is not list:
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
    for item in data:
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
    meta = _key(body, "meta")
    token = _key(meta, "next_token") if type(meta) is dict else None
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
