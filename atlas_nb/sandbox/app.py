"""The combined ASGI app: mounts every cloud API, applies faults, checks the contract, counts.

A request for ``/{cloud}/{api}/rest/of/path`` goes through, in order: statistics,
fault injection (latency, then drop / lost response / late commit / 429 / error), the contract
check of the request, the cloud's own app, and the contract check of the response.
The response is held until it has been checked, so ``sb.violations`` is complete
by the time a client has its answer. Server-sent event streams pass through.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .cloud import Api, ASGIApp, Cloud, Message, Receive, Scope, Send
from .contract import Contract, HttpExchange
from .faults import Faults, Target, abort_connection

__all__ = ["CONTROL_PREFIX", "SandboxApp", "Stats"]

CONTROL_PREFIX = "/_control"
"""Where the control API (``control_api.py``) is served; no cloud is named ``_control``."""


class Stats:
    """Request counters (thread-safe): totals, per route, concurrency high-water marks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connections: Callable[[], int] | None = None
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._in_flight = 0
            self._max_in_flight = 0
            self._max_connections = 0
            self._routes: Counter[str] = Counter()
            self._statuses: Counter[int] = Counter()
            self._faults: Counter[str] = Counter()

    def begin(self) -> None:
        """A request arrived."""
        open_connections = self.connections() if self.connections else 0
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._max_connections = max(self._max_connections, open_connections, self._in_flight)

    def end(self, route: str, status: int | None, fault: str | int | None) -> None:
        """A request finished (``status`` None: no response was delivered)."""
        with self._lock:
            self._in_flight -= 1
            self._routes[route] += 1
            if status is not None:
                self._statuses[status] += 1
            if fault is not None:
                self._faults[str(fault)] += 1

    def snapshot(self) -> dict[str, Any]:
        """A copy of the counters."""
        with self._lock:
            return {
                "requests": sum(self._routes.values()),
                "routes": dict(self._routes),
                "statuses": dict(self._statuses),
                "faults": dict(self._faults),
                "in_flight": self._in_flight,
                "max_concurrent_requests": self._max_in_flight,
                "max_concurrent_connections": self._max_connections,
            }


@dataclass(frozen=True)
class _Mount:
    provider: str
    api: Api
    prefix: str
    contract: Contract | None


def _header(message: Message, name: bytes) -> str:
    for key, value in message.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


