"""Telemetry: attach handlers to request and lifecycle events.

Events are plain strings; a handler receives ``(event, data)``. Every HTTP
request emits ``"http.request"`` with provider, api, method, the *redacted* url,
status (``None`` on a transport failure), duration_ms, attempt and error.
Lifecycle events (``"compute.spawn"``, ``"compute.terminate"``, ``"job.run"``, ...)
carry ids and providers, never keys or tokens.

>>> import atlas_nb.telemetry as t
>>> t.attach("printer", "http.request", lambda ev, data: print(data["url"]))
>>> t.detach("printer")
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ._fork_safe_lock import ForkSafeLock

__all__ = ["Handler", "attach", "detach", "emit", "enabled", "handlers"]

Handler = Callable[[str, Mapping[str, Any]], None]
_log = logging.getLogger("atlas_nb.telemetry")
_lock = ForkSafeLock()
_handlers: dict[str, tuple[str, Handler]] = {}


def attach(handler_id: str, event: str, fn: Handler) -> None:
    """Call ``fn(event, data)`` on each ``event`` (``"*"``: all); replaces a same-id handler."""
    with _lock:
        _handlers[handler_id] = (event, fn)


def detach(handler_id: str) -> bool:
    """Remove a handler; ``True`` if it was attached."""
    with _lock:
        return _handlers.pop(handler_id, None) is not None


def handlers() -> dict[str, str]:
    """The attached handler ids and the event each listens to."""
    with _lock:
        return {hid: ev for hid, (ev, _) in _handlers.items()}


def enabled(event: str) -> bool:
    """Whether any handler listens to ``event``: callers skip building an unwanted payload."""
    if not _handlers:  # the common case, checked without the lock (a dict read is atomic)
        return False
    with _lock:
        return any(ev in (event, "*") for ev, _ in _handlers.values())


def emit(event: str, data: Mapping[str, Any]) -> None:
    """Send an event to every matching handler. A raising handler is logged, never propagated."""
    if not _handlers:
        return
    with _lock:
        targets = [fn for ev, fn in _handlers.values() if ev in (event, "*")]
    for fn in targets:
        try:
            fn(event, data)
        except Exception:
            _log.exception("telemetry handler failed for %s", event)
