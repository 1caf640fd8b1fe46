"""RunPod REST v2 (``S/runpod/rest``): pods, pod actions and logs, the GPU/CPU catalog.

Faithful to ``specs/runpod/rest-v2-openapi.json``: problem+json errors, 201 on
create, 204 on delete and on the ``terminate`` action, 409 for an action the
pod's status does not allow, 422 with ``errors`` for a body that breaks the
schema, 400 for a well-formed body the API refuses (cross-field rules, no
capacity), ``RateLimit``/``RateLimit-Policy`` on every authenticated answer.
``GET /v2/pods`` accepts only ``includeClusterPods``, as in the spec: filter
client-side (unknown query parameters are ignored, and reported as violations).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..accounts import Accounts, acting_as
from ..cloud import ASGIApp, BadBody, Message, Receive, Scope, Send, iso, json_response, read_json
from ..ratelimit import RateLimiter
from ..schemas import component_errors
from .catalog import Catalog
from .pods import PodError, PodStore

__all__ = ["SPEC", "build_rest_app", "problem"]

SPEC = "runpod/rest-v2-openapi.json"
_CC = re.compile(r"^[A-Z]{2}$")
_CUDA = re.compile(r"^\d+\.\d+$")
_MIN_CUDA = re.compile(r"^\d+(\.\d+)?$")


def problem(
    status: int,
    detail: str,
    headers: Mapping[str, str] | None = None,
    *,
    errors: list[str] | None = None,
) -> Response:
    """An RFC 9457 ``application/problem+json`` answer (the spec's ``ErrorResponse``)."""
    body: dict[str, Any] = {"title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return json_response(body, status, headers, media_type="application/problem+json")


def _unprocessable(errors: list[str]) -> Response:
    return problem(422, "Request validation failed.", errors=errors)


class _Routes:
    def __init__(self, store: PodStore, catalog: Catalog) -> None:
        self.store = store
        self.catalog = catalog

    async def list_pods(self, request: Request) -> Response:
        flag = request.query_params.get("includeClusterPods", "false")
        if flag not in {"true", "false"}:
            return _unprocessable([f"includeClusterPods: {flag!r} is not a boolean"])
        now = self.store.ctx.clock.time()
        return json_response({"pods": [self.store.wire(p, now=now) for p in self.store.all()]})

    async def create_pod(self, request: Request) -> Response:
        body = await read_json(request)
        errors = component_errors(SPEC, "CreatePodRequest", body)
        if errors:
            return _unprocessable(errors)
        if ("gpu" in body) == ("cpu" in body):
            return problem(400, "exactly one of gpu or cpu must be set")
        if "templateId" in body:
            return problem(404, f"template {body['templateId']} not found")
        mounts = body.get("mounts") or {}
        if "persistent" in mounts and "network" in mounts:
            return problem(400, "mounts.persistent and mounts.network are mutually exclusive")
        if "cpu" in body and "persistent" in mounts:
            return problem(400, "mounts.persistent is not allowed on CPU pods")
        gpu = body.get("gpu") or {}
        if gpu.get("allowedCudaVersions") and gpu.get("minCudaVersion"):
            return problem(400, "gpu.allowedCudaVersions and gpu.minCudaVersion are exclusive")
        pod = self.store.create(
            name=body["name"],
            image=body["image"],
            gpu_id=gpu.get("id"),
            gpu_count=int(gpu.get("count", 1)),
            cpu=body.get("cpu"),
            cloud=body.get("cloud", "SECURE"),
            data_center_ids=body.get("dataCenterIds") or (),
            ports=body.get("ports") or (),
            env=body.get("env") or {},
            disk=int(body.get("disk", 50)),
            args=body.get("args", ""),
            mounts=mounts,
            cuda_allowed=gpu.get("allowedCudaVersions") or (),
            cuda_min=gpu.get("minCudaVersion"),
            global_networking=bool(body.get("globalNetworking", False)),
            registry=body.get("registry"),
        )
        return json_response(self.store.wire(pod), 201)

    async def get_pod(self, request: Request) -> Response:
        return json_response(self.store.wire(self.store.get(request.path_params["id"])))

    async def update_pod(self, request: Request) -> Response:
        pod = self.store.get(request.path_params["id"])
        body = await read_json(request)
        errors = component_errors(SPEC, "UpdatePodRequest", body)
        if errors:
            return _unprocessable(errors)
        if "templateId" in body:
            return problem(404, f"template {body['templateId']} not found")
        for key, attr in [
            ("name", "name"),
            ("image", "image"),
            ("args", "args"),
            ("disk", "disk"),
            ("ports", "ports"),
            ("env", "env"),
            ("registry", "registry"),
            ("locked", "locked"),
            ("globalNetworking", "global_networking"),
        ]:
            if key in body:
                setattr(pod, attr, body[key])
        return json_response(self.store.wire(pod))

    async def delete_pod(self, request: Request) -> Response:
        self.store.act(request.path_params["id"], "terminate")
        return Response(status_code=204)

    async def pod_action(self, request: Request) -> Response:
        pod_id = request.path_params["id"]
        self.store.get(pod_id)  # 404 before 422, as a router resolving the pod would
        body = await read_json(request)
        errors = component_errors(SPEC, "PodActionRequest", body)
        if errors:
            return _unprocessable(errors)
        pod = self.store.act(pod_id, body["action"])
        if body["action"] == "terminate":
            return Response(status_code=204)
        return json_response(self.store.wire(pod))

    async def pod_logs(self, request: Request) -> Response:
        pod = self.store.get(request.path_params["id"])
        source = request.query_params.get("source")
        tail_text = request.query_params.get("tail", "100")
        if source not in {None, "container", "system"}:
            return _unprocessable([f"source: {source!r} is not one of ['container', 'system']"])
        if not tail_text.isdigit() or int(tail_text) > 5000:
            return _unprocessable([f"tail: {tail_text!r} must be an integer from 0 to 5000"])
        tail = int(tail_text)
        lines = self.store.log_lines(pod, source)
        lines = lines[-tail:] if tail else []
        events = [
            f"id: {iso(ts)}/{i:012d}\n"
            f"data: {json.dumps({'ts': iso(ts), 'source': src, 'line': line})}\n\n"
            for i, (ts, src, line) in enumerate(lines, 1)
        ]
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return Response("".join(events), headers=headers, media_type="text/event-stream")

    def _filters(self, request: Request) -> dict[str, Any]:
        q = request.query_params
        include = [v for v in q.get("include", "").split(",") if v]
        products = [v for v in q.get("product", "").split(",") if v]
        countries = [v for v in q.get("countryCodes", "").split(",") if v]
        cudas = [v for v in q.get("cudaVersions", "").split(",") if v]
        min_cuda = q.get("minCudaVersion")
        errors = [
            f"include: {v!r} is not one of ['AVAILABILITY']" for v in include if v != "AVAILABILITY"
        ]
        errors += [
            f"product: {v!r} is not one of ['POD', 'CLUSTER', 'SERVERLESS']"
            for v in products
            if v not in {"POD", "CLUSTER", "SERVERLESS"}
        ]
        errors += [
            f"countryCodes: {v!r} does not match '^[A-Z]{{2}}$'"
            for v in countries
            if not _CC.match(v)
        ]
        errors += [
            f"cudaVersions: {v!r} does not match '^\\d+\\.\\d+$'"
            for v in cudas
            if not _CUDA.match(v)
        ]
        if min_cuda is not None and not _MIN_CUDA.match(min_cuda):
            errors.append(f"minCudaVersion: {min_cuda!r} does not match '^\\d+(\\.\\d+)?$'")
        count_text = q.get("count", "1")
        if not count_text.isdigit() or int(count_text) < 1:
            errors.append(f"count: {count_text!r} is not an integer >= 1")
        cloud = q.get("cloud", "SECURE")
        if cloud not in {"SECURE", "COMMUNITY"}:
            errors.append(f"cloud: {cloud!r} is not one of ['SECURE', 'COMMUNITY']")
        if errors:
            raise _Invalid(errors)
        wants = bool(include)
        scoped = [
            k
            for k in ("product", "count", "cloud", "countryCodes", "cudaVersions", "minCudaVersion")
            if k in q
        ]
        if wants and not products:
            raise PodError(400, "product is required with include=AVAILABILITY")
        if not wants and scoped:
            raise PodError(400, f"{', '.join(scoped)} valid only with include=AVAILABILITY")
        if cudas and min_cuda:
            raise PodError(400, "cudaVersions and minCudaVersion are mutually exclusive")
        return {
            "availability": wants,
            "cloud": cloud,
            "count": int(count_text),
            "country_codes": countries,
            "cuda_versions": cudas,
            "min_cuda": min_cuda,
        }

    async def list_gpus(self, request: Request) -> Response:
        f = self._filters(request)
        countries = set(f["country_codes"])
        gpus = []
        for row in self.catalog.gpus.values():
            if countries and not any(
                self.catalog.data_centers.get(dc["id"], {}).get("country") in countries
                for dc in row["dataCenters"]
            ):
                continue
            gpus.append(self.catalog.v2_gpu(row, **f))
        return json_response({"gpus": gpus})

    async def get_gpu(self, request: Request) -> Response:
        f = self._filters(request)
        row = self.catalog.gpu(request.path_params["id"])
        if row is None:
            return problem(404, f"GPU type {request.path_params['id']} not found")
        return json_response(self.catalog.v2_gpu(row, **f))

    async def list_cpus(self, request: Request) -> Response:
        return json_response({"cpus": [self.catalog.v2_cpu(r) for r in self.catalog.cpus.values()]})

    async def get_cpu(self, request: Request) -> Response:
        row = self.catalog.cpus.get(request.path_params["id"].split("-")[0])
        if row is None:
            return problem(404, f"CPU type {request.path_params['id']} not found")
        return json_response(self.catalog.v2_cpu(row))


class _Invalid(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


async def _on_pod_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PodError)
    return problem(exc.status, exc.detail)


async def _on_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Invalid)
    return _unprocessable(exc.errors)


async def _on_bad_body(request: Request, exc: Exception) -> Response:
    return problem(400, str(exc))


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return problem(404, f"no route {request.method} {request.url.path}")
    return problem(exc.status_code, str(exc.detail), exc.headers)


def build_rest_app(
    store: PodStore, catalog: Catalog, limiter: RateLimiter, accounts: Accounts
) -> ASGIApp:
    """The REST v2 app behind bearer auth (any of ``accounts``' keys) and rate-limit headers."""
    r = _Routes(store, catalog)
    app = Starlette(
        routes=[
            Route("/v2/pods", r.list_pods, methods=["GET"]),
            Route("/v2/pods", r.create_pod, methods=["POST"]),
            Route("/v2/pods/{id}", r.get_pod, methods=["GET"]),
            Route("/v2/pods/{id}", r.update_pod, methods=["PATCH"]),
            Route("/v2/pods/{id}", r.delete_pod, methods=["DELETE"]),
            Route("/v2/pods/{id}/action", r.pod_action, methods=["POST"]),
            Route("/v2/pods/{id}/logs", r.pod_logs, methods=["GET"]),
            Route("/v2/catalog/gpus", r.list_gpus, methods=["GET"]),
            Route("/v2/catalog/gpus/{id}", r.get_gpu, methods=["GET"]),
            Route("/v2/catalog/cpus", r.list_cpus, methods=["GET"]),
            Route("/v2/catalog/cpus/{id}", r.get_cpu, methods=["GET"]),
        ],
        exception_handlers={
            PodError: _on_pod_error,
            _Invalid: _on_invalid,
            BadBody: _on_bad_body,
            HTTPException: _on_http,
        },
    )

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        account = accounts.by_key(token.strip()) if scheme.lower() == "bearer" else None
        if account is None:
            detail = "missing bearer token" if not token.strip() else "invalid bearer token"
            await problem(401, detail)(scope, receive, send)
            return
        limit_headers, retry_after = limiter.hit(token.strip())
        if retry_after is not None:
            detail = "rate limit exceeded for the minute window"
            await problem(429, detail, dict(limit_headers))(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in limit_headers]

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        with acting_as(account):  # the pods it sees and makes are its own
            await app(scope, receive, send_with_limits)

    return guarded
