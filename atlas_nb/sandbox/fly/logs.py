"""The Fly app logs API of the sandbox: ``GET S/fly/api/api/v1/apps/{app}/logs``.

The endpoint flyctl polls (providers.md §2.1): ``?next_token=&instance=&region=``,
answering JSON:API ``{"data": [{"id", "type": "logs", "attributes": {timestamp,
message, level, instance, region, meta}}], "meta": {"next_token": "<ns>"}}``.
Without a token it returns the most recent page; with one, the lines ingested
after that nanosecond cursor (oldest first, ``page_size`` at most). An empty answer to
a request with a cursor carries ``next_token: ""`` (clients keep their previous one);
without a cursor it carries one for "now", so the next poll misses nothing. The cursor is the
*ingestion* time, so a late line with an old ``timestamp`` is still delivered.

Lines are generated for every app the Fly cloud knows (its machines are the
instances, in their regions; an app without machines gets two synthetic
instances): a Poisson stream of ``rate`` lines/s in mixed levels plus a burst of
``burst_size`` lines every ~``burst_every_s`` seconds, all from the sandbox clock and
seeded RNG (a ``ManualClock`` makes them deterministic). Options
(``Sandbox(options={"fly": {"logs": {...}}})``): ``generate`` (default True),
``rate``, ``burst_every_s``, ``burst_size``, ``backlog`` (lines an app starts with),
``page_size`` (100), ``retain`` (5000 per app), ``inclusive_cursor`` (False; True
repeats the boundary line, to exercise client dedupe).

Auth: ``Authorization: Bearer <key>`` or ``FlyV1 <key>`` with ``sandbox_key("fly")``
(or a token added with ``accept_token``). A macaroon (``fm2_``...) sent as
``Bearer`` is refused with 401 and recorded as a violation: flyctl sends ``FlyV1``.

Hooks on ``sb.fly.logs``: ``emit(app, message, ...)``, ``burst(app, n)``,
``add_app(app, instances)``, ``fail_auth(times)`` (force 401s), ``accept_token``,
``lines(app)`` and ``requests``. Unknown app: 404 ``{"error": ...}``.
"""

from __future__ import annotations

import bisect
import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import sandbox_key
from ..cloud import Api, CloudContext, json_response
from .auth import header_violation

__all__ = ["FlyLogs", "logs_api"]

Instances = Sequence[tuple[str, str]]
"""``(instance id, region)`` pairs: the machines an app's lines come from."""

_MACAROON = ("fm1r_", "fm1a_", "fm2_")
_REGIONS = ("iad", "ord", "ams", "sin", "syd")
_ULID = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_LEVELS = (("info", 0.80), ("debug", 0.08), ("warn", 0.08), ("error", 0.04))
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "info": ("GET /health 200 in {ms}ms", "POST /v1/generate 200 in {ms}ms tokens={n}",
             "request_id={hex} completed in {ms}ms", "worker {n} ready",
             "GET /metrics 200 in {ms}ms"),
    "debug": ("cache hit ratio={pct}%", "batch size {n}, queue depth {n2}"),
    "warn": ("slow request: POST /v1/generate took {ms}ms", "GPU memory at {pct}%"),
    "error": ("upstream timeout after 30s (request_id={hex})",
              "CUDA out of memory: tried to allocate {n} MiB"),
}


