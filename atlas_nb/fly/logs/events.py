"""What a Fly logs subscriber receives: ``LogBatch`` events, then maybe one ``LogsStopped``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from ...errors import AtlasError
from ...models import LogEntry

__all__ = ["LogBatch", "LogCallback", "LogEvent", "LogsStopped", "StopReason"]

StopReason = Literal["unauthorized", "not_found", "errors", "closed"]
"""Why a stream ended on its own: a second 401, a 404, too many failures, or ``close()``."""


@dataclass(frozen=True, slots=True)
class LogBatch:
    """New log entries for one app, oldest first (``backfill``: replayed from the buffer)."""

    app: str
    entries: tuple[LogEntry, ...]
    backfill: bool = False

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True, slots=True)
class LogsStopped:
    """The stream ended on its own; ``error`` says why (``None`` when ``closed``)."""

    app: str
    reason: StopReason
    error: AtlasError | None = None

    @property
    def message(self) -> str:
        """One line for a person."""
        return f"logs of {self.app!r} stopped ({self.reason})" + (
            f": {self.error}" if self.error else "")


LogEvent = LogBatch | LogsStopped
LogCallback = Callable[[LogEvent], Any]
