"""Lambda Cloud API v1 (``S/lambda_labs/rest``): instance types, launch, restart, terminate,
list, get and rename. Faithful to ``specs/lambda/lambda-cloud-api-openapi-1.8.3.json``.

* Success answers are ``{"data": ...}``; errors ``{"error": {"code", "message",
  "suggestion"}}`` with the spec's codes: 401 ``global/invalid-api-key``, 403
  ``global/account-inactive``, 404 ``global/object-does-not-exist``, 400
  ``global/invalid-parameters``, 400 ``instance-operations/launch/insufficient-capacity``,
  400 ``global/quota-exceeded``, 400 ``.../file-system-in-wrong-region``.
* Auth: ``Bearer <key>``, or Basic with ``base64(key:)``, ``base64(key)`` or the bare key
  (the spec's ``basicAuth`` description).
* Launch is limited to one per ``launch_interval_s`` (12 s) per key, counted on
  launches that get through; past it the answer is 429 ``error code: 1015`` in
  plain text, as Lambda's Cloudflare front sends it (Lambda docs,
  ``LambdaLabs/docsy-lambda-docs:content/en/cloud/rate-limiting.md``). 429 is not in
  the spec, so the contract check records it as a violation: that is the truth.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..accounts import Accounts, acting_as
from ..cloud import ASGIApp, BadBody, Clock, Receive, Scope, Send, json_response, read_json
from ..schemas import component_errors
from .instances import InstanceError, InstanceStore, not_found

__all__ = ["SPEC", "LaunchLimiter", "LaunchPolicy", "build_rest_app", "error_response"]

SPEC = "lambda/lambda-cloud-api-openapi-1.8.3.json"
RATE_LIMIT_BODY = "error code: 1015"

_UNAUTHORIZED = InstanceError(401, "global/invalid-api-key",
                              "API key was invalid, expired, or deleted.",
                              "Check your API key or create a new one, then try again.")
_INACTIVE = InstanceError(403, "global/account-inactive", "Your account is inactive.",
                          "Make sure you have verified your email address and have a valid "
                          "payment method. Contact Support if problems continue.")


def error_response(status: int, detail: str, headers: Mapping[str, str] | None = None
                   ) -> Response:
    """An error in Lambda's shape (for injected faults too); 429 is Cloudflare's text."""
    if status == 429:
        return PlainTextResponse(RATE_LIMIT_BODY, 429, headers=dict(headers or {}))
    if status >= 500:
        err = InstanceError(status, "global/internal-error", "An internal server error occurred.",
                            f"Try again later. ({detail})")
    elif status == 401:
        err = _UNAUTHORIZED
    elif status == 403:
        err = _INACTIVE
    elif status == 404:
        err = not_found("resource")
    else:
        err = InstanceError(status, "global/invalid-parameters", detail)
    return json_response(err.body(), status, headers)


def _invalid(message: str) -> InstanceError:
    return InstanceError(400, "global/invalid-parameters", message,
                         "Check the request body against the API reference.")


class LaunchLimiter:
    """One launch per ``interval`` seconds per key (launches refused with 429 do not count)."""

    def __init__(self, clock: Clock, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def admit(self, key: str) -> bool:
        """Count a launch for ``key`` if the interval since the last one has passed."""
        with self._lock:
            now = self.clock.time()
            last = self._last.get(key)
            if last is not None and now < last + self.interval:
                return False
            self._last[key] = now
            return True


class LaunchPolicy:
    """What a launch must satisfy beyond the schema (set by the cloud's options)."""

    def __init__(self, ssh_keys: list[str] | None, file_systems: Mapping[str, str],
                 quota: int | None) -> None:
        self.ssh_keys = ssh_keys
        self.file_systems = dict(file_systems)
        self.quota = quota


class _Routes:
    def __init__(self, store: InstanceStore, policy: LaunchPolicy) -> None:
        self.store = store
        self.catalog = store.catalog
        self.policy = policy

    def _data(self, payload: Any) -> Response:
        return json_response({"data": payload})

    async def instance_types(self, request: Request) -> Response:
        return self._data(self.catalog.wire())

    async def list_instances(self, request: Request) -> Response:
        now = self.store.ctx.clock.time()
        return self._data([self.store.wire(r, now) for r in self.store.listed()])

    async def get_instance(self, request: Request) -> Response:
        return self._data(self.store.wire(self.store.get(request.path_params["id"])))

    async def rename(self, request: Request) -> Response:
        record = self.store.get(request.path_params["id"])
        body = await _body(request, "InstanceModificationRequest")
        if "name" in body:
            record.name = body["name"]
        return self._data(self.store.wire(record))

    async def launch(self, request: Request) -> Response:
        body = await _body(request, "InstanceLaunchRequest")
        keys = body["ssh_key_names"]
        if len(keys) != 1:
            raise _invalid(f"Exactly one SSH key must be specified ({len(keys)} given).")
        type_name = body["instance_type_name"]
        if type_name not in self.catalog.types:
            raise InstanceError(404, "global/object-does-not-exist",
                                f"Instance type {type_name!r} does not exist.",
                                "List the instance types with GET /api/v1/instance-types.")
        if self.policy.ssh_keys is not None and keys[0] not in self.policy.ssh_keys:
            raise InstanceError(404, "global/object-does-not-exist",
                                f"SSH key {keys[0]!r} does not exist.",
                                "Add the key at https://cloud.lambda.ai/ssh-keys first.")
        region = body["region_name"]
        self._check_file_systems(body, region)
        if region not in self.catalog.capacity(type_name):
            raise InstanceError(400, "instance-operations/launch/insufficient-capacity",
                                "Not enough capacity to fulfill launch request.",
                                "Choose an instance type and region with capacity available.")
        quota = self.policy.quota
        if quota is not None and self.store.live_count() >= quota:
            raise InstanceError(400, "global/quota-exceeded", "Quota exceeded.",
                                "Contact Support to increase your quota.")
        if not self.catalog.overrides.take("lambda_labs", type_name):  # a concurrent launch won
            raise InstanceError(400, "instance-operations/launch/insufficient-capacity",
                                "Not enough capacity to fulfill launch request.",
                                "Choose an instance type and region with capacity available.")
        record = self.store.launch(body)
        return self._data({"instance_ids": [record.id]})

    def _check_file_systems(self, body: Mapping[str, Any], region: str) -> None:
        mounts = body.get("file_system_mounts") or []
        names = [*(body.get("file_system_names") or []), *(m["file_system_id"] for m in mounts)]
        for fs in names:
            where = self.policy.file_systems.get(fs)
            if where is None:
                raise InstanceError(404, "global/object-does-not-exist",
                                    f"File system {fs!r} does not exist.",
                                    "Check the file system name and try again.")
            if where != region:
                raise InstanceError(
                    400, "instance-operations/launch/file-system-in-wrong-region",
                    f"File system {fs!r} is in {where}, not {region}.",
                    f"Launch the instance in {where}.")

    async def restart(self, request: Request) -> Response:
        body = await _body(request, "InstanceRestartRequest")
        records = [self.store.get(i) for i in body["instance_ids"]]  # 404 before any change
        restarted = [self.store.restart(r.id) for r in records]
        now = self.store.ctx.clock.time()
        return self._data({"restarted_instances": [self.store.wire(r, now)
                                                   for r in restarted if r is not None]})

    async def terminate(self, request: Request) -> Response:
        body = await _body(request, "InstanceTerminateRequest")
        records = [self.store.get(i) for i in body["instance_ids"]]  # 404 before any change
        done = [self.store.terminate(r.id) for r in records]
        now = self.store.ctx.clock.time()
        return self._data({"terminated_instances": [self.store.wire(r, now) for r in done]})


async def _body(request: Request, component: str) -> dict[str, Any]:
    try:
        body = await read_json(request)
    except BadBody as exc:
        raise _invalid(str(exc)) from None
    errors = component_errors(SPEC, component, body)
    if errors:
        raise _invalid("Invalid request data: " + "; ".join(errors))
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    return body


async def _on_instance_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InstanceError)
    return json_response(exc.body(), exc.status)


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return json_response(not_found(f"route {request.method} {request.url.path}").body(), 404)
    return error_response(exc.status_code, str(exc.detail), exc.headers)


