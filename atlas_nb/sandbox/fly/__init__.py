"""The Fly.io cloud of the sandbox: the Machines API at ``S/fly/machines/v1/...``.

Faithful to ``specs/fly/machines-openapi3.json`` and Fly's docs: apps (list, create,
show, destroy), their addresses (``ip_assignments``: ``ips.py``; ``sb.fly.reachable(url)``
says whether a port URL would answer), machines (create, show, list, stop, start,
destroy, metadata upsert), the platform's regions and placements (the org's limits
where a machine fits now), and ``wait``,
which long-polls without blocking the event loop, holds at most 60 s and answers
**408** when the state is not reached in time. Errors are the spec's
``ErrorResponse`` (``{"error", "status"?}``). Auth: ``Authorization: Bearer <key>``
or ``FlyV1 <key>`` with ``sandbox_key("fly")``. Fly's app logs API (``S/fly/api``)
is left for later: add it as a second ``Api`` in ``FlyCloud.apis()``.

``sb.fly`` is this object: ``machine(app, id)`` (the ``Machine`` dict, env
included), ``machine_env(compute_id)``, ``fail(compute_id)``, ``set_capacity(...)``
and the lifecycle delays. Options (``Sandbox(options={"fly": {...}})``):
``provision_delay_s``, ``start_delay_s``, ``stop_delay_s``, ``destroy_delay_s``,
``apps`` (created at start in org ``personal``, with no address, as an app made through
the API: ``sb.fly.allocate(app, "shared_v4", "v6")`` gives one what ``fly ips allocate-*``
would), ``app_ips`` (``{app: [type, ...]}`` allocated at start), ``placement_limit`` (the
org's per-region limit a ``count=0`` placements question answers, default 20), ``orgs``,
``nearest`` (the region used when a create names none), ``gpu_slots`` (GPU machines per
region and kind, default 8), ``wait_poll_s``, ``wait_fast_forward`` (on a
``ManualClock``, a ``wait`` that would hold moves the clock on instead: to the machine's
next state change or the wait's deadline, whichever comes first; also settable as
``sb.fly.wait_fast_forward``)
and ``tokens`` (more tokens the API accepts besides the sandbox key, e.g. a macaroon,
so a test can check how a real token travels; ``sb.fly.tokens`` is the set). The
sandbox-wide ``sb.capacity`` overrides (per canonical GPU) empty a GPU kind everywhere
on top of ``set_capacity``.

The contract check runs against the vendored spec patched by ``ERRATA``: each
kind of patch is a place where the spec contradicts Fly's docs (``ERRATA_SOURCES``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import sandbox_key
from ..accounts import Accounts, acting_as, visible
from ..cloud import (
    Api,
    ASGIApp,
    BadBody,
    CloudContext,
    Receive,
    Scope,
    Send,
    json_response,
    read_json,
)
from ..schemas import component_errors, load_spec
from . import ips
from .auth import header_violation
from .machines import PERSISTENT, FlyError, FlyState, MachineRecord

__all__ = ["ERRATA", "ERRATA_SOURCES", "SPEC", "FlyCloud", "error_response"]

SPEC = "fly/machines-openapi3.json"
WAIT_STATES = ("started", "stopped", "suspended", "destroyed", "failed", "settled")
WAIT_CAP_S = 60
_OK = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
_STARTED = {"type": "object", "properties": {"previous_state": {"type": "string"},
                                             "migrated": {"type": "boolean"},
                                             "new_host": {"type": "string"}}}

ERRATA_SOURCES: tuple[str, ...] = (
    "PATCH .../metadata reuses the operationId Machines_update_metadata of PUT, which makes "
    "the document invalid for openapi-core; renamed Machines_patch_metadata",
    "every operation may answer an ErrorResponse (400, 401, 404, 408, 412, 422, 429, 5xx) per "
    "superfly/docs@5c22c8ce:machines/api/working-with-machines-api; the spec declares none, "
    "so each gets a `default` ErrorResponse",
    "`content: {}` documents no body, yet openapi-core rejects both a body and none; such "
    "responses lose it, and the documented bodies are declared: stop and destroy answer "
    "{\"ok\": true} (superfly/docs reference/machines/_stop.erb, _delete_resp.erb), start "
    "{previous_state, migrated, new_host} (reference/machines/_machines_start_resp.erb)",
)
"""Why the Fly spec is patched for the contract check (``ERRATA`` holds the patches)."""


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _errata(doc: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """``(JSON pointer, replacement)`` pairs implementing ``ERRATA_SOURCES`` on ``doc``."""
    fixes: list[tuple[str, Any]] = [(
        _pointer("paths", "/apps/{app_name}/machines/{machine_id}/metadata", "patch",
                 "operationId"), "Machines_patch_metadata",
    )]
    documented = {("/apps/{app_name}/machines/{machine_id}/stop", "post"): _OK,
                  ("/apps/{app_name}/machines/{machine_id}/start", "post"): _STARTED,
                  ("/apps/{app_name}/machines/{machine_id}", "delete"): _OK}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for status, response in op["responses"].items():
                if response.get("content") == {}:
                    fixed = {k: v for k, v in response.items() if k != "content"}
                    body = documented.get((path, method)) if status == "200" else None
                    if body is not None:
                        fixed["content"] = {"application/json": {"schema": body}}
                    fixes.append((_pointer("paths", path, method, "responses", status), fixed))
            if "default" not in op["responses"]:
                fixes.append((_pointer("paths", path, method, "responses", "default"),
                              {"description": "Error", "content": {"application/json": {
                                  "schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}))
    return tuple(fixes)


ERRATA = _errata(load_spec(SPEC))
"""What the contract check patches in ``SPEC`` (see ``ERRATA_SOURCES``)."""


def error_response(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    """An ``ErrorResponse`` answer (also how injected faults look)."""
    return json_response({"error": detail}, status, headers)


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0", ""):
        raise FlyError(400, f"invalid {name} {value!r}: want a boolean")
    return value in ("true", "1")


class _Routes:
    def __init__(self, state: FlyState, poll_s: float,
                 fast_forward: Callable[[], bool] = lambda: False) -> None:
        self.state = state
        self.poll_s = poll_s
        self.fast_forward = fast_forward

    def _machine(self, request: Request) -> MachineRecord:
        return self.state.get(request.path_params["app"], request.path_params["id"])

    async def list_apps(self, request: Request) -> Response:
        org = request.query_params.get("org_slug")
        if not org:
            raise FlyError(400, "org_slug is required")
        if org not in self.state.orgs:
            raise FlyError(404, f"organization {org!r} not found")
        apps = [self.state.app_wire(a) for a in list(self.state.apps.values())
                if a.org == org and visible(a.account)]
        return json_response({"total_apps": len(apps), "apps": apps})

    async def create_app(self, request: Request) -> Response:
        body = await read_json(request)
        errors = component_errors(SPEC, "CreateAppRequest", body)
        if errors:
            raise FlyError(400, "; ".join(errors))
        if not body.get("name") or not body.get("org_slug"):
            raise FlyError(400, "name and org_slug are required")
        self.state.create_app(str(body["name"]), str(body["org_slug"]), body.get("network"))
        return Response(status_code=201)

    async def show_app(self, request: Request) -> Response:
        return json_response(self.state.app_wire(self.state.app(request.path_params["app"])))

    async def delete_app(self, request: Request) -> Response:
        self.state.delete_app(request.path_params["app"])
        return Response(status_code=202)

    async def list_machines(self, request: Request) -> Response:
        q = request.query_params
        states = [s for s in q.get("state", "").split(",") if s]
        machines = self.state.list_machines(
            request.path_params["app"], include_deleted=_flag(request, "include_deleted"),
            region=q.get("region") or None, states=states,
        )
        summary = _flag(request, "summary")
        now = self.state.ctx.clock.time()
        return json_response([self.state.wire(m, now=now, summary=summary) for m in machines])

    async def create_machine(self, request: Request) -> Response:
        app = request.path_params["app"]
        self.state.app(app)  # 404 for an unknown app before looking at the body
        body = await read_json(request)
        errors = component_errors(SPEC, "CreateMachineRequest", body)
        if errors:
            raise FlyError(400, "; ".join(errors))
        return json_response(self.state.wire(self.state.create_machine(app, body)))

    async def show_machine(self, request: Request) -> Response:
        return json_response(self.state.wire(self._machine(request)))

    async def stop(self, request: Request) -> Response:
        if await request.body():
            errors = component_errors(SPEC, "StopRequest", await read_json(request))
            if errors:
                raise FlyError(400, "; ".join(errors))
        self.state.stop(request.path_params["app"], request.path_params["id"])
        return json_response({"ok": True})

    async def start(self, request: Request) -> Response:
        previous = self.state.start(request.path_params["app"], request.path_params["id"])
        return json_response({"previous_state": previous, "migrated": False, "new_host": ""})

    async def destroy(self, request: Request) -> Response:
        self.state.destroy(request.path_params["app"], request.path_params["id"],
                           force=_flag(request, "force"))
        return json_response({"ok": True})

    async def wait(self, request: Request) -> Response:
        machine = self._machine(request)
        q = request.query_params
        states = [s for value in q.getlist("state") for s in value.split(",") if s] or ["started"]
        unknown = [s for s in states if s not in WAIT_STATES]
        if unknown:
            known = ", ".join(WAIT_STATES)
            raise FlyError(400, f"invalid state {unknown[0]!r}; use one of {known}")
        text = q.get("timeout", str(WAIT_CAP_S))
        if not text.isdigit():
            raise FlyError(400, f"invalid timeout {text!r}: want whole seconds")
        timeout = min(int(text), WAIT_CAP_S)
        version = q.get("version") or q.get("instance_id")
        if "stopped" in states and not version:
            raise FlyError(400, "instance_id (version) is required when waiting for stopped")
        wanted = set(states) - {"settled"} | (PERSISTENT if "settled" in states else set())
        clock = self.state.ctx.clock
        closing = self.state.ctx.closing
        # Whichever runs out first: the sandbox clock (a ManualClock test advances it) or
        # real time (so a forgotten ManualClock never hangs a request).
        clock_deadline = clock.time() + timeout
        real_deadline = time.monotonic() + timeout
        while True:
            state = machine.state(clock.time())
            if state in wanted:
                event = machine.events[0]["id"] if machine.events else ""
                return json_response({"ok": True, "state": state, "version": machine.instance_id,
                                      "event_id": event})
            if (clock.time() >= clock_deadline or time.monotonic() >= real_deadline
                    or closing.is_set()):
                raise FlyError(408, f"deadline_exceeded: machine {machine.id} did not reach "
                                    f"state {'|'.join(states)} within {timeout}s (now {state})")
            if self._skip_ahead(machine, clock, clock_deadline):
                continue
            await asyncio.sleep(self.poll_s)

    def _skip_ahead(self, machine: MachineRecord, clock: Any, deadline: float) -> bool:
        """With ``wait_fast_forward`` on a manual clock: move it to the machine's next state
        change or ``deadline``, whichever is first (a held wait is time passing)."""
        advance = getattr(clock, "advance", None)
        if not self.fast_forward() or advance is None:
            return False
        now = clock.time()
        advance(min([when for when, _state in machine.timeline if when > now] + [deadline])
                - now)
        return True

    async def list_ips(self, request: Request) -> Response:
        return json_response(ips.listing(self.state, request.path_params["app"]))

    async def assign_ip(self, request: Request) -> Response:
        app = request.path_params["app"]
        self.state.app(app)  # 404 for an unknown app before looking at the body
        body = await read_json(request)
        errors = component_errors(SPEC, "assignIPRequest", body)
        if errors:
            raise FlyError(400, "; ".join(errors))
        return json_response(ips.assign(self.state, app, body))

    async def release_ip(self, request: Request) -> Response:
        ips.release(self.state, request.path_params["app"], request.path_params["ip"])
        return Response(status_code=204)

    async def upsert_metadata(self, request: Request) -> Response:
        body = await read_json(request)
        errors = component_errors(SPEC, "upsertMetadataKeyRequest", body)
        if errors or not isinstance(body.get("value"), str):
            raise FlyError(400, "; ".join(errors) or "value must be a string")
        self.state.upsert_metadata(request.path_params["app"], request.path_params["id"],
                                   request.path_params["key"], body["value"])
        return Response(status_code=204)

    async def regions(self, request: Request) -> Response:
        return json_response(self.state.regions_wire())

    async def placements(self, request: Request) -> Response:
        body = await read_json(request)
        errors = component_errors(SPEC, "main.getPlacementsRequest", body)
        if errors:
            raise FlyError(400, "; ".join(errors))
        if body["org_slug"] not in self.state.orgs:
            raise FlyError(404, f"organization {body['org_slug']!r} not found")
        rows = self.state.placements(body.get("compute") or {"cpu_kind": "performance"},
                                     body.get("region"), int(body.get("count") or 0))
        return json_response({"regions": rows})


async def _on_fly_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlyError)
    return json_response(exc.body(), exc.status)


async def _on_bad_body(request: Request, exc: Exception) -> Response:
    return error_response(400, str(exc))


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, f"no route {request.method} {request.url.path}")
    return error_response(exc.status_code, str(exc.detail), exc.headers)


def build_machines_app(state: FlyState, accounts: Accounts, *, poll_s: float = 0.02,
                       fast_forward: Callable[[], bool] = lambda: False,
                       tokens: Collection[str] = ()) -> ASGIApp:
    """The Machines API behind ``Bearer``/``FlyV1`` auth: a key of ``accounts``, or any of
    ``tokens`` (which act as the default account)."""
    r = _Routes(state, poll_s, fast_forward)
    m = "/v1/apps/{app}/machines/{id}"
    app = Starlette(
        routes=[
            Route("/v1/apps", r.list_apps, methods=["GET"]),
            Route("/v1/apps", r.create_app, methods=["POST"]),
            Route("/v1/apps/{app}", r.show_app, methods=["GET"]),
            Route("/v1/apps/{app}", r.delete_app, methods=["DELETE"]),
            Route("/v1/apps/{app}/machines", r.list_machines, methods=["GET"]),
            Route("/v1/apps/{app}/machines", r.create_machine, methods=["POST"]),
            Route(m, r.show_machine, methods=["GET"]),
            Route(m, r.destroy, methods=["DELETE"]),
            Route(f"{m}/stop", r.stop, methods=["POST"]),
            Route(f"{m}/start", r.start, methods=["POST"]),
            Route(f"{m}/wait", r.wait, methods=["GET"]),
            Route(f"{m}/metadata/{{key}}", r.upsert_metadata, methods=["POST"]),
            Route("/v1/apps/{app}/ip_assignments", r.list_ips, methods=["GET"]),
            Route("/v1/apps/{app}/ip_assignments", r.assign_ip, methods=["POST"]),
            Route("/v1/apps/{app}/ip_assignments/{ip}", r.release_ip, methods=["DELETE"]),
            Route("/v1/platform/regions", r.regions, methods=["GET"]),
            Route("/v1/platform/placements", r.placements, methods=["POST"]),
        ],
        exception_handlers={FlyError: _on_fly_error, BadBody: _on_bad_body,
                            HTTPException: _on_http},
    )

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        token = token.strip()
        problem = header_violation(scheme, token)
        if problem:
            state.ctx.report(f"fly/machines: {problem}")
        account = accounts.by_key(token) if scheme in ("Bearer", "FlyV1") else None
        if account is None and scheme in ("Bearer", "FlyV1") and token and token in tokens:
            account = accounts.default
        if account is None:
            detail = ("You must be authenticated to view this." if not token
                      else "Authenticate: token validation error")
            await error_response(401, detail)(scope, receive, send)
            return
        with acting_as(account):  # its token sees its own apps (and their machines) only
            await app(scope, receive, send)

    return guarded


class FlyCloud:
    """Fly.io: orgs, apps and machines behind the Machines API."""

    name = "fly"

    def __init__(self, ctx: CloudContext) -> None:
        self.ctx = ctx
        self.key = sandbox_key(self.name)
        self.accounts = Accounts(self.name, self.key)
        """Its accounts (``accounts.py``): ``self.key`` is the default one's key."""
        self.state = FlyState(ctx)
        for app, kinds in dict(ctx.options.get("app_ips", {})).items():
            self.allocate(str(app), *kinds)
        self.poll_s = float(ctx.options.get("wait_poll_s", 0.02))
        self.wait_fast_forward = bool(ctx.options.get("wait_fast_forward", False))
        """On a ``ManualClock``: a ``wait`` moves the clock on instead of holding."""
        self.tokens: set[str] = {str(t) for t in ctx.options.get("tokens", ())}
        """Tokens the Machines API accepts besides ``key``."""

    def __repr__(self) -> str:
        return f"FlyCloud(apps={list(self.state.apps)}, machines={len(self.state.machines)})"

    def apis(self) -> Sequence[Api]:
        """The Machines API and the app logs API (``S/fly/api``; state in ``self.logs``)."""
        from .logs import logs_api  # the logs API's module; it sets self.logs

        app = build_machines_app(self.state, self.accounts, poll_s=self.poll_s,
                                 fast_forward=lambda: self.wait_fast_forward, tokens=self.tokens)
        return [Api("machines", app, error_response, spec=SPEC, errata=ERRATA), logs_api(self)]

    def close(self) -> None:
        """Nothing runs in the background; waits watch ``ctx.closing``."""

    # ---- helpers for tests -----------------------------------------------------------
    def machine(self, app: str, machine_id: str) -> dict[str, Any]:
        """The ``Machine`` document as Fly would return it (``config.env`` included)."""
        return self.state.wire(self.state.get(app, machine_id))

    def machine_env(self, compute_id: str) -> dict[str, str]:
        """The env of the machine with atlas compute id ``"{app}/{machine_id}"``."""
        app, _, machine_id = compute_id.rpartition("/")
        env = self.state.get(app, machine_id).config.get("env") or {}
        return {str(k): str(v) for k, v in env.items()}

    def reachable(self, url: str | None) -> bool:
        """Whether a port URL would reach a started machine: its app has an address that
        serves the port (``ips.py``; apps start with none) and a machine publishes it."""
        return bool(url) and ips.reachable(self.state, str(url))

    def addresses(self, app: str) -> list[dict[str, Any]]:
        """The app's ``IPAssignment`` rows (``[]`` for an unknown app)."""
        found = self.state.apps.get(app)
        return [ips.wire(r) for r in found.ips] if found else []

    def allocate(self, app: str, *kinds: str) -> list[str]:
        """Give an app addresses as ``fly ips allocate-*`` would (e.g. ``"shared_v4", "v6"``,
        for an app a test treats as the user's own, deployed one); their IPs."""
        return [str(ips.assign(self.state, app, {"type": k})["ip"]) for k in kinds]

    def fail(self, compute_id: str) -> None:
        """Crash a machine (state ``failed``)."""
        app, _, machine_id = compute_id.rpartition("/")
        self.state.fail(app, machine_id)

    def set_capacity(self, region: str, gpu_kinds: Sequence[str], slots: int = 8) -> None:
        """Which GPU kinds ``region`` hosts, ``slots`` machines each (empty: none)."""
        self.state.capacity[region] = dict.fromkeys(gpu_kinds, slots)

    @property
    def provision_delay_s(self) -> float:
        """Seconds a new machine stays ``created`` before ``starting``."""
        return self.state.provision_delay_s

    @provision_delay_s.setter
    def provision_delay_s(self, value: float) -> None:
        self.state.provision_delay_s = float(value)

    @property
    def start_delay_s(self) -> float:
        """Seconds a machine stays ``starting``."""
        return self.state.start_delay_s

    @start_delay_s.setter
    def start_delay_s(self, value: float) -> None:
        self.state.start_delay_s = float(value)
