"""Lifecycle events of tracked computes, and the subscriptions that receive them.

Kinds (each emitted once per transition, in order, per compute):

* ``status`` with ``status="running"`` when tracking starts, ``"terminated"`` at the end;
* ``heartbeat`` on each tick while it runs (``idle_for_s``, ``accrued_cost``);
* ``terminating`` with the ``reason`` (``idle``, ``max_lifetime``, ``budget``,
  ``stop_tracked``, ``shutdown``, ``kernel_shutdown``, ``kernel_restart``, ``atexit``,
  ``sigterm``, ``external``): exactly once, even when a terminate is retried;
* ``terminate_failed`` with ``error`` once the retries are spent (the compute stays in
  the ledger and is retried later; ``status(terminated)`` follows when a retry works).

Callbacks run in the thread that caused the transition, outside every orchestrator
lock, so they may call the orchestrator. A callback that raises is logged and
isolated: the others still run and the orchestrator carries on.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["ALL", "Callback", "Event", "EventBus", "EventKind", "Outbox", "Subscription"]

EventKind = Literal["status", "heartbeat", "terminating", "terminate_failed"]
ALL = "*"
_log = logging.getLogger("atlas_nb.orchestrator")


@dataclass(frozen=True)
class Event:
    """One transition of one tracked compute. Fields not relevant to ``kind`` are ``None``."""

    kind: EventKind
    compute_id: str
    provider: str
    name: str
    at: float
    status: str | None = None
    reason: str | None = None
    error: str | None = None
    idle_for_s: float | None = None
    accrued_cost: float | None = None

    @property
    def value(self) -> str | float | None:
        """The event's payload: the status, the reason, the error or the idle time."""
        return {"status": self.status, "terminating": self.reason,
                "terminate_failed": self.error, "heartbeat": self.idle_for_s}[self.kind]

    def __str__(self) -> str:
        return f"{self.compute_id}: {self.kind}({self.value})"


Callback = Callable[[Event], None]


class Subscription:
    """What ``subscribe`` returns: call it (or ``.unsubscribe()``, or leave a ``with``) to stop."""

    def __init__(self, bus: EventBus, key: str, token: int) -> None:
        self._bus, self.key, self._token = bus, key, token

    def unsubscribe(self) -> bool:
        """Stop receiving events; ``True`` the first time."""
        return self._bus._remove(self.key, self._token)

    __call__ = unsubscribe

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unsubscribe()

    def __repr__(self) -> str:
        return f"Subscription({self.key!r})"


class EventBus:
    """Callbacks keyed by compute id (or ``"*"`` for every compute). Thread safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, dict[int, Callback]] = {}
        self._tokens = itertools.count(1)

    def subscribe(self, key: str, callback: Callback) -> Subscription:
        """Call ``callback(event)`` for events of compute ``key`` (``"*"``: all)."""
        if not callable(callback):
            from ..errors import ValidationError

            raise ValidationError(f"subscribe needs a callable, got {type(callback).__name__}")
        with self._lock:
            token = next(self._tokens)
            self._subs.setdefault(key, {})[token] = callback
        return Subscription(self, key, token)

    def _remove(self, key: str, token: int) -> bool:
        with self._lock:
            subs = self._subs.get(key)
            if not subs or token not in subs:
                return False
            del subs[token]
            if not subs:
                del self._subs[key]
            return True

    def publish(self, event: Event) -> None:
        """Deliver ``event``; a raising callback is logged and skipped."""
        with self._lock:
            targets = [*self._subs.get(event.compute_id, {}).values(),
                       *self._subs.get(ALL, {}).values()]
        for callback in targets:
            try:
                callback(event)
            except Exception:
                _log.exception("orchestrator event callback failed for %s", event)


class Outbox:
    """Events queued in transition order (``put`` is called under the state lock) and
    published by ``drain`` outside it, one drainer at a time, in order. A callback that
    causes more events in the same thread has them published by the drain already
    running, after the current batch, instead of recursing."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._queue: deque[Event] = deque()
        self._lock = threading.Lock()
        self._dispatching = threading.Lock()
        self._local = threading.local()

    def put(self, events: Iterable[Event]) -> None:
        with self._lock:
            self._queue.extend(events)

    def drain(self) -> None:
        if getattr(self._local, "draining", False):
            return
        with self._dispatching:
            self._local.draining = True
            try:
                while True:
                    with self._lock:
                        if not self._queue:
                            return
                        batch = list(self._queue)
                        self._queue.clear()
                    for event in batch:
                        self._bus.publish(event)
            finally:
                self._local.draining = False
