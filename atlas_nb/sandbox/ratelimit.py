"""Fixed-window request quotas and the IETF draft ``RateLimit`` headers.

RunPod REST v2 sends ``RateLimit`` and ``RateLimit-Policy`` on every authenticated
response, and 429 with ``Retry-After`` (integer seconds) past a quota. The sandbox
counts real requests per key against generous default windows, so the headers
tell the truth; enforcement (the 429) is off unless asked for, so tests and
benchmarks never trip over it by accident.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from .cloud import Clock

__all__ = ["RateLimiter", "Window"]


@dataclass(frozen=True)
class Window:
    """One quota window: ``quota`` requests per ``seconds``."""

    name: str
    quota: int
    seconds: int


DEFAULT_WINDOWS = (
    Window("minute", 1000, 60),
    Window("hour", 30000, 3600),
    Window("day", 500000, 86400),
)


class RateLimiter:
    """Per-key request counters over fixed windows.

    ``hit(key)`` counts one request and returns ``(headers, retry_after)``;
    ``retry_after`` is ``None`` unless ``enforce`` is on and a window is spent.
    """

    def __init__(
        self, clock: Clock, windows: tuple[Window, ...] = DEFAULT_WINDOWS, enforce: bool = False
    ) -> None:
        self.clock = clock
        self.windows = windows
        self.enforce = enforce
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], int] = {}

    def policy_header(self) -> str:
        """The static ``RateLimit-Policy`` value."""
        return ", ".join(f'"{w.name}";q={w.quota};w={w.seconds}' for w in self.windows)

    def hit(self, key: str) -> tuple[list[tuple[str, str]], int | None]:
        """Count a request for ``key``; the headers to send, and Retry-After if limited."""
        now = self.clock.time()
        parts: list[str] = []
        retry_after: int | None = None
        with self._lock:
            for w in self.windows:
                bucket = int(now // w.seconds)
                slot = (key, w.name, bucket)
                used = self._counts.get(slot, 0)
                reset = max(0, math.ceil((bucket + 1) * w.seconds - now))
                if self.enforce and used >= w.quota:
                    retry_after = max(retry_after or 0, reset)
                else:
                    used += 1
                    self._counts[slot] = used
                parts.append(f'"{w.name}";r={max(0, w.quota - used)};t={reset}')
            # Forget spent buckets so a long-running sandbox does not grow without bound.
            if len(self._counts) > 10_000:
                current = {w.name: int(now // w.seconds) for w in self.windows}
                self._counts = {k: v for k, v in self._counts.items() if current[k[1]] == k[2]}
        headers = [("RateLimit", ", ".join(parts)), ("RateLimit-Policy", self.policy_header())]
        if retry_after is not None:
            headers.append(("Retry-After", str(retry_after)))
        return headers, retry_after
