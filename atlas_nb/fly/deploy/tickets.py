"""Deploy tickets: who follows which deploy, its recent output and its result.

``subscribe_deploy(ticket_id, callback)`` works before, during and after a deploy:
a subscriber that arrives late is first replayed the retained lines (and the
result, when the deploy is over). Callbacks run on the deploy's thread; one that
raises is logged and isolated. Only the last ``MAX_TICKETS`` tickets are kept.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from ...errors import ValidationError

__all__ = [
    "DeployCallback",
    "DeployEvent",
    "DeployLine",
    "DeployResult",
    "DeploySubscription",
    "Ticket",
    "subscribe_deploy",
]

_log = logging.getLogger("atlas_nb.fly")
MAX_TICKETS = 64
DeployStatus = Literal["ok", "failed", "timeout", "cancelled"]


@dataclass(frozen=True, slots=True)
class DeployLine:
    """One whole line of ``fly deploy`` output (``progress``: an in-place ``\\r`` update)."""

    ticket_id: str
    line: str
    number: int
    progress: bool = False


@dataclass(frozen=True)
class DeployResult:
    """How a deploy ended; also the final event every subscriber receives.

    ``status``: ``ok`` (exit 0), ``failed`` (``exit_code`` n), ``timeout``
    (``timeout`` is ``"inactivity"`` or ``"max"``; the process group was killed) or
    ``cancelled``. ``output`` is the retained tail (at most ``max_lines`` lines).
    """

    ticket_id: str
    status: DeployStatus
    exit_code: int | None
    duration_s: float
    output: tuple[str, ...] = ()
    lines_total: int = 0
    lines_dropped: int = 0
    timeout: Literal["inactivity", "max"] | None = None
    command: tuple[str, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        """The deploy succeeded."""
        return self.status == "ok"

    def __str__(self) -> str:
        if self.status == "failed":
            what = f"exit code {self.exit_code}"
        elif self.status == "timeout":
            what = f"timeout ({self.timeout})"
        else:
            what = self.status
        return f"deploy {self.ticket_id}: {what} after {self.duration_s:.1f} s"


DeployEvent = DeployLine | DeployResult
DeployCallback = Callable[[DeployEvent], Any]


class Ticket:
    """One deploy's subscribers, retained lines and result (thread-safe)."""

    def __init__(self, ticket_id: str, max_lines: int = 1000) -> None:
        self.ticket_id = ticket_id
        self.lock = threading.RLock()
        self.subscribers: list[DeployCallback] = []
        self.lines: deque[DeployLine] = deque(maxlen=max_lines)
        self.total = 0
        self.result: DeployResult | None = None
        self.running = False
        self.done = threading.Event()

    def add(self, callback: DeployCallback, *, backfill: bool) -> bool:
        """Subscribe (replaying what was retained); ``False`` if already finished."""
        with self.lock:
            if backfill:
                for line in tuple(self.lines):
                    _send(callback, line)
            if self.result is not None:
                _send(callback, self.result)
                return False
            self.subscribers.append(callback)
            return True

    def remove(self, callback: DeployCallback) -> None:
        with self.lock:
            if callback in self.subscribers:
                self.subscribers.remove(callback)

    def line(self, text: str, progress: bool) -> None:
        with self.lock:
            self.total += 1
            event = DeployLine(self.ticket_id, text, self.total, progress)
            self.lines.append(event)
            for callback in tuple(self.subscribers):
                _send(callback, event)

    def finish(self, result: DeployResult) -> None:
        with self.lock:
            self.result = result
            self.running = False
            subscribers, self.subscribers = self.subscribers, []
            for callback in subscribers:
                _send(callback, result)
        self.done.set()


def _send(callback: DeployCallback, event: DeployEvent) -> None:
    try:
        callback(event)
    except Exception:  # a broken subscriber must not stop the deploy or the others
        _log.exception("a deploy subscriber raised; it stays subscribed")


class DeploySubscription:
    """Handle returned by ``subscribe_deploy``; ``close()`` or ``with`` unsubscribes."""

    def __init__(self, ticket: Ticket, callback: DeployCallback) -> None:
        self._ticket = ticket
        self._callback = callback

    def __repr__(self) -> str:
        return f"DeploySubscription(ticket_id={self._ticket.ticket_id!r})"

    @property
    def result(self) -> DeployResult | None:
        """The deploy's result once it is over."""
        return self._ticket.result

    def wait(self, timeout: float | None = None) -> DeployResult | None:
        """Block until the deploy ends (or ``timeout``); its result or ``None``."""
        self._ticket.done.wait(timeout)
        return self._ticket.result

    def close(self) -> None:
        """Stop receiving events."""
        self._ticket.remove(self._callback)

    def __enter__(self) -> DeploySubscription:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_lock = threading.Lock()
_tickets: OrderedDict[str, Ticket] = OrderedDict()


def check_ticket(ticket_id: object) -> str:
    """A ticket id, or a ``ValidationError``."""
    if not isinstance(ticket_id, str) or not ticket_id.strip() or len(ticket_id) > 200:
        raise ValidationError(f"ticket_id must be a non-empty string (<= 200 chars), "
                              f"not {ticket_id!r}")
    return ticket_id.strip()


def ticket(ticket_id: str, *, max_lines: int = 1000, new_run: bool = False) -> Ticket:
    """The ticket for ``ticket_id`` (created if needed).

    ``new_run``: a deploy is being set up; a finished ticket is replaced by a fresh
    one, and a running one is refused (the caller marks it ``running`` at launch).
    """
    with _lock:
        found = _tickets.get(ticket_id)
        if new_run and found is not None:
            if found.running:
                raise ValidationError(f"deploy ticket {ticket_id!r} is already running; "
                                      "pick another ticket_id or wait for it")
            if found.result is not None:
                found = None
        if found is None:
            found = Ticket(ticket_id, max_lines)
            _tickets[ticket_id] = found
        elif new_run:
            # Adopt a pending ticket (subscribed before the start) with the run's limit.
            found.lines = deque(found.lines, maxlen=max_lines)
        _tickets.move_to_end(ticket_id)
        excess = len(_tickets) - MAX_TICKETS
        if excess > 0:  # forget the oldest idle tickets, never a deploy in progress
            idle = [t for t, v in _tickets.items() if not v.running and t != ticket_id]
            for stale in idle[:excess]:
                del _tickets[stale]
        return found


def subscribe_deploy(ticket_id: str, callback: DeployCallback, *,
                     backfill: bool = True) -> DeploySubscription:
    """Follow deploy ``ticket_id``: ``callback(DeployLine)`` per line, then ``DeployResult``.

    Subscribing before the deploy starts is fine. A late subscriber first gets the
    retained lines (``backfill``), and the result if the deploy is already over.
    """
    if not callable(callback):
        raise ValidationError("callback must be callable: callback(event) -> None")
    found = ticket(check_ticket(ticket_id))
    found.add(callback, backfill=backfill)
    return DeploySubscription(found, callback)
