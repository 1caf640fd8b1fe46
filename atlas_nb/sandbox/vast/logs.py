"""Vast.ai instance logs: asked for on the API, fetched from a bucket URL (``S/vast/logs``).

Vast does not answer logs inline. ``PUT /api/v0/instances/request_logs/{id}/``
(spec operation ``showLogs``, body ``{"tail": "1000", "filter": "...",
"daemon_logs": "true"}``, all optional) answers ``{"success": true, "result_url":
...}``, and the client then GETs ``result_url`` (an S3 object, no API key) until it
answers 200: vastai 1.9.1 ``vastai/api/instances.py`` ``logs`` and
``_poll_result_url``. The sandbox stands in for the bucket with its own API
``logs`` (no spec: S3 is not part of Vast's document), one object per request.

The lines are made up from the instance's life so far (the sandbox runs no
containers): container logs tell what the container did, daemon logs what Vast's
host daemon did. Env values never appear in them.
"""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .instances import InstanceRecord

__all__ = ["LogBucket", "log_lines"]

_MAX_OBJECTS = 256


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log_lines(rec: InstanceRecord, status: str | None, *, daemon: bool) -> list[str]:
    """What the instance (``daemon=False``) or its host daemon logged so far."""
    if daemon:
        lines = [f"{_stamp(rec.created_at)} daemon: contract {rec.id} created "
                 f"(machine {rec.offer['machine_id']})",
                 f"{_stamp(rec.boot_at)} daemon: pulling {rec.image}"]
        if status is not None and status != "loading":
            lines.append(f"{_stamp(rec.running_since())} daemon: container state {status}")
        return lines
    if status in (None, "loading"):
        return []  # nothing has run yet
    lines = [f"{_stamp(rec.running_since())} starting {rec.image} ({rec.runtype})",
             f"{_stamp(rec.running_since())} container ready"]
    if rec.status_msg:
        lines.append(f"{_stamp(rec.running_since())} {rec.status_msg}")
    return lines


class LogBucket:
    """The uploaded log objects, by key (thread-safe; the oldest are dropped past a cap)."""

    def __init__(self) -> None:
        self._objects: dict[str, str] = {}
        self._lock = threading.Lock()

    def put(self, text: str) -> str:
        """Store ``text``; its object key (``<random>.log``)."""
        key = f"{secrets.token_hex(16)}.log"
        with self._lock:
            self._objects[key] = text
            while len(self._objects) > _MAX_OBJECTS:
                self._objects.pop(next(iter(self._objects)))
        return key

    def app(self) -> Starlette:
        """``GET /{key}``: the object as text, 404 otherwise (S3 answers XML; the client
        reads only the status until it is 200)."""

        async def get(request: Request) -> Response:
            with self._lock:
                text = self._objects.get(request.path_params["key"])
            if text is None:
                return PlainTextResponse("NoSuchKey", status_code=404)
            return PlainTextResponse(text)

        return Starlette(routes=[Route("/{key}", get, methods=["GET"])])
