"""Terminating one compute upstream: retries with exponential backoff, never raising."""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import facade
from .._http import deadline as http_deadline
from ..errors import AtlasError
from ..providers import Provider

__all__ = ["one_line", "terminate_with_backoff"]


def one_line(exc: BaseException) -> str:
    """An error as one short line (``AtlasError`` messages carry no secrets by contract)."""
    text = str(exc) if isinstance(exc, AtlasError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]


def terminate_with_backoff(
    p: Provider, compute_id: str, *, attempts: int, backoff_s: float,
    sleep: Callable[[float], None], deadline: float | None = None,
) -> tuple[bool, str | None]:
    """``terminate`` up to ``attempts`` times, waiting ``backoff_s * 2**k`` between tries and
    never past ``deadline`` (``time.monotonic``). Returns ``(ok, last error)``.

    It goes through the facade, so ``compute.terminate`` telemetry is emitted as for any
    terminate (idempotent: an already-gone compute counts as terminated). The deadline
    also binds the HTTP layer underneath (``_http.deadline``): its request timeouts, its
    own retries and a server's ``Retry-After`` never run past it.
    """
    err: str | None = None
    for attempt in range(attempts):
        if deadline is not None and time.monotonic() >= deadline:
            err = err or "the shutdown deadline passed before the terminate was sent"
            break
        try:
            with http_deadline(deadline):
                facade.terminate(compute_id, provider=p)
            return True, None
        except Exception as exc:  # anything a third-party provider raises is a failure
            err = one_line(exc)
        wait = backoff_s * 2 ** attempt
        if attempt == attempts - 1 or (deadline is not None
                                       and time.monotonic() + wait >= deadline):
            break
        sleep(wait)
    return False, err
