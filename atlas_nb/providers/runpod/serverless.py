"""RunPod serverless jobs over the runtime API (``https://api.runpod.ai/v2/{endpoint}/...``).

Sync runs use ``/runsync?wait=`` and then poll ``/status`` until the caller's deadline;
Ctrl-C while waiting cancels the remote job before re-raising. Streams poll
``/stream/{id}`` with backoff, unwrap ``{"output": ...}`` chunks, end on COMPLETED once
the last chunks are drained and raise the job's error on FAILED, TIMED_OUT or CANCELLED.
A stream answer is ``{"status", "stream": [...]}`` (runpod-python) or a bare array
(RunPod's docs; then ``/status`` says when the job ended: ``wire.stream_answer``);
anything else is a ``ProviderError``, never polled again. A stream has a deadline
(``timeout_s``) past which the job is cancelled and ``Timeout`` raised.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from ..._http import HttpClient
from ...errors import AtlasError, ProviderError, Timeout, ValidationError
from ...models import Job, JobRequest
from . import wire

DEFAULT_SYNC_TIMEOUT_MS = 600_000
"""A sync run without ``timeout_ms`` waits this long (RunPod's default execution timeout)."""
RUNSYNC_WAIT_MS = (1_000, 5_000)
"""``/runsync?wait=`` bounds. RunPod accepts 1 s..300 s; we hold at most 5 s because until
``/runsync`` answers we have no job id, so Ctrl-C could not cancel the job. The window
also ends ``LONG_POLL_MARGIN_S`` inside the user's ``http=`` timeout. When under 1 s is left
(a short deadline or timeout) the job is submitted with ``/run``; either way ``/status`` is
polled after the first answer until the deadline."""
POLL_S = (0.05, 1.0)
"""First and longest pause between two status or stream polls."""
DEFAULT_STREAM_TIMEOUT_S = 3600.0
"""A stream without ``timeout_s`` gives up (and cancels the job) after this long: six times
RunPod's default execution timeout of 600 s, room for a queue and a cold start."""
MAX_DRAIN_POLLS = 100
"""After COMPLETED, re-poll at most this often for late chunks (guards a server that repeats)."""

_ENDED = {"FAILED", "TIMED_OUT", "CANCELLED"}
Sleep = Callable[[float], None]
Clock = Callable[[], float]


def _path(endpoint: str, op: str, job_id: str | None = None) -> str:
    if not endpoint or not isinstance(endpoint, str):
        raise ValidationError("endpoint missing: pass endpoint='<endpoint id>' or the Job itself")
    if job_id is not None and (not job_id or not isinstance(job_id, str)):
        raise ValidationError("job id must be a non-empty string")
    tail = f"/{wire.segment(job_id)}" if job_id is not None else ""
    return f"/v2/{wire.segment(endpoint)}/{op}{tail}"


def run(client: HttpClient, request: JobRequest, *, sleep: Sleep) -> Job:
    """Submit a job; in sync mode wait for it (``Timeout`` at ``timeout_ms``)."""
    ep = request.endpoint
    body = wire.job_body(request.input, request.webhook, request.policy, request.provider_opts)
    if request.mode == "async":
        answer = client.request("POST", _path(ep, "run"), json=body, idempotent=False)
        return wire.job_from_wire(answer, ep)
    timeout_ms = request.timeout_ms or DEFAULT_SYNC_TIMEOUT_MS
    deadline = time.monotonic() + timeout_ms / 1000
    low, high = RUNSYNC_WAIT_MS
    # /runsync?wait= is in milliseconds, 1000..300000 (docs.runpod.io/serverless/endpoints/
    # send-requests, "/runsync"); the window must also end inside the user's http= timeout.
    wait = min(timeout_ms, high, int(client.poll_window(high / 1000) * 1000))
    try:
        if wait >= low:
            answer = client.request(
                "POST", _path(ep, "runsync"), json=body, params={"wait": wait},
                idempotent=False, timeout=httpx.Timeout(wait / 1000 + 30.0, connect=10.0),
            )
        else:  # /runsync would hold the answer past the deadline or the user's timeout
            answer = client.request("POST", _path(ep, "run"), json=body, idempotent=False)
    except KeyboardInterrupt as exc:
        exc.add_note(f"RunPod had not answered with a job id yet: a job on endpoint {ep} "
                     "may still run; see its requests in the RunPod console")
        raise
    job = wire.job_from_wire(answer, ep)
    if job.done:
        return job
    try:
        return _wait(client, job, deadline, timeout_ms, sleep)
    except KeyboardInterrupt:
        # The user gave up: don't leave a job running (and billing) behind them.
        with contextlib.suppress(AtlasError):
            cancel(client, job.id, ep)
        raise


def _wait(client: HttpClient, job: Job, deadline: float, timeout_ms: int, sleep: Sleep) -> Job:
    delay = POLL_S[0]
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout(
                f"job {job.id} on endpoint {job.endpoint} not finished after {timeout_ms} ms "
                f"(status {job.status}); it keeps running",
                provider=wire.PROVIDER, raw=job.raw,
                hint="get_job(job) later, cancel_job(job), or pass a larger timeout_ms",
            )
        sleep(min(delay, remaining))
        job = get(client, job.id, job.endpoint)
        if job.done:
            return job
        delay = min(delay * 1.5, POLL_S[1])


def get(client: HttpClient, job_id: str, endpoint: str) -> Job:
    """``GET /status/{id}``."""
    return wire.job_from_wire(client.request("GET", _path(endpoint, "status", job_id)),
                              endpoint, job_id)


def cancel(client: HttpClient, job_id: str, endpoint: str) -> Job:
    """``POST /cancel/{id}`` (safe to repeat, so retried like a GET)."""
    answer = client.request("POST", _path(endpoint, "cancel", job_id), idempotent=True)
    return wire.job_from_wire(answer, endpoint, job_id)


def stream(
    client: HttpClient, job_id: str, endpoint: str, *, sleep: Sleep,
    timeout_s: float | None = None, clock: Clock = time.monotonic,
) -> Iterator[Any]:
    """Validate now, then yield the job's output chunks as they arrive.

    ``timeout_s`` (default ``DEFAULT_STREAM_TIMEOUT_S``; ``math.inf``: none) bounds the
    whole stream: past it the job is cancelled and ``Timeout`` raised.
    """
    path = _path(endpoint, "stream", job_id)
    limit = _stream_limit(timeout_s)
    return _stream(client, path, job_id, endpoint, sleep, limit, clock)


def _stream_limit(timeout_s: Any) -> float:
    if timeout_s is None:
        return DEFAULT_STREAM_TIMEOUT_S
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or math.isnan(timeout_s)
        or timeout_s <= 0
    ):
        raise ValidationError(
            f"timeout_s={timeout_s!r}: pass a positive number of seconds "
            "(math.inf for no deadline)"
        )
    return float(timeout_s)