def error_response(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    """Fly's error shape ``{"error": ...}`` (also how injected faults look)."""
    return json_response({"error": detail}, status, headers)


@dataclass(frozen=True)
class _Line:
    seq: int  # ingestion time in ns, strictly increasing per app: the cursor
    id: str
    ts: float
    message: str
    level: str
    instance: str
    region: str
    provider: str = "app"

    def wire(self) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(self.ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "id": self.id,
            "type": "logs",
            "attributes": {
                "timestamp": stamp, "message": self.message, "level": self.level,
                "instance": self.instance, "region": self.region,
                "meta": {"instance": self.instance, "region": self.region,
                         "event": {"provider": self.provider}},
            },
        }


class FlyLogs:
    """Log lines of the sandbox's Fly apps, and the HTTP API serving them.

    Args:
        ctx: the Fly cloud's context (clock, seed, options under ``"logs"``).
        key: the token the API accepts.
        apps: ``() -> {app: [(instance, region), ...]}``, the apps the cloud knows.
    """

    def __init__(self, ctx: CloudContext, *, key: str | None = None,
                 apps: Callable[[], Mapping[str, Instances]] | None = None) -> None:
        opts = dict(ctx.options.get("logs", {}) or {})
        self.ctx = ctx
        self.generate = bool(opts.get("generate", True))
        self.rate = float(opts.get("rate", 1.0))
        self.burst_every_s = float(opts.get("burst_every_s", 20.0))
        self.burst_size = int(opts.get("burst_size", 40))
        self.backlog = int(opts.get("backlog", 20))
        self.page_size = int(opts.get("page_size", 100))
        self.retain = int(opts.get("retain", 5000))
        self.inclusive_cursor = bool(opts.get("inclusive_cursor", False))
        self.requests = 0
        self._apps_source = apps
        self._rng = ctx.rng("fly-logs")
        self._lock = threading.RLock()
        self._accepted = {key or sandbox_key("fly")}
        self._force_401 = 0
        self._own: dict[str, list[tuple[str, str]]] = {}
        self._lines: dict[str, list[_Line]] = {}
        self._next_at: dict[str, float] = {}
        self._next_burst: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"FlyLogs(apps={sorted(self._known())}, generate={self.generate})"

    # -- hooks for tests -----------------------------------------------------------------
    def add_app(self, app: str, instances: Instances | None = None) -> None:
        """Serve logs for ``app`` (with these ``(instance, region)`` pairs, or synthetic ones)."""
        with self._lock:
            self._own[app] = list(instances or ())

    def emit(self, app: str, message: str, *, level: str = "info", instance: str | None = None,
             region: str | None = None, timestamp: float | None = None,
             provider: str = "app") -> str:
        """Append one line now (``timestamp``: its event time, default now); returns its id.

        An app the sandbox does not know yet is added.
        """
        with self._lock:
            if app not in self._known():
                self._own[app] = []
            now = self.ctx.clock.time()
            self._advance(app, now)
            inst, reg = self._instances(app)[0]
            line = self._line(app, ts=now if timestamp is None else timestamp, now=now,
                              message=message, level=level, instance=instance or inst,
                              region=region or reg, provider=provider)
            return line.id

    def burst(self, app: str, count: int, *, message: str = "GET /v1/generate 200 in {i}ms",
              level: str = "info") -> list[str]:
        """``count`` lines at once, spread over the app's instances; their ids."""
        with self._lock:
            pool = self._instances(app) if app in self._known() else [("", "")]
            return [self.emit(app, message.format(i=i), level=level,
                              instance=pool[i % len(pool)][0] or None,
                              region=pool[i % len(pool)][1] or None) for i in range(count)]

    def fail_auth(self, times: int = 1) -> None:
        """Answer the next ``times`` requests with 401, whatever their token."""
        with self._lock:
            self._force_401 = max(0, int(times))

    def accept_token(self, token: str) -> None:
        """Accept another token (besides the sandbox key)."""
        with self._lock:
            self._accepted.add(token)

    def lines(self, app: str) -> list[dict[str, Any]]:
        """Every retained line of ``app`` as its JSON:API item (generated up to now)."""
        with self._lock:
            self._advance(app, self.ctx.clock.time())
            return [line.wire() for line in self._lines.get(app, [])]

    def api(self) -> Api:
        """The logs API, to mount as ``Api("api", ...)`` of the Fly cloud."""
        app = Starlette(routes=[Route("/api/v1/apps/{app}/logs", self._serve, methods=["GET"])])

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            # Any other path answers Fly's error shape, not Starlette's plain-text 404.
            path = scope.get("path", "")
            root = scope.get("root_path", "")
            rel = path[len(root):] if root and path.startswith(root) else path
            if scope["type"] == "http" and not rel.startswith("/api/v1/apps/"):
                await error_response(404, f"no route {rel}")(scope, receive, send)
                return
            await app(scope, receive, send)

        return Api("api", guarded, error_response)

    # -- the endpoint --------------------------------------------------------------------
    async def _serve(self, request: Request) -> Response:
        with self._lock:
            self.requests += 1
            refused = self._refuse(request)
            if refused is not None:
                return error_response(401, refused)
            app = request.path_params["app"]
            if app not in self._known():
                return error_response(404, f"Could not find App \"{app}\"")
            q = request.query_params
            token = q.get("next_token", "")
            if token and not token.isdigit():
                return error_response(400, "next_token must be a nanosecond cursor (digits)")
            now = self.ctx.clock.time()
            self._advance(app, now)
            page = self._page(app, int(token) if token else None, q.get("instance") or None,
                              q.get("region") or None)
            if page:
                next_token = str(page[-1].seq)
            elif token:
                next_token = ""  # nothing new: clients keep the cursor they sent
            else:  # nothing at all yet: a cursor at "now", so the next poll misses nothing
                lines = self._lines.get(app)
                next_token = str(lines[-1].seq if lines else int(now * 1e9) - 1)
            return json_response({"data": [line.wire() for line in page],
                                  "meta": {"next_token": next_token}})

    def _refuse(self, request: Request) -> str | None:
        if self._force_401 > 0:
            self._force_401 -= 1
            return "Authenticate: token validation error"
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if not token:
            return "You must be authenticated to view this."
        if scheme == "Bearer" and token.startswith(_MACAROON):
            self.ctx.report("fly/api: a macaroon was sent as `Bearer`; flyctl sends `FlyV1`")
            return "Authenticate: token validation error"
        problem = header_violation(scheme, token)
        if problem:  # served anyway: how Fly answers it is unknown
            self.ctx.report(f"fly/api: {problem}")
        if scheme not in ("Bearer", "FlyV1") or token not in self._accepted:
            return "Authenticate: token validation error"
        return None

    def _page(self, app: str, cursor: int | None, instance: str | None,
              region: str | None) -> list[_Line]:
        lines = self._lines.get(app, [])

        def keep(line: _Line) -> bool:
            return (instance is None or line.instance == instance) and \
                (region is None or line.region == region)

        if cursor is None:  # the most recent page
            recent = [line for line in reversed(lines) if keep(line)][: self.page_size]
            return recent[::-1]
        find = bisect.bisect_left if self.inclusive_cursor else bisect.bisect_right
        start = find(lines, cursor, key=lambda line: line.seq)
        out: list[_Line] = []
        for line in lines[start:]:
            if keep(line):
                out.append(line)
                if len(out) >= self.page_size:
                    break
        return out

    # -- generation ----------------------------------------------------------------------
    def _known(self) -> set[str]:
        apps = set(self._own)
        if self._apps_source is not None:
            apps.update(self._apps_source())
        return apps

    def _instances(self, app: str) -> list[tuple[str, str]]:
        found = list((self._apps_source() if self._apps_source else {}).get(app, ()))
        found += self._own.get(app, [])
        if found:
            return found
        digest = hashlib.sha256(app.encode()).hexdigest()
        return [(digest[:14], _REGIONS[0]), (digest[14:28], _REGIONS[1])]

    def _line(self, app: str, *, ts: float, now: float, message: str, level: str,
              instance: str, region: str, provider: str = "app") -> _Line:
        lines = self._lines.setdefault(app, [])
        seq = max(lines[-1].seq + 1 if lines else 0, int(max(ts, now) * 1e9))
        line = _Line(seq, self._id(), ts, message, level, instance, region, provider)
        lines.append(line)
        if len(lines) > self.retain * 1.25:  # amortized trim to the retention limit
            del lines[: len(lines) - self.retain]
        return line

    def _id(self) -> str:
        return "".join(self._rng.choice(_ULID) for _ in range(26))

    def _message(self, level: str) -> str:
        rng = self._rng
        template = rng.choice(_TEMPLATES[level])
        return template.format(ms=rng.randint(1, 900), n=rng.randint(1, 512),
                               n2=rng.randint(0, 64), pct=rng.randint(40, 99),
                               hex="".join(rng.choice("0123456789abcdef") for _ in range(12)))

    def _level(self) -> str:
        roll = self._rng.random()
        for level, weight in _LEVELS:
            roll -= weight
            if roll < 0:
                return level
        return "info"

    def _advance(self, app: str, now: float) -> None:
        """Generate ``app``'s lines up to ``now`` (a no-op when generation is off)."""
        if not self.generate or app not in self._known():
            return
        rng = self._rng
        pool = self._instances(app)
        stamps: list[tuple[float, bool]] = []
        if app not in self._next_at:  # first sight: a short backlog, as if it had been running
            stamps += [(now - 60.0 + 60.0 * i / max(1, self.backlog), False)
                       for i in range(self.backlog)]
            self._next_at[app] = now + (rng.expovariate(self.rate) if self.rate > 0 else 1e18)
            self._next_burst[app] = now + self.burst_every_s * rng.uniform(0.3, 1.0)
        horizon = now - 3600.0  # a clock jump of days would otherwise generate millions
        t = max(self._next_at[app], horizon)
        while self.rate > 0 and t <= now and len(stamps) < self.retain:
            stamps.append((t, False))
            t += rng.expovariate(self.rate)
        self._next_at[app] = t
        burst_at = max(self._next_burst[app], horizon)
        while self.burst_every_s > 0 and burst_at <= now and len(stamps) < self.retain:
            stamps += [(burst_at + i * 0.001, True) for i in range(self.burst_size)]
            burst_at += self.burst_every_s * rng.uniform(0.5, 1.5)
        self._next_burst[app] = burst_at
        for ts, in_burst in sorted(stamps):
            level = "info" if in_burst and rng.random() < 0.9 else self._level()
            instance, region = pool[rng.randrange(len(pool))]
            message = (f"POST /v1/generate 200 in {rng.randint(5, 90)}ms (burst)"
                       if in_burst and level == "info" else self._message(level))
            self._line(app, ts=ts, now=ts, message=message, level=level,
                       instance=instance, region=region)


def _machines_of(cloud: Any) -> Callable[[], Mapping[str, Instances]]:
    """Read the Fly cloud's apps and live machines as ``{app: [(machine id, region)]}``."""

    def source() -> dict[str, list[tuple[str, str]]]:
        state = cloud.state
        now = cloud.ctx.clock.time()
        out: dict[str, list[tuple[str, str]]] = {name: [] for name in list(state.apps)}
        for (app, machine_id), machine in list(state.machines.items()):
            if app in out and machine.state(now) != "destroyed":
                out[app].append((machine_id, machine.region))
        return out

    return source


def logs_api(cloud: Any) -> Api:
    """The logs ``Api`` of the Fly cloud ``cloud``; its state becomes ``cloud.logs``.

    ``FlyCloud.apis()`` returns this next to the Machines API, so ``sb.fly.logs``
    holds the hooks (``emit``, ``fail_auth``...). Calling it twice reuses the state.
    """
    logs = getattr(cloud, "logs", None)
    if not isinstance(logs, FlyLogs):
        logs = FlyLogs(cloud.ctx, key=getattr(cloud, "key", None), apps=_machines_of(cloud))
        cloud.logs = logs
    return logs.api()
