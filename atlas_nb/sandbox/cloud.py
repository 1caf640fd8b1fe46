"""What every emulated cloud shares: the Cloud/Api shapes, the clock, auth and JSON.

A cloud is one package with a class that takes a ``CloudContext`` and offers its
APIs as ``Api`` objects; the sandbox mounts each at ``S/{cloud.name}/{api.name}``
(``registry.py`` finds the classes through the provider registry). Everything
time-dependent reads ``ctx.clock`` so tests can inject a ``ManualClock`` and step
through lifecycles without sleeping.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from .capacity import Capacity

__all__ = [
    "ASGIApp",
    "Api",
    "BadBody",
    "Clock",
    "Cloud",
    "CloudContext",
    "DelayKnobs",
    "ErrorRenderer",
    "ManualClock",
    "SystemClock",
    "bearer_token",
    "iso",
    "json_response",
    "read_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ErrorRenderer = Callable[[int, str, Mapping[str, str] | None], Response]
"""Renders an error the way one API does: ``(status, detail, extra headers) -> Response``."""


class Clock(Protocol):
    """Where the sandbox reads the time (epoch seconds)."""

    def time(self) -> float:
        """Now, in seconds since the epoch."""
        ...


class SystemClock:
    """The real wall clock."""

    def time(self) -> float:
        """``time.time()``."""
        return time.time()


class ManualClock:
    """A clock that moves only when told to, for deterministic lifecycle tests."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def time(self) -> float:
        """The current manual time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new time."""
        with self._lock:
            self._now += seconds
            return self._now


@dataclass
class CloudContext:
    """What the sandbox hands every cloud it builds.

    Attributes:
        clock: the time source for lifecycles and timestamps.
        seed: seeds every random choice (ids, IPs, ports) so runs are reproducible.
        provision_delay_s / start_delay_s: default lifecycle delays for compute.
        options: this cloud's own options (``Sandbox(options={"runpod": {...}})``).
        closing: set when the sandbox shuts down; long waits watch it.
        report: records a contract/policy violation (a readable string).
        capacity: the sandbox's GPU stock overrides (``capacity.py``); a cloud asks
            ``capacity.allows(...)`` where it decides stock and ``take(...)`` on a create.
    """

    clock: Clock = field(default_factory=SystemClock)
    seed: int = 0
    provision_delay_s: float = 0.2
    start_delay_s: float = 0.2
    options: Mapping[str, Any] = field(default_factory=dict)
    closing: threading.Event = field(default_factory=threading.Event)
    report: Callable[[str], None] = field(default=lambda _message: None)
    capacity: Capacity = field(default_factory=Capacity)

    def rng(self, stream: str) -> random.Random:
        """A private, seeded random stream (one per purpose keeps sequences stable)."""
        return random.Random(f"{self.seed}:{stream}")


@dataclass(frozen=True)
class Api:
    """One API of a cloud, served at ``S/{cloud}/{name}``.

    Attributes:
        name: the URL segment (``"rest"``, ``"graphql"``, ``"serverless"``...).
        app: the ASGI app; it sees paths relative to the mount (``/v2/pods``).
        error: renders injected faults (500, 503, 429...) in this API's error shape.
        spec: the vendored OpenAPI document (relative to ``sandbox/specs``) that
            requests and responses are validated against, or ``None``.
        errata: ``(JSON pointer, replacement)`` pairs applied to a copy of ``spec``
            before validation, where the published spec contradicts the wire
            (each one documented, with its source, by the cloud that declares it).
    """

    name: str
    app: ASGIApp
    error: ErrorRenderer
    spec: str | None = None
    errata: tuple[tuple[str, Any], ...] = ()


class Cloud(Protocol):
    """An emulated cloud: a name, its APIs and its state. Built as ``cls(ctx)``."""

    name: str

    def apis(self) -> Sequence[Api]:
        """The APIs to mount under ``S/{name}/``."""
        ...

    def close(self) -> None:
        """Stop background work (worker threads) and wake any waiters."""
        ...


class BadBody(Exception):
    """The request body is not the JSON the route needs."""


def iso(ts: float) -> str:
    """RFC 3339 UTC with second precision, as the specs' examples write it."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_response(
    body: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    media_type: str = "application/json",
) -> Response:
    """A compact JSON response (``body=None`` with 204 gives an empty body)."""
    content = b"" if status == 204 else json.dumps(body, separators=(",", ":")).encode()
    return Response(content, status_code=status, headers=dict(headers or {}), media_type=media_type)


async def read_json(request: Request) -> Any:
    """The parsed JSON body; raises ``BadBody`` when it is empty or not JSON."""
    raw = await request.body()
    if not raw.strip():
        raise BadBody("request body is empty; send a JSON document")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadBody(f"request body is not valid JSON ({exc.msg} at {exc.pos})") from None
    except UnicodeDecodeError:
        raise BadBody("request body is not UTF-8 JSON") from None


def bearer_token(request: Request, *, bare_ok: bool = False) -> str | None:
    """The token from ``Authorization: Bearer <token>`` (or a bare key when ``bare_ok``)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if bare_ok and header and not token:
        return header.strip()
    return None


class DelayKnobs:
    """``provision_delay_s`` and ``start_delay_s`` on a cloud, kept by its ``store`` (they
    apply to resources that boot after a change)."""

    store: Any

    @property
    def provision_delay_s(self) -> float:
        """Seconds a new resource stays provisioning (RunPod PROVISIONING, Vast null status)."""
        return float(self.store.provision_delay_s)

    @provision_delay_s.setter
    def provision_delay_s(self, value: float) -> None:
        self.store.provision_delay_s = float(value)

    @property
    def start_delay_s(self) -> float:
        """Seconds a booting resource stays starting (RunPod STARTING, Vast ``loading``)."""
        return float(self.store.start_delay_s)

    @start_delay_s.setter
    def start_delay_s(self, value: float) -> None:
        self.store.start_delay_s = float(value)
