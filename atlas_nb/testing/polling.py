"""Waiting on a cloud with a deadline: polls (fast first, then every ``poll_s``) and streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["drain", "wait_for"]

T = TypeVar("T")

_FIRST_DELAY_S = 0.01
"""An instant provider (the mock) answers on the first or second poll; don't make it wait."""


def wait_for(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    what: str,
    timeout_s: float,
    poll_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``probe`` until ``done(value)``; return that value.

    Pauses double from 10 ms up to ``poll_s``. Raises ``AssertionError`` naming
    ``what`` and the last value seen once ``timeout_s`` has passed.
    """
    deadline = time.monotonic() + timeout_s
    delay = min(_FIRST_DELAY_S, poll_s)
    while True:
        value = probe()
        if done(value):
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"{what}: not reached after {timeout_s:g}s (last seen: {value!r}); "
                "raise ConformanceOptions.ready_timeout_s if the provider is just slow"
            )
        sleep(min(delay, remaining))
        delay = min(delay * 2, poll_s)


def drain(chunks: Iterator[Any], timeout_s: float) -> list[Any]:
    """Collect a stream in a thread, so a stream that never ends fails instead of hanging."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            out.extend(chunks)
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    worker = threading.Thread(target=consume, name="atlas-conformance-stream", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise AssertionError(f"stream_job did not end within {timeout_s:g}s "
                             f"({len(out)} chunks so far)")
    if errors:
        raise errors[0]
    return out