def _key_of(header: str) -> str | None:
    """The API key in an ``Authorization`` header (Bearer, or Basic in the spec's forms)."""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if not value:
        return None
    if scheme.lower() == "bearer":
        return value
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return value  # "Basic <api_key>" is allowed as is
    return decoded[:-1] if decoded.endswith(":") else decoded


def build_rest_app(
    store: InstanceStore,
    policy: LaunchPolicy,
    limiter: LaunchLimiter,
    accounts: Accounts,
    inactive: Callable[[], bool],
) -> ASGIApp:
    """The v1 app behind key auth (any of ``accounts``' keys) and the launch rate limit."""
    r = _Routes(store, policy)
    app = Starlette(
        routes=[
            Route("/api/v1/instance-types", r.instance_types, methods=["GET"]),
            Route("/api/v1/instances", r.list_instances, methods=["GET"]),
            Route("/api/v1/instances/{id}", r.get_instance, methods=["GET"]),
            Route("/api/v1/instances/{id}", r.rename, methods=["POST"]),
            Route("/api/v1/instance-operations/launch", r.launch, methods=["POST"]),
            Route("/api/v1/instance-operations/restart", r.restart, methods=["POST"]),
            Route("/api/v1/instance-operations/terminate", r.terminate, methods=["POST"]),
        ],
        exception_handlers={InstanceError: _on_instance_error, HTTPException: _on_http},
    )

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        given = _key_of(headers.get(b"authorization", b"").decode("latin-1"))
        account = accounts.by_key(given)
        if account is None or given is None:
            await json_response(_UNAUTHORIZED.body(), 401)(scope, receive, send)
            return
        if inactive():
            await json_response(_INACTIVE.body(), 403)(scope, receive, send)
            return
        is_launch = (scope["method"] == "POST"
                     and scope["path"].endswith("/api/v1/instance-operations/launch"))
        if is_launch and not limiter.admit(given):
            await PlainTextResponse(RATE_LIMIT_BODY, 429)(scope, receive, send)
            return
        with acting_as(account):  # it sees and launches its own instances only
            await app(scope, receive, send)

    return guarded