def _stream(
    client: HttpClient, path: str, job_id: str, endpoint: str, sleep: Sleep,
    timeout_s: float, clock: Clock,
) -> Iterator[Any]:
    deadline = clock() + timeout_s
    delay = POLL_S[0]
    drains = 0
    ended: Mapping[str, Any] = {}  # a final /status answer read before the latest /stream poll
    while True:
        if clock() >= deadline:
            raise _deadline(client, job_id, endpoint, timeout_s)
        body = client.request("GET", path)
        try:
            status, chunks = wire.stream_answer(body)
        except ValueError as exc:
            raise ProviderError(
                f"job {job_id} on endpoint {endpoint}: RunPod's /stream answer is not a "
                f"stream ({exc})", provider=wire.PROVIDER, raw=body,
                hint="get_job(job) reads its status and output; retry the stream later",
            ) from None
        yield from chunks
        # A bare array (RunPod's documented form) has no status: the one /status gave before
        # this poll stands; this poll drained what came meanwhile.
        answer = body if status else ended
        status = status or str(ended.get("status", "")).upper() or None
        if status in _ENDED:
            raise _job_error(client, answer, status, job_id, endpoint)
        if status == "COMPLETED":
            drains += 1
            if not chunks or drains > MAX_DRAIN_POLLS:
                return
            continue  # the last chunks may span several answers: drain them now
        if status is None and not chunks:
            job = get(client, job_id, endpoint)
            if job.done:
                ended = job.raw
                continue  # poll /stream once more for chunks that came before it ended
        delay = POLL_S[0] if chunks else min(delay * 2, POLL_S[1])
        sleep(max(0.0, min(delay, deadline - clock())))


def _deadline(client: HttpClient, job_id: str, endpoint: str, timeout_s: float) -> Timeout:
    # The caller gave up on the stream: don't leave the job running (and billing) behind.
    cancelled = True
    try:
        cancel(client, job_id, endpoint)
    except AtlasError:
        cancelled = False
    what = "cancelled it" if cancelled else "could not cancel it: it may still run"
    return Timeout(
        f"job {job_id} on endpoint {endpoint} still streaming after {timeout_s:g} s; {what}",
        provider=wire.PROVIDER,
        hint="pass a larger timeout_s to stream_job (math.inf for no deadline)",
    )


def _job_error(
    client: HttpClient, data: Mapping[str, Any], status: str, job_id: str, endpoint: str
) -> AtlasError:
    job = wire.job_from_wire(data, endpoint, job_id)
    if status == "FAILED" and job.error is None:
        with contextlib.suppress(AtlasError):  # the stream answer may not carry the error
            job = get(client, job_id, endpoint)
    where = f"job {job_id} on endpoint {endpoint}"
    if status == "TIMED_OUT":
        return Timeout(f"{where} timed out", provider=wire.PROVIDER, raw=job.raw)
    if status == "CANCELLED":
        return ProviderError(f"{where} was cancelled", provider=wire.PROVIDER, raw=job.raw)
    return ProviderError(f"{where} failed: {job.error or 'no error message'}",
                         provider=wire.PROVIDER, raw=job.raw)
