"""``run``, ``stream`` and ``jobs``: serverless jobs. Ctrl-C cancels the remote job."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import AtlasError, ProviderError, Timeout
from .options import out_option, provider_option
from .registry import command

if TYPE_CHECKING:  # the models load pydantic, the facade httpx: only when a handler runs
    from ...models import Job
    from ..call import Call

__all__ = ["jobs", "run", "stream", "wait_job"]

_POLL_S = (0.05, 1.0)


def _input(call: Call) -> Any:
    given = call.args.input
    has_body = call.cell is not None and call.cell.strip().rstrip(";").strip() != ""
    if given is not None and has_body:
        raise call.usage("give the job input either in the cell body or on the line, not both")
    if given is None:
        return call.body()
    if isinstance(given, str):
        with contextlib.suppress(ValueError):
            return json.loads(given)
    return given


def wait_job(job: Job, *, timeout_s: float | None, poll: tuple[float, float] = _POLL_S,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> Job:
    """Poll until ``job`` is done; Ctrl-C cancels it remotely, ``Timeout`` at the deadline
    (the job keeps running then)."""
    from ... import facade
    from ..joblog import JOBS

    deadline = None if timeout_s is None else clock() + timeout_s
    delay = poll[0]
    try:
        while not job.done:
            if deadline is not None and clock() >= deadline:
                raise Timeout(f"job {job.id} not done after {timeout_s:g} s (status "
                              f"{job.status}); it keeps running", provider=job.provider,
                              hint="see %atlas jobs, or cancel it with atlas_nb.cancel_job")
            wait = delay if deadline is None else max(0.0, min(delay, deadline - clock()))
            sleep(wait)
            delay = min(delay * 2, poll[1])
            job = facade.get_job(job)
            JOBS.record(job)
    except KeyboardInterrupt:
        with contextlib.suppress(AtlasError):  # the interrupt matters more than a failed cancel
            JOBS.record(facade.cancel_job(job))
        raise
    return job


def _fail_if_unsuccessful(job: Job) -> None:
    if job.status != "completed":
        detail = f": {job.error}" if job.error else ""
        raise ProviderError(f"job {job.id} on {job.endpoint} ended {job.status}{detail}",
                            provider=job.provider)


def _run_args(p: argparse.ArgumentParser) -> None:
    provider_option(p)
    p.add_argument("--endpoint", "-e", required=True, metavar="EP")
    p.add_argument("input", nargs="?", metavar="INPUT",
                   help="the input as $var, when there is no cell body")
    p.add_argument("--sync", action="store_true", help="wait for the result")
    p.add_argument("--timeout", type=float, metavar="S", help="with --sync: give up after S s")
    p.add_argument("--stream", action="store_true",
                   help="stream the output into a live DataFrame")
    p.add_argument("--panel", action="store_true", help="open the JobPanel instead")
    out_option(p)


@command("run", help="submit a serverless job (cell body = input)",
         description="Submit a serverless job. The cell body is the job input: JSON, YAML or "
                     "$var. Ctrl-C cancels the remote job.",
         args=_run_args)
def run(call: Call) -> Any:
    """Submit a job; with --sync wait for it, with --stream stream it into a DataFrame."""
    from ... import facade
    from .. import frames
    from ..joblog import JOBS

    args = call.args
    provider = call.provider(args.provider)
    if args.panel:
        from ..widgets.job_panel import JobPanel

        data = _input(call)
        return JobPanel(provider=provider, endpoint=args.endpoint, input=data,
                        refresh_interval=call.magics.refresh_interval)
    if args.timeout is not None and not args.sync:
        raise call.usage("--timeout applies to --sync")
    if args.sync and args.stream:
        raise call.usage("use --sync or --stream, not both")
    data = _input(call)
    job = facade.run_job(provider=provider, endpoint=args.endpoint, input=data, mode="async")
    JOBS.record(job)
    call.store(job)  # kept even if the wait fails or is interrupted
    if args.stream:
        return frames.stream(job, collapse=True)
    if args.sync:
        job = wait_job(job, timeout_s=args.timeout)
        call.store(job)
        _fail_if_unsuccessful(job)
    return job


def _stream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", metavar="JOB", help="a job id or a $job")
    p.add_argument("--endpoint", "-e", metavar="EP", help="needed with a bare job id")
    provider_option(p)
    out_option(p)


@command("stream", help="stream a job into a live DataFrame",
         description="Stream a job's output into a DataFrame that grows live; returns the "
                     "complete frame. Ctrl-C cancels the remote job.",
         args=_stream_args)
def stream(call: Call) -> Any:
    """Stream an existing job (an id with --endpoint, an id from this session, or a $job)."""
    from ...models import Job
    from .. import frames
    from ..joblog import JOBS

    args = call.args
    job: Any = args.job
    if isinstance(job, str) and not args.endpoint:
        known = [e.job for e in JOBS.entries() if e.job.id == job]
        if not known:
            raise call.usage(f"job {job} is not from this session: pass --endpoint EP")
        job = known[-1]
    if not isinstance(job, (str, Job)):
        raise call.usage(f"JOB must be a job id or a Job, not {type(job).__name__}")
    provider = args.provider or (None if isinstance(job, Job) else call.provider())
    return frames.stream(job, endpoint=args.endpoint, provider=provider, collapse=True)


def _jobs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-refresh", action="store_true",
                   help="do not poll unfinished jobs for their current state")
    out_option(p)


@command("jobs", help="this session's jobs",
         description="This session's jobs, with status, timings and output.", args=_jobs_args)
def jobs(call: Call) -> Any:
    """This session's jobs (unfinished ones polled once unless --no-refresh)."""
    from .. import frames

    return frames.jobs(refresh=not call.args.no_refresh)
