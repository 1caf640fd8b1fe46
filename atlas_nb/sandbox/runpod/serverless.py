"""RunPod's serverless runtime: endpoints, jobs and worker threads.

The HTTP routes live in ``serverless_app``.

No spec exists; this follows RunPod's docs (operation reference, job states) and
runpod-python's client (``providers.md`` §1.4). Handlers are plain Python
callables run in worker threads, never on the event loop, so the server stays
responsive. A handler gets ``{"id", "input", "cancelled"}`` (``cancelled`` is a
``threading.Event`` it may watch) and returns the output, raises (the job
FAILS with ``error`` = the message), or is a generator whose items come out of
``/stream`` as ``{"output": chunk}`` (the job's output is then the list of chunks).

Endpoints made by default: ``echo`` (``{"echo": input}``), ``stream`` (yields
the words of ``input.text``), ``fail`` (raises ``input.message``) and ``slow``
(waits ``input.seconds``, default 5, unless cancelled).

Sandbox leniencies, documented: ``policy.executionTimeout`` and ``?wait=`` accept
any non-negative number of ms (RunPod's floors are 5 s and 1 s) so tests stay fast.

Test knobs (timing and outcomes only; every answer keeps RunPod's shapes and states):

* a **manual endpoint** (``add_manual_endpoint``) has no worker threads: its jobs
  wait ``IN_QUEUE`` until the test, playing the worker, moves them with a
  ``JobDriver`` (``drive(endpoint, job_id)``; see ``manual_jobs``).
* ``runsync_wait_s`` caps how long ``/runsync`` holds its answer (RunPod answers a
  job that is not finished in time with its current status); ``None``: ``?wait=``.
* ``stream_batch`` caps the chunks in one ``/stream`` answer (RunPod may spread the
  tail of a stream over several answers, even after COMPLETED); ``None``: all.
* ``stream_form`` picks the ``/stream`` answer's shape, where RunPod's sources disagree:
  ``"object"`` (default) is ``{"status", "stream": [{"output": ...}]}``, what
  runpod-python's ``Job.stream`` reads (runpod/endpoint/runner.py; its loop indexes
  ``["status"]`` and ``["stream"]``); ``"array"`` is the bare ``[{"output": ...}]`` that
  RunPod's operation reference shows (https://docs.runpod.io/serverless/endpoints/
  operation-reference, "/stream"), which carries no status: a client learns the end
  from ``/status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..cloud import CloudContext
from .manual_jobs import JobDriver, manual_handler

__all__ = [
    "FINAL", "RUNSYNC_LIMIT", "RUN_LIMIT", "STREAM_FORMS", "Endpoint", "Handler", "Job",
    "ServerlessRuntime",
]

Handler = Callable[[dict[str, Any]], Any]
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
RUN_LIMIT, RUNSYNC_LIMIT = 10 * 1024 * 1024, 20 * 1024 * 1024
STREAM_FORMS = ("object", "array")
"""``stream_form`` values: runpod-python's ``{status, stream}`` and the docs' bare array."""


def echo(job: dict[str, Any]) -> Any:
    """Returns ``{"echo": input}``."""
    return {"echo": job["input"]}


def stream(job: dict[str, Any]) -> Iterator[str]:
    """Yields the words of ``input.text``, ``input.delay_s`` (default 0.02 s) apart."""
    inp = job["input"] if isinstance(job["input"], dict) else {}
    delay = float(inp.get("delay_s", 0.02))
    for word in str(inp.get("text", "the quick brown fox jumps over the lazy dog")).split():
        if job["cancelled"].wait(delay):
            return
        yield word


def fail(job: dict[str, Any]) -> Any:
    """Always raises: the job ends FAILED with ``input.message`` as its error."""
    inp = job["input"] if isinstance(job["input"], dict) else {}
    raise RuntimeError(str(inp.get("message", "handler failed on purpose")))


def slow(job: dict[str, Any]) -> Any:
    """Waits ``input.seconds`` (default 5) unless cancelled; for timeout and cancel tests."""
    inp = job["input"] if isinstance(job["input"], dict) else {}
    seconds = float(inp.get("seconds", 5))
    job["cancelled"].wait(seconds)
    return {"slept": seconds}


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass
class Job:
    """One serverless job."""

    id: str
    input: Any
    created_at: float
    timeout_s: float | None
    webhook: str | None = None
    status: str = "IN_QUEUE"
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    error: str | None = None
    chunks: list[Any] = field(default_factory=list)
    delivered: int = 0
    generator: bool = False
    attempt: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(
        default_factory=list
    )


@dataclass
class Endpoint:
    """A serverless endpoint: a handler, worker threads and a queue."""

    id: str
    handler: Handler
    workers: int = 1
    exec_delay_s: float = 0.0
    queue: deque[Job] = field(default_factory=deque)
    jobs: dict[str, Job] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)
    busy: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    manual: bool = False  # no worker threads: a JobDriver moves each job


class ServerlessRuntime:
    """All endpoints of one RunPod cloud, their jobs and worker threads."""

    def __init__(self, ctx: CloudContext) -> None:
        self.ctx = ctx
        self.endpoints: dict[str, Endpoint] = {}
        self._cond = threading.Condition()
        self._rng = ctx.rng("runpod-jobs")
        self.stream_wait_s = float(ctx.options.get("stream_wait_s", 0.5))
        wait = ctx.options.get("runsync_wait_s")
        self.runsync_wait_s: float | None = None if wait is None else float(wait)
        batch = ctx.options.get("stream_batch")
        self.stream_batch: int | None = None if batch is None else int(batch)
        self.stream_form = str(ctx.options.get("stream_form", "object"))
        workers = int(ctx.options.get("workers", 1))
        delay = float(ctx.options.get("exec_delay_s", 0.0))
        for name, handler in (("echo", echo), ("stream", stream), ("fail", fail), ("slow", slow)):
            self.add_endpoint(name, handler, workers=workers, exec_delay_s=delay)

    def add_endpoint(
        self, endpoint_id: str, handler: Handler, *, workers: int = 1, exec_delay_s: float = 0.0
    ) -> Endpoint:
        """Register (or reconfigure, a manual one too) an endpoint whose jobs run ``handler``."""
        if workers < 1:
            raise ValueError("workers must be >= 1")
        with self._cond:
            ep = self.endpoints.get(endpoint_id)
            if ep is None:
                ep = self.endpoints[endpoint_id] = Endpoint(endpoint_id, handler)
            ep.handler, ep.workers, ep.exec_delay_s = handler, workers, exec_delay_s
            ep.manual = False
            return ep

    def add_manual_endpoint(self, endpoint_id: str) -> Endpoint:
        """Register (or make manual) an endpoint whose jobs only move when a test drives them."""
        with self._cond:
            if self.endpoints.get(endpoint_id) is not None and self.endpoints[endpoint_id].threads:
                raise ValueError(f"endpoint {endpoint_id} already has worker threads")
            ep = self.add_endpoint(endpoint_id, manual_handler)
            ep.manual = True
            return ep

    def drive(self, endpoint_id: str, job_id: str | None = None) -> JobDriver:
        """A ``JobDriver`` for a job of a manual endpoint (default: its newest job)."""
        with self._cond:
            ep = self.endpoints[endpoint_id]
            if not ep.manual:
                raise ValueError(f"endpoint {endpoint_id} runs its own jobs; drive a manual one")
            if job_id is None:
                if not ep.jobs:
                    raise LookupError(f"endpoint {endpoint_id} has no jobs yet")
                job_id = next(reversed(ep.jobs))
            return JobDriver(self, ep, ep.jobs[job_id])

    def job(self, endpoint_id: str, job_id: str) -> Job | None:
        """A job by id (refreshed for timeouts), or ``None``."""
        with self._cond:
            ep = self.endpoints.get(endpoint_id)
            job = ep.jobs.get(job_id) if ep else None
            if job is not None and ep is not None:
                self._refresh(ep, job)
            return job

    def _notify(self, job: Job) -> None:
        for loop, fut in job.waiters:
            with contextlib.suppress(RuntimeError):  # that waiter's loop may be closed already
                loop.call_soon_threadsafe(_wake, fut)
        job.waiters.clear()

    def _refresh(self, ep: Endpoint, job: Job) -> None:
        """Apply ``executionTimeout`` lazily: a running job past its deadline is TIMED_OUT."""
        if job.status != "IN_PROGRESS" or job.timeout_s is None or job.started_at is None:
            return
        if self.ctx.clock.time() - job.started_at >= job.timeout_s:
            job.status, job.error = (
                "TIMED_OUT",
                f"job exceeded executionTimeout of {job.timeout_s * 1000:.0f} ms",
            )
            job.finished_at = job.started_at + job.timeout_s
            job.cancelled.set()
            ep.failed += 1
            self._notify(job)

    def submit(self, endpoint_id: str, payload: Any, timeout_s: float | None, *, sync: bool) -> Job:
        """Queue a job (starting the endpoint's workers on first use)."""
        ident = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        with self._cond:
            if self.ctx.closing.is_set():
                raise RuntimeError("the sandbox is shutting down")
            ep = self.endpoints[endpoint_id]
            job = Job(
                f"sync-{ident}-u1" if sync else f"{ident}-u1",
                payload,
                self.ctx.clock.time(),
                timeout_s,
            )
            ep.jobs[job.id] = job
            ep.queue.append(job)
            while not ep.manual and len(ep.threads) < ep.workers:
                t = threading.Thread(
                    target=self._work,
                    args=(ep,),
                    daemon=True,
                    name=f"atlas-sandbox-runpod-{ep.id}-{len(ep.threads)}",
                )
                ep.threads.append(t)
                t.start()
            self._cond.notify_all()
        return job

    def _work(self, ep: Endpoint) -> None:
        while True:
            with self._cond:
                while not ep.queue and not self.ctx.closing.is_set():
                    self._cond.wait()
                if self.ctx.closing.is_set():
                    return
                job = ep.queue.popleft()
                if job.status != "IN_QUEUE":
                    continue
                attempt, ep.busy = self._begin(job), ep.busy + 1
            output, error = self._run(ep, job)
            with self._cond:
                ep.busy -= 1
                self._refresh(ep, job)
                if job.attempt != attempt or job.status != "IN_PROGRESS":
                    continue  # cancelled, timed out or retried meanwhile: the result is dropped
                if self.ctx.closing.is_set():
                    return  # the worker was stopped under the job, as a killed worker would be
                self._end(ep, job, output, error)

    def _begin(self, job: Job) -> int:
        """A worker takes the job (call with the lock held); its attempt number."""
        job.status, job.started_at = "IN_PROGRESS", self.ctx.clock.time()
        job.attempt += 1
        self._notify(job)
        return job.attempt

    def _end(self, ep: Endpoint, job: Job, output: Any, error: str | None) -> None:
        """The job's handler returned ``output`` or raised ``error`` (call with the lock held)."""
        job.finished_at = self.ctx.clock.time()
        if error is None:
            job.status, job.output = "COMPLETED", output
            ep.completed += 1
        else:
            job.status, job.error = "FAILED", error
            ep.failed += 1
        self._notify(job)

    def _run(self, ep: Endpoint, job: Job) -> tuple[Any, str | None]:
        if ep.exec_delay_s and job.cancelled.wait(ep.exec_delay_s):
            return None, None
        try:
            result = ep.handler({"id": job.id, "input": job.input, "cancelled": job.cancelled})
            if not inspect.isgenerator(result):
                return result, None
            job.generator = True
            chunks = []
            for chunk in result:
                chunks.append(chunk)
                with self._cond:
                    job.chunks.append(chunk)
                    self._notify(job)
                if job.cancelled.is_set():
                    result.close()
                    break
            return chunks, None
        except Exception as exc:  # the handler's failure is the job's, never the worker's
            return None, str(exc) or type(exc).__name__

    async def wait(
        self, endpoint_id: str, job: Job, timeout_s: float, until: Callable[[Job], bool]
    ) -> None:
        """Wait (without blocking the loop) until ``until(job)`` or ``timeout_s`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        ep = self.endpoints[endpoint_id]
        while not self.ctx.closing.is_set():
            fut: asyncio.Future[None] = loop.create_future()
            with self._cond:
                self._refresh(ep, job)
                if until(job):
                    return
                job.waiters.append((loop, fut))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            if (
                job.status == "IN_PROGRESS"
                and job.timeout_s is not None
                and job.started_at is not None
            ):
                # Wake at the execution deadline so a timeout is seen without polling.
                due = job.started_at + job.timeout_s - self.ctx.clock.time()
                remaining = min(remaining, max(due, 0.0) + 0.005)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, remaining)

    def cancel(self, ep: Endpoint, job: Job) -> None:
        """Cancel a job that has not finished."""
        with self._cond:
            self._refresh(ep, job)
            if job.status in FINAL:
                return
            job.status, job.finished_at = "CANCELLED", self.ctx.clock.time()
            job.cancelled.set()
            self._notify(job)

    def retry(self, ep: Endpoint, job: Job) -> bool:
        """Re-queue a FAILED or TIMED_OUT job under the same id; False otherwise."""
        with self._cond:
            self._refresh(ep, job)
            if job.status not in {"FAILED", "TIMED_OUT"}:
                return False
            job.status, job.started_at, job.finished_at = "IN_QUEUE", None, None
            job.output = job.error = None
            job.chunks, job.delivered, job.cancelled = [], 0, threading.Event()
            ep.retried += 1
            ep.queue.append(job)
            self._cond.notify_all()
            self._notify(job)
            return True

    def purge(self, ep: Endpoint) -> int:
        """Cancel every queued job; how many there were."""
        with self._cond:
            queued = [j for j in ep.queue if j.status == "IN_QUEUE"]
            for job in queued:
                job.status, job.finished_at = "CANCELLED", self.ctx.clock.time()
                self._notify(job)
            ep.queue.clear()
            return len(queued)

    def health(self, ep: Endpoint) -> dict[str, Any]:
        """The ``/health`` body."""
        with self._cond:
            for job in ep.jobs.values():
                self._refresh(ep, job)
            in_queue = sum(1 for j in ep.jobs.values() if j.status == "IN_QUEUE")
            running = sum(1 for j in ep.jobs.values() if j.status == "IN_PROGRESS")
            return {
                "jobs": {
                    "completed": ep.completed,
                    "failed": ep.failed,
                    "inProgress": running,
                    "inQueue": in_queue,
                    "retried": ep.retried,
                },
                "workers": {
                    "idle": ep.workers - ep.busy,
                    "running": ep.busy,
                    "ready": ep.workers - ep.busy,
                    "initializing": 0,
                    "throttled": 0,
                    "unhealthy": 0,
                },
            }

    def body(self, job: Job) -> dict[str, Any]:
        """The ``/status`` (and ``/runsync``) body of a job."""
        with self._cond:
            out: dict[str, Any] = {"id": job.id, "status": job.status}
            if job.started_at is not None:
                out["delayTime"] = round((job.started_at - job.created_at) * 1000)
            if job.finished_at is not None and job.started_at is not None:
                out["executionTime"] = round((job.finished_at - job.started_at) * 1000)
            if job.status == "COMPLETED":
                out["output"] = job.output
            if job.error is not None:
                out["error"] = job.error
            return out

    @property
    def stream_form(self) -> str:
        """The ``/stream`` answer's shape: ``"object"`` (runpod-python's) or ``"array"``."""
        return self._stream_form

    @stream_form.setter
    def stream_form(self, form: str) -> None:
        if form not in STREAM_FORMS:
            raise ValueError(f"stream_form={form!r}: use one of {', '.join(STREAM_FORMS)}")
        self._stream_form = form

    def take_stream(self, job: Job) -> dict[str, Any] | list[dict[str, Any]]:
        """The ``/stream`` body: chunks not yet delivered, as ``{"output": chunk}`` items,
        wrapped as ``{"status", "stream"[, "error"]}`` unless ``stream_form`` is ``"array"``."""
        with self._cond:
            fresh = job.chunks[job.delivered :][: self.stream_batch]
            job.delivered += len(fresh)
            items = [{"output": c} for c in fresh]
            if job.status == "COMPLETED" and not job.generator and job.delivered == 0:
                items, job.delivered = [{"output": job.output}], 1  # a plain handler: one chunk
            if self._stream_form == "array":
                return items
            out: dict[str, Any] = {"status": job.status, "stream": items}
            if job.error is not None:
                out["error"] = job.error
            return out

    def close(self) -> None:
        """Stop the workers (cancelling running jobs) and wake every waiter."""
        with self._cond:
            for ep in self.endpoints.values():
                for job in ep.jobs.values():
                    job.cancelled.set()
                    self._notify(job)
            self._cond.notify_all()
        for ep in list(self.endpoints.values()):
            for t in ep.threads:
                t.join(timeout=5)

