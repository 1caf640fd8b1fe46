"""Fault injection: latency, error statuses, 429s, dropped connections, lost responses,
late commits.

``sb.faults(route, ...)`` adds a rule and returns it (``rule.clear()`` removes it;
``sb.faults.clear()`` removes all). Each rule draws from its own seeded random
stream, one draw per matching request, so the same seed and the same request
sequence give the same faults.

Route patterns use the path relative to the API mount and ``fnmatch`` globs:

* ``"POST /v2/pods"``, ``"GET /v2/pods/*"`` or just ``"/v2/pods"`` (any method);
* ``"runpod:*"`` (everything of one cloud), ``"runpod/serverless:POST /v2/*/run"``
  (one API of a cloud), ``"*"`` (everything).

Outcomes, checked in this order against one uniform draw per rule: ``drop_rate``
(the connection closes before the request reaches the cloud), ``lost_response_rate``
(the request is fully applied, then the connection dies before the client has its
answer: "the create succeeded but the response was lost"), ``late_commit_rate``
(the connection closes at once, as if the client had timed out, and the request is
applied ``late_commit_ms`` later: "the server committed the create after the client
gave up", so a lookup right after the failure finds nothing yet), ``rate_limit_429``
(a 429 with ``Retry-After: retry_after_s``; ``retry_after_s=None`` leaves the header
out, as Cloudflare-fronted APIs do), then ``error_rate`` per status, then
``applied_error_rate`` per status (the request is applied, then the answer is
replaced by that error: "the pod was made but the gateway said 502"). ``latency_ms``
is added (with ``asyncio.sleep``, so other requests proceed) to every matching request.

A script instead of chances: ``sequence=[...]`` gives the outcome of each matching
request in turn, then the rule is spent. An entry is ``"pass"`` (or ``None``: serve
normally), ``"drop"``, ``"lost"``, ``"late:<ms>"`` (dropped now, applied ``ms`` later),
an HTTP status (refused, nothing applied) or ``"applied:<status>"`` (applied, then
answered with that status). ``count`` (alias
``times``) limits how many requests any rule applies to. Every parameter is plain
data (``rule.to_dict()``), so a rule can be sent over the wire and rebuilt.
"""

from __future__ import annotations

import asyncio
import fnmatch
import random
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .cloud import Message, Receive, Scope

__all__ = [
    "ConnectionAborted", "Decision", "FaultRule", "Faults", "Outcome", "Target", "abort_connection",
]


class ConnectionAborted(httpx.RemoteProtocolError):
    """Raised in-process where a socket would have been closed under the client."""


@dataclass(frozen=True)
class Target:
    """What a request is, for route matching: ``runpod`` / ``rest`` / ``POST`` / ``/v2/pods``."""

    provider: str
    api: str
    method: str
    path: str


@dataclass(frozen=True)
class Decision:
    """What to do to one request."""

    latency_s: float = 0.0
    outcome: str | int | None = None  # "drop", "lost", "late:<ms>", "applied:<status>", a status
    retry_after_s: int | None = 1  # None: an injected 429 carries no Retry-After

    @property
    def retry_after_headers(self) -> dict[str, str] | None:
        """The extra headers of an injected 429 (``None`` for any other outcome)."""
        if self.outcome != 429 or self.retry_after_s is None:
            return None
        return {"Retry-After": str(self.retry_after_s)}

    @property
    def late_s(self) -> float | None:
        """For ``"late:<ms>"``: seconds after the drop at which the request is applied."""
        if isinstance(self.outcome, str) and self.outcome.startswith("late:"):
            return int(self.outcome.partition(":")[2]) / 1000.0
        return None

    @property
    def applied_status(self) -> int | None:
        """For ``"applied:<status>"``: the status that replaces the cloud's answer."""
        if isinstance(self.outcome, str) and self.outcome.startswith("applied:"):
            return int(self.outcome.partition(":")[2])
        return None


Outcome = str | int | None
"""A scripted outcome: ``"pass"``/``None``, ``"drop"``, ``"lost"``, ``"late:<ms>"``, a status,
``"applied:<s>"``."""


def _check_status(status: Any, what: str) -> int:
    if isinstance(status, bool) or not isinstance(status, int | str) \
            or not str(status).isdigit() or not 400 <= int(status) <= 599:
        raise ValueError(f"{what}: only HTTP error statuses (400-599), not {status!r}")
    return int(status)


def _check_late_ms(ms: Any) -> int:
    if isinstance(ms, bool) or not str(ms).isdigit():
        raise ValueError(f"late: the delay is whole milliseconds >= 0, not {ms!r}")
    return int(ms)


