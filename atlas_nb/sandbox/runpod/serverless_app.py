"""The HTTP face of RunPod's serverless runtime: ``S/runpod/serverless/v2/{endpoint_id}/...``.

Routes as runpod-python calls them (``providers.md`` §1.4): ``run``, ``runsync[?wait=ms]``,
``status/{id}``, ``stream/{id}``, ``cancel/{id}``, ``retry/{id}``, ``health`` and
``purge-queue``. Auth is ``Authorization: Bearer <key>`` or, as RunPod's curl examples
send it, the bare key. Errors are ``{"error": "..."}`` (RunPod documents no shape).
``/stream`` answers runpod-python's ``{"status", "stream": [...]}`` or, with the runtime's
``stream_form = "array"``, the bare item list RunPod's operation reference shows.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..accounts import Accounts
from ..cloud import ASGIApp, BadBody, bearer_token, json_response, read_json
from .serverless import FINAL, RUN_LIMIT, RUNSYNC_LIMIT, Endpoint, Job, ServerlessRuntime

__all__ = ["build_serverless_app"]


def build_serverless_app(rt: ServerlessRuntime, accounts: Accounts) -> ASGIApp:
    """The queue API: run, runsync, status, stream, cancel, retry, health, purge-queue.

    Endpoints are the sandbox's (a test registers them), so every account may use them."""

    def guard(request: Request) -> Endpoint:
        # RunPod's docs also send the bare key
        if accounts.by_key(bearer_token(request, bare_ok=True)) is None:
            raise HTTPException(401, "Unauthorized")
        ep = rt.endpoints.get(request.path_params["endpoint"])
        if ep is None:
            raise HTTPException(404, f"endpoint {request.path_params['endpoint']} not found")
        return ep

    def job_of(request: Request, ep: Endpoint) -> Job:
        job = rt.job(ep.id, request.path_params["job"])
        if job is None:
            raise HTTPException(404, f"job {request.path_params['job']} not found")
        return job

    async def submit(request: Request, *, sync: bool) -> tuple[Endpoint, Job]:
        ep = guard(request)
        limit = RUNSYNC_LIMIT if sync else RUN_LIMIT
        if int(request.headers.get("content-length") or 0) > limit:
            raise HTTPException(413, f"request body exceeds {limit // (1024 * 1024)} MB")
        body = await read_json(request)
        if not isinstance(body, dict) or "input" not in body:
            raise HTTPException(400, "body must be a JSON object with an 'input' key")
        policy = body.get("policy") or {}
        timeout_ms = policy.get("executionTimeout", 600_000) if isinstance(policy, dict) else None
        if (
            not isinstance(timeout_ms, int | float)
            or isinstance(timeout_ms, bool)
            or timeout_ms < 0
        ):
            raise HTTPException(400, "policy.executionTimeout must be a number of milliseconds")
        try:
            return ep, rt.submit(ep.id, body["input"], timeout_ms / 1000, sync=sync)
        except RuntimeError as exc:  # shutting down
            raise HTTPException(503, str(exc)) from None

    async def run(request: Request) -> Response:
        _ep, job = await submit(request, sync=False)
        return json_response({"id": job.id, "status": "IN_QUEUE"})

    async def runsync(request: Request) -> Response:
        wait_text = request.query_params.get("wait", "90000")
        if not wait_text.isdigit():
            raise HTTPException(400, "wait must be a whole number of milliseconds")
        ep, job = await submit(request, sync=True)
        hold_s = min(int(wait_text), 300_000) / 1000
        if rt.runsync_wait_s is not None:  # the test knob: answer sooner, with the job's status
            hold_s = min(hold_s, rt.runsync_wait_s)
        await rt.wait(ep.id, job, hold_s, lambda j: j.status in FINAL)
        return json_response(rt.body(job))

    async def status(request: Request) -> Response:
        ep = guard(request)
        return json_response(rt.body(job_of(request, ep)))

    async def stream_(request: Request) -> Response:
        ep = guard(request)
        job = job_of(request, ep)
        await rt.wait(
            ep.id, job, rt.stream_wait_s, lambda j: len(j.chunks) > j.delivered or j.status in FINAL
        )
        return json_response(rt.take_stream(job))

    async def cancel(request: Request) -> Response:
        ep = guard(request)
        job = job_of(request, ep)
        rt.cancel(ep, job)
        return json_response({"id": job.id, "status": job.status})

    async def retry(request: Request) -> Response:
        ep = guard(request)
        job = job_of(request, ep)
        if not rt.retry(ep, job):
            raise HTTPException(
                400, f"job {job.id} is {job.status}; only FAILED or TIMED_OUT jobs can be retried"
            )
        return json_response({"id": job.id, "status": "IN_QUEUE"})

    async def health(request: Request) -> Response:
        return json_response(rt.health(guard(request)))

    async def purge(request: Request) -> Response:
        return json_response({"removed": rt.purge(guard(request)), "status": "completed"})

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return json_response({"error": exc.detail}, exc.status_code, exc.headers)

    async def on_bad_body(request: Request, exc: Exception) -> Response:
        return json_response({"error": str(exc)}, 400)

    base = "/v2/{endpoint}"
    return Starlette(
        routes=[
            Route(f"{base}/run", run, methods=["POST"]),
            Route(f"{base}/runsync", runsync, methods=["POST"]),
            Route(f"{base}/status/{{job}}", status, methods=["GET", "POST"]),
            Route(f"{base}/stream/{{job}}", stream_, methods=["GET", "POST"]),
            Route(f"{base}/cancel/{{job}}", cancel, methods=["POST"]),
            Route(f"{base}/retry/{{job}}", retry, methods=["POST"]),
            Route(f"{base}/health", health, methods=["GET"]),
            Route(f"{base}/purge-queue", purge, methods=["POST"]),
        ],
        exception_handlers={HTTPException: on_http, BadBody: on_bad_body},
    )