class SandboxApp:
    """The ASGI app serving every cloud under ``/{cloud}/{api}``."""

    def __init__(
        self,
        clouds: Sequence[Cloud],
        faults: Faults,
        stats: Stats,
        *,
        validate: bool,
        report: Callable[[str], None],
        control: ASGIApp | None = None,
    ) -> None:
        self.faults = faults
        self.control = control  # served at CONTROL_PREFIX, before any cloud, never faulted
        self.stats = stats
        self.report = report
        self._late: set[asyncio.Task[None]] = set()  # late commits still to apply
        self.mounts: list[_Mount] = []
        for cloud in clouds:
            for api in cloud.apis():
                contract = Contract(api.spec, api.errata) if validate and api.spec else None
                self.mounts.append(_Mount(cloud.name, api, f"/{cloud.name}/{api.name}", contract))

    def prepare(self) -> None:
        """Do slow one-time work (building contract validators) before serving."""
        for mount in self.mounts:
            if mount.contract is not None:
                mount.contract.prepare()

    def _find(self, path: str) -> _Mount | None:
        for mount in self.mounts:
            if path == mount.prefix or path.startswith(mount.prefix + "/"):
                return mount
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if self.control is not None and _under(scope["path"], CONTROL_PREFIX):
            path = scope["path"] if scope["path"] != CONTROL_PREFIX else CONTROL_PREFIX + "/"
            root = scope.get("root_path", "") + CONTROL_PREFIX
            await self.control({**scope, "path": path, "root_path": root}, receive, send)
            return
        mount = self._find(scope["path"])
        if mount is None:
            await self._index(scope, send)
            return
        rel = scope["path"][len(mount.prefix) :] or "/"
        child = {**scope, "root_path": scope.get("root_path", "") + mount.prefix}
        target = Target(mount.provider, mount.api.name, scope["method"], rel)
        status: list[int] = []

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        self.stats.begin()
        decision = self.faults.decide(target)
        try:
            if decision.latency_s:
                await asyncio.sleep(decision.latency_s)
            outcome = decision.outcome
            if outcome == "drop":
                await abort_connection(child, receive, send)
            elif decision.late_s is not None:  # dropped now, applied later
                await self._commit_late(mount, child, receive, send, decision.late_s)
            elif outcome == "lost":
                messages = await self._serve(mount, child, receive, counting_send, capture=True)
                status.clear()
                await abort_connection(child, receive, send, _partial(messages))
            elif decision.applied_status is not None:  # applied, then the answer is replaced
                await self._serve(mount, child, receive, counting_send, capture=True)
                status.clear()
                response = mount.api.error(decision.applied_status, "injected fault after the "
                                           "request was applied (sandbox fault injection)", None)
                await response(child, receive, counting_send)
            elif isinstance(outcome, int):
                extra = decision.retry_after_headers
                detail = (
                    "rate limit exceeded (sandbox fault injection)"
                    if outcome == 429
                    else "injected fault (sandbox fault injection)"
                )
                response = mount.api.error(outcome, detail, extra)
                await response(child, receive, counting_send)
            else:
                await self._serve(mount, child, receive, counting_send, capture=False)
        finally:
            route = self._route_name(mount, target, child)
            self.stats.end(route, status[0] if status else None, decision.outcome)

    async def _commit_late(
        self, mount: _Mount, scope: Scope, receive: Receive, send: Send, delay_s: float
    ) -> None:
        """Drop the connection now, as a client's timeout would, and apply the request
        ``delay_s`` later: the cloud commits what the client already gave up on."""
        body = await _read_body(receive)
        where = f"{mount.provider}/{mount.api.name} {scope['method']} {scope['path']}"

        async def commit() -> None:
            await asyncio.sleep(delay_s)

            async def gone() -> Message:
                return {"type": "http.disconnect"}

            replay = _replaying(body, gone)

            async def discard(message: Message) -> None:
                return None  # nobody is listening any more

            try:
                await self._serve(mount, dict(scope), replay, discard, capture=True)
            except Exception as exc:  # a cloud bug: surface it, never lose it in a task
                self.report(f"{where}: late commit failed: {exc!r}")

        task = asyncio.get_running_loop().create_task(commit())
        self._late.add(task)  # keep a reference until it is done (asyncio holds weak ones)
        task.add_done_callback(self._late.discard)
        await abort_connection(scope, receive, send)

    def _route_name(self, mount: _Mount, target: Target, scope: Scope) -> str:
        """``runpod/rest GET /v2/pods/{id}``: the spec's template, else the app's route."""
        template = mount.contract.template(target.path) if mount.contract else None
        route = getattr(scope.get("route"), "path", None)  # set by a Starlette router
        path = template or route or target.path
        return f"{mount.provider}/{mount.api.name} {target.method} {path}"

    async def _serve(
        self, mount: _Mount, scope: Scope, receive: Receive, send: Send, *, capture: bool
    ) -> list[Message]:
        """Run the cloud's app, check the contract, then forward the answer (or keep it)."""
        contract = mount.contract
        if contract is None and not capture:
            await mount.api.app(scope, receive, send)
            return []
        body = await _read_body(receive)
        replay = _replaying(body, receive)

        rel = scope["path"][len(scope["root_path"]) :] or "/"
        exchange = HttpExchange(
            method=scope["method"],
            path=rel,
            query=_query(scope),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            body=body,
        )
        where = f"{mount.provider}/{mount.api.name} {scope['method']} {rel}"
        if contract is not None:
            for line in contract.check_request(exchange):
                self.report(f"{where}: request: {line}")
        messages: list[Message] = []
        streaming = False

        async def hold(message: Message) -> None:
            nonlocal streaming
            if message["type"] == "http.response.start" and not capture:
                streaming = _header(message, b"content-type").startswith("text/event-stream")
            if streaming:
                await send(message)
            else:
                messages.append(message)

        await mount.api.app(scope, replay, hold)
        if contract is not None and messages and not streaming:
            start = messages[0]
            exchange.status = start["status"]
            exchange.response_headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]
            }
            exchange.response_body = b"".join(m.get("body", b"") for m in messages[1:])
            for line in contract.check_response(exchange):
                self.report(f"{where}: response {exchange.status}: {line}")
        if not capture:
            for message in messages:
                await send(message)
        return messages

    async def _index(self, scope: Scope, send: Send) -> None:
        from . import sandbox_key

        apis: dict[str, dict[str, Any]] = {}
        for m in self.mounts:
            entry = apis.setdefault(m.provider, {"key": sandbox_key(m.provider), "apis": {}})
            entry["apis"][m.api.name] = m.prefix
        found = scope["path"] in {"/", ""}
        body: dict[str, Any] = {"sandbox": "atlas_nb", "clouds": apis}
        if self.control is not None:
            body["control"] = CONTROL_PREFIX
        if not found:
            body = {"error": f"no sandbox API at {scope['path']}", **body}
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200 if found else 404,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _query(scope: Scope) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    raw = scope.get("query_string", b"").decode("latin-1")
    return parse_qsl(raw, keep_blank_values=True)


def _partial(messages: list[Message]) -> list[Message]:
    """The start and half the body of a response, for a "lost response" abort."""
    body = b"".join(m.get("body", b"") for m in messages[1:])
    if not messages or not body:
        return []  # nothing to truncate: the client must not see a complete answer
    start = messages[0]
    return [
        start,
        {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True},
    ]


def _replaying(body: bytes, then: Receive) -> Receive:
    """A ``receive`` that hands the app the already-read ``body`` once, then defers to
    ``then`` (the client's own, or a disconnect when nobody is listening)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await then()

    return replay