def _check_outcome(outcome: Outcome) -> str | int | None:
    """The normal form of one ``sequence`` entry (``None`` for "serve normally")."""
    if outcome is None or outcome == "pass":
        return None
    if outcome in ("drop", "lost"):
        return outcome
    if isinstance(outcome, str) and outcome.startswith("applied:"):
        return f"applied:{_check_status(outcome.partition(':')[2], 'applied')}"
    if isinstance(outcome, str) and outcome.startswith("late:"):
        return f"late:{_check_late_ms(outcome.partition(':')[2])}"
    if isinstance(outcome, bool):
        raise ValueError(f"not a fault outcome: {outcome!r}")
    return _check_status(outcome, "sequence")


def _parse_route(route: str) -> tuple[str, str, str]:
    """``(scope glob over "provider/api", method glob, path glob)``."""
    route = route.strip()
    scope, sep, rest = route.partition(":")
    if not sep or " " in scope or scope.startswith("/"):
        scope, rest = "*", route
    if "/" not in scope:
        scope = f"{scope}/*"
    rest = rest.strip() or "*"
    if " " in rest:
        method, path = rest.split(None, 1)
    elif rest.startswith("/"):
        method, path = "*", rest
    else:
        method, path = "*", rest
    return scope, method.upper(), path.strip()


