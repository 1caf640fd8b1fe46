"""A per-process gate that spaces Lambda launches: one per interval per account.

Lambda allows one ``/instance-operations/launch`` per 12 s per API key (the
spec's description). The gate hands out launch slots in order; a caller waits
only for its own slot, outside any lock, so other threads' get/list/terminate
calls never wait on it. It is keyed by a hash of (API base URL, key): the key
itself is never kept.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

__all__ = ["LAUNCH_GATE", "LaunchGate", "account_of"]


def account_of(base_url: str, api_key: str) -> str:
    """The gate's key for one account on one API (a hash, not the key)."""
    return hashlib.sha256(f"{base_url}\0{api_key}".encode()).hexdigest()[:32]


class LaunchGate:
    """Launch slots per account: ``reserve`` says how long to wait for the next one.

    ``clock`` is injectable (monotonic seconds) so tests need not sleep.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def reserve(self, account: str, interval: float) -> float:
        """Take the account's next launch slot; return the seconds to wait for it (>= 0).

        Slots are ``interval`` apart and handed out in call order, so concurrent
        launches queue instead of all waking at once.
        """
        with self._lock:
            now = self._clock()
            slot = max(now, self._next.get(account, now))
            self._next[account] = slot + max(0.0, interval)
            if len(self._next) > 1024:  # forget accounts whose slots have long passed
                self._next = {k: v for k, v in self._next.items() if v > now}
            return slot - now

    def defer(self, account: str, seconds: float) -> None:
        """Push the account's next slot to at least ``seconds`` from now (after a 429)."""
        with self._lock:
            until = self._clock() + max(0.0, seconds)
            self._next[account] = max(self._next.get(account, until), until)


LAUNCH_GATE = LaunchGate()
"""The process-wide gate every ``LambdaLabs`` instance shares by default."""
