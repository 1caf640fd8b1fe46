"""Manual serverless jobs: a test plays the worker of a RunPod endpoint, step by step.

An endpoint made with ``ServerlessRuntime.add_manual_endpoint`` (``sb.runpod.add_manual_endpoint``)
starts no worker threads, so its jobs wait ``IN_QUEUE`` until the test moves them with the
``JobDriver`` that ``drive(endpoint, job_id)`` returns: ``start()``, ``emit(*chunks)``,
``complete(output)``, ``fail(error)``, ``cancel()``. Every step goes through the runtime's
own bookkeeping, so ``/status``, ``/stream``, ``/runsync`` and ``/health`` answer exactly as
they would for a real job at that point: the knob controls when things happen, never the shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .serverless import Endpoint, Job, ServerlessRuntime

__all__ = ["JobDriver", "manual_handler"]


def manual_handler(job: dict[str, Any]) -> Any:
    """The handler of a manual endpoint: never called, its jobs are moved by a ``JobDriver``."""
    raise RuntimeError("a manual endpoint's jobs are moved by the test (JobDriver)")


_CHUNKS: Any = object()  # complete()'s default: the emitted chunks


class JobDriver:
    """One job of a manual endpoint, moved through RunPod's states by a test (its worker).

    Each step does what a worker does at that point, with the runtime's own bookkeeping
    (``delayTime``/``executionTime`` from the clock, waiters woken, ``/health`` counts);
    a step the job's current state does not allow raises ``ValueError``. Steps return
    the driver, so they chain: ``drive("ep").start().emit("a").complete()``.
    """

    def __init__(self, rt: ServerlessRuntime, ep: Endpoint, job: Job) -> None:
        self._rt, self._ep, self._job = rt, ep, job

    def __repr__(self) -> str:
        return f"JobDriver({self._ep.id}/{self._job.id}, {self.status})"

    @property
    def id(self) -> str:
        """The job id."""
        return self._job.id

    @property
    def input(self) -> Any:
        """The job's ``input``, as submitted."""
        return self._job.input

    @property
    def status(self) -> str:
        """The job's RunPod status now (a timed-out job reads ``TIMED_OUT``)."""
        with self._rt._cond:
            self._rt._refresh(self._ep, self._job)
            return self._job.status

    def _expect(self, status: str, step: str) -> None:
        self._rt._refresh(self._ep, self._job)
        if self._job.status != status:
            raise ValueError(f"cannot {step} job {self._job.id}: it is {self._job.status}")

    def start(self) -> JobDriver:
        """A worker takes the job off the queue: IN_QUEUE -> IN_PROGRESS."""
        with self._rt._cond:
            self._expect("IN_QUEUE", "start")
            self._ep.queue.remove(self._job)
            self._rt._begin(self._job)
        return self

    def emit(self, *chunks: Any) -> JobDriver:
        """A generator handler yields ``chunks`` (each one ``{"output": chunk}`` on ``/stream``)."""
        with self._rt._cond:
            self._expect("IN_PROGRESS", "emit on")
            self._job.generator = True
            self._job.chunks.extend(chunks)
            self._rt._notify(self._job)
        return self

    def complete(self, output: Any = _CHUNKS) -> JobDriver:
        """The handler returns ``output`` (default: the emitted chunks, as for a generator)."""
        with self._rt._cond:
            self._expect("IN_PROGRESS", "complete")
            if output is _CHUNKS:
                output = list(self._job.chunks) if self._job.generator else None
            self._rt._end(self._ep, self._job, output, None)
        return self

    def fail(self, error: str) -> JobDriver:
        """The handler raises: the job ends FAILED with ``error``."""
        with self._rt._cond:
            self._expect("IN_PROGRESS", "fail")
            self._rt._end(self._ep, self._job, None, error)
        return self

    def cancel(self) -> JobDriver:
        """Cancelled from elsewhere (the console, another client), as ``/cancel`` would."""
        self._rt.cancel(self._ep, self._job)
        return self