class FaultRule:
    """One injected fault (returned by ``sb.faults(...)``); ``clear()`` removes it.

    ``injected`` counts what it did (``{"drop": 2, 500: 1, ...}``); ``matched``
    counts the requests it saw. ``count`` limits how many requests it applies to.
    """

    def __init__(
        self,
        owner: Faults,
        route: str = "*",
        *,
        latency_ms: float = 0.0,
        error_rate: Mapping[int, float] | None = None,
        rate_limit_429: float = 0.0,
        retry_after_s: int | None = 1,
        drop_rate: float = 0.0,
        lost_response_rate: float = 0.0,
        applied_error_rate: Mapping[int, float] | None = None,
        sequence: Sequence[Outcome] | None = None,
        seed: int | str | None = None,
        count: int | None = None,
        late_commit_rate: float = 0.0,
        late_commit_ms: int = 500,
    ) -> None:
        late_ms = _check_late_ms(late_commit_ms)
        errors = {_check_status(s, "error_rate"): float(r) for s, r in (error_rate or {}).items()}
        applied = {_check_status(s, "applied_error_rate"): float(r)
                   for s, r in (applied_error_rate or {}).items()}
        if count is not None and count < 0:
            raise ValueError("count must be >= 0")
        script = None if sequence is None else [_check_outcome(o) for o in sequence]
        rates = [drop_rate, lost_response_rate, late_commit_rate, rate_limit_429,
                 *errors.values(), *applied.values()]
        if any(r < 0 for r in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError("fault rates must be >= 0 and add up to at most 1.0")
        if latency_ms < 0 or (retry_after_s is not None and retry_after_s < 0):
            raise ValueError("latency_ms and retry_after_s must be >= 0")
        self.route = route
        self.latency_ms = float(latency_ms)
        self.retry_after_s = None if retry_after_s is None else int(retry_after_s)
        self.count = count if script is None or count is not None else len(script)
        self.sequence = script
        self.seed = seed
        self._rates: dict[str, Any] = {
            "error_rate": errors, "rate_limit_429": float(rate_limit_429),
            "drop_rate": float(drop_rate), "lost_response_rate": float(lost_response_rate),
            "applied_error_rate": applied, "late_commit_rate": float(late_commit_rate),
        }
        self.late_commit_ms = late_ms
        self.matched = 0
        self.injected: Counter[str | int] = Counter()
        self._scope, self._method, self._path = _parse_route(route)
        self._ladder: list[tuple[float, str | int]] = []
        edge = 0.0
        steps: list[tuple[str | int, float]] = [
            ("drop", drop_rate),
            ("lost", lost_response_rate),
            (f"late:{late_ms}", late_commit_rate),
            (429, rate_limit_429),
            *sorted(errors.items()),
            *sorted((f"applied:{s}", r) for s, r in applied.items()),
        ]
        for outcome, rate in steps:
            if rate > 0:
                edge += rate
                self._ladder.append((edge, outcome))
        self._rng = random.Random(seed)
        self._owner = owner
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FaultRule({self.route!r}, matched={self.matched}, injected={dict(self.injected)})"

    def matches(self, target: Target) -> bool:
        """Whether this rule applies to ``target``."""
        return (
            fnmatch.fnmatchcase(f"{target.provider}/{target.api}", self._scope)
            and fnmatch.fnmatchcase(target.method.upper(), self._method)
            and fnmatch.fnmatchcase(target.path, self._path)
        )

    def draw(self) -> str | int | None:
        """Consume one draw; the outcome for this request (``None``: pass it through)."""
        with self._lock:
            if self.count is not None and self.matched >= self.count:
                return None
            self.matched += 1
            u = self._rng.random()
            outcome: str | int | None = None
            if self.sequence is not None:
                index = self.matched - 1
                outcome = self.sequence[index] if index < len(self.sequence) else None
                if outcome is not None:
                    self.injected[outcome] += 1
                return outcome
            for edge, candidate in self._ladder:
                if u < edge:
                    outcome = candidate
                    break
            if outcome is not None:
                self.injected[outcome] += 1
            return outcome

    @property
    def exhausted(self) -> bool:
        """True once ``count`` requests have been seen."""
        return self.count is not None and self.matched >= self.count

    def clear(self) -> None:
        """Remove this rule."""
        self._owner.remove(self)

    def to_dict(self) -> dict[str, Any]:
        """The rule's parameters as plain JSON data (``Faults(**...)`` rebuilds it)."""
        rates = self._rates
        return {
            "route": self.route,
            "latency_ms": self.latency_ms,
            "error_rate": {str(k): v for k, v in rates["error_rate"].items()},
            "rate_limit_429": rates["rate_limit_429"],
            "retry_after_s": self.retry_after_s,
            "drop_rate": rates["drop_rate"],
            "lost_response_rate": rates["lost_response_rate"],
            "applied_error_rate": {str(k): v for k, v in rates["applied_error_rate"].items()},
            "sequence": list(self.sequence) if self.sequence is not None else None,
            "seed": self.seed,
            "count": self.count,
            "late_commit_rate": rates["late_commit_rate"],
            "late_commit_ms": self.late_commit_ms,
        }


class Faults:
    """The sandbox's fault injector (``sb.faults``). Call it to add a rule."""

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._made = 0

    def __call__(
        self,
        route: str = "*",
        *,
        latency_ms: float = 0.0,
        error_rate: Mapping[int, float] | None = None,
        rate_limit_429: float = 0.0,
        retry_after_s: int | None = 1,
        drop_rate: float = 0.0,
        lost_response_rate: float = 0.0,
        applied_error_rate: Mapping[int, float] | None = None,
        sequence: Sequence[Outcome] | None = None,
        seed: int | str | None = None,
        count: int | None = None,
        times: int | None = None,
        late_commit_rate: float = 0.0,
        late_commit_ms: int = 500,
    ) -> FaultRule:
        """Add a rule (see the module docstring) and return it; ``rule.clear()`` removes it.

        Without a ``seed`` the rule is still deterministic: its stream is derived from
        the sandbox seed and the rule's position. ``times`` is ``count`` by another name.
        """
        if times is not None:
            if count is not None and count != times:
                raise ValueError("pass count or times, not both")
            count = times
        with self._lock:
            self._made += 1
            rule = FaultRule(
                self,
                route,
                latency_ms=latency_ms,
                error_rate=error_rate,
                rate_limit_429=rate_limit_429,
                retry_after_s=retry_after_s,
                drop_rate=drop_rate,
                lost_response_rate=lost_response_rate,
                applied_error_rate=applied_error_rate,
                sequence=sequence,
                seed=f"{self._seed}:{self._made}:{route}" if seed is None else seed,
                count=count,
                late_commit_rate=late_commit_rate,
                late_commit_ms=late_commit_ms,
            )
            self._rules.append(rule)
        return rule

    @property
    def rules(self) -> list[FaultRule]:
        """The active rules, oldest first."""
        with self._lock:
            return list(self._rules)

    def remove(self, rule: FaultRule) -> None:
        """Remove one rule (no error if it is already gone)."""
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    def decide(self, target: Target) -> Decision:
        """Latency adds up over matching rules; the first rule with an outcome wins."""
        latency = 0.0
        outcome: str | int | None = None
        retry_after: int | None = 1
        for rule in self.rules:
            if not rule.matches(target) or rule.exhausted:
                continue
            latency += rule.latency_ms / 1000.0
            drawn = rule.draw()  # every matching rule draws, so each sequence is stable
            if outcome is None and drawn is not None:
                outcome, retry_after = drawn, rule.retry_after_s
        return Decision(latency, outcome, retry_after)


def _transport_of(send: Any) -> Any:
    """The asyncio transport behind uvicorn's ``send`` (its request cycle keeps one)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if hasattr(transport, "abort") else None


async def abort_connection(
    scope: Scope, receive: Receive, raw_send: Any, partial: list[Message] | None = None
) -> None:
    """Close the client's connection without a (complete) response.

    Over a socket served by uvicorn this aborts the TCP connection, optionally
    after writing ``partial`` (a response start and part of its body), then waits
    for the disconnect so the server does not try to answer. In-process (no
    socket) it raises ``ConnectionAborted``, an ``httpx.RemoteProtocolError``.
    """
    transport = _transport_of(raw_send)
    if transport is None:
        raise ConnectionAborted("sandbox: connection closed without a response")
    for message in partial or []:
        await raw_send(message)
    transport.abort()
    try:
        async with asyncio.timeout(2.0):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        pass
