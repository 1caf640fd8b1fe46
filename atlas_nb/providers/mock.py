"""An in-memory provider for tests, demos and docs: no network, no key.

Computes go provisioning -> running after ``MockProvider.provision_delay_s``
(default 0: immediately). Jobs go in_queue -> in_progress -> completed over
successive polls, and echo their input. State is shared by every instance in
the process and is thread safe; ``MockProvider.reset()`` clears it.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from ..errors import NotFound, ProviderError, Timeout, ValidationError
from ..gpus import GPUS, CanonicalIds, family
from ..models import Compute, ComputeRequest, GpuType, Job, JobRequest, PortMapping
from .base import CAPABILITIES

# Family -> (on-demand, spot) USD/h per GPU.
_PRICES = {"h100": (2.99, 1.99), "a100_80g": (1.64, 1.05), "l40s": (0.86, 0.5),
           "rtx_4090": (0.69, 0.35), "a10": (0.6, None)}
_JOB_STEPS = ("in_queue", "in_progress", "completed")


@dataclass
class _Pod:
    compute: Compute
    env: dict[str, str]
    ready_at: float


@dataclass
class _Job:
    job: Job
    polls: int = 0
    chunks: list[Any] = field(default_factory=list)


class _Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pods: dict[str, _Pod] = {}
        self.jobs: dict[str, _Job] = {}
        self.ids = itertools.count(1)


_STORE = _Store()


class MockProvider:
    """In-memory provider implementing every capability with realistic state changes."""

    name = "mock"
    offline: ClassVar[bool] = True  # needs no account: not part of provider="all"
    gpu_ids: ClassVar[CanonicalIds] = CanonicalIds("mock")
    provision_delay_s: ClassVar[float] = 0.0
    CAPABILITIES: ClassVar[frozenset[str]] = CAPABILITIES - {"global_networking", "logs"}

    def __init__(self, **_options: Any) -> None:
        # Options (api_key, base_url, http) are accepted and ignored: nothing goes on the wire.
        pass

    def __repr__(self) -> str:
        return "MockProvider()"

    @staticmethod
    def reset() -> None:
        """Forget every compute and job."""
        with _STORE.lock:
            _STORE.pods.clear()
            _STORE.jobs.clear()

    @staticmethod
    def pod_env(compute_id: str) -> dict[str, str]:
        """The env a pod was given (what the container would see); for tests."""
        with _STORE.lock:
            return dict(_pod(compute_id).env)

    def capabilities(self) -> frozenset[str]:
        return self.CAPABILITIES

    # -- computes -------------------------------------------------------------------
    def spawn_compute(self, request: ComputeRequest) -> Compute:
        with _STORE.lock:
            cid = f"mock-{next(_STORE.ids):04d}-{secrets.token_hex(3)}"
            gpu = request.gpu
            price = _PRICES.get(gpu or "", _PRICES.get(family(gpu) if gpu else "", (0.2, None)))
            cost = (price[1] or price[0]) if request.spot else price[0]
            compute = Compute(
                id=cid,
                provider=self.name,
                status="provisioning",
                public_ip="203.0.113.7",
                ports=request.ports,
                gpu_type=gpu,
                gpu_count=request.gpu_count if gpu else 0,
                cost_per_hour=cost * (request.gpu_count if gpu else 1),
                region=request.region_hints[0] if request.region_hints else "mock-1",
                image=request.image,
                name=request.name or cid,
                created_at=datetime.now(UTC),
                raw={"id": cid, "spot": request.spot, "image": request.image},
            )
            _STORE.pods[cid] = _Pod(compute, dict(request.env),
                                    time.monotonic() + self.provision_delay_s)
            return self._advance(cid)

    def _advance(self, cid: str) -> Compute:
        pod = _pod(cid)
        c = pod.compute
        if c.status == "provisioning" and time.monotonic() >= pod.ready_at:
            ports = tuple(
                PortMapping(
                    internal=p.internal,
                    external=p.internal if p.protocol == "http" else 40000 + p.internal,
                    protocol=p.protocol,
                    url=(f"https://{cid}-{p.internal}.mock.local" if p.protocol == "http"
                         else f"tcp://203.0.113.7:{40000 + p.internal}"),
                )
                for p in c.ports
            )
            pod.compute = c.model_copy(update={"status": "running", "ports": ports})
        return pod.compute

    def get_compute(self, compute_id: str) -> Compute:
        with _STORE.lock:
            return self._advance(compute_id)

    def list_compute(
        self, *, status: str | None = None, name: str | None = None, gpu: str | None = None,
        region: str | None = None,
    ) -> list[Compute]:
        with _STORE.lock:
            out = [self._advance(cid) for cid in list(_STORE.pods)]
        return [
            c for c in out
            if (status is None or c.status == status)
            and (name is None or (c.name or "").startswith(name))
            and (gpu is None or (c.gpu_type is not None and family(c.gpu_type) == family(gpu)))
            and (region is None or c.region == region)
        ]

    def _set(self, cid: str, allowed: tuple[str, ...], status: str) -> Compute:
        with _STORE.lock:
            c = self._advance(cid)
            if c.status not in allowed:
                raise ProviderError(f"cannot move {cid} from {c.status} to {status}",
                                    provider=self.name, status=409)
            pod = _STORE.pods[cid]
            pod.compute = c.model_copy(update={"status": status})
            return pod.compute

    def stop(self, compute_id: str) -> Compute:
        return self._set(compute_id, ("running", "stopped"), "stopped")

    def start(self, compute_id: str) -> Compute:
        return self._set(compute_id, ("stopped", "running"), "running")

    def terminate(self, compute_id: str) -> None:
        with _STORE.lock:
            pod = _STORE.pods.get(compute_id)
            if pod is not None:
                pod.compute = pod.compute.model_copy(update={"status": "terminated",
                                                             "cost_per_hour": 0.0})

    # -- jobs -----------------------------------------------------------------------
    def run_job(self, request: JobRequest) -> Job:
        with _STORE.lock:
            jid = f"job-{next(_STORE.ids):05d}"
            chunks = [{"token": i, "echo": request.input} for i in range(3)]
            job = Job(id=jid, endpoint=request.endpoint, provider=self.name,
                      created_at=datetime.now(UTC), raw={"id": jid, "status": "IN_QUEUE"})
            _STORE.jobs[jid] = _Job(job, chunks=chunks)
        if request.mode == "sync":
            deadline = time.monotonic() + (request.timeout_ms or 60_000) / 1000
            while not job.done:
                if time.monotonic() > deadline:
                    raise Timeout(f"job {jid} not done after {request.timeout_ms} ms",
                                  provider=self.name)
                job = self.get_job(jid, endpoint=request.endpoint)
        return job

    def _job(self, job_id: str, endpoint: str) -> _Job:
        entry = _STORE.jobs.get(job_id)
        if entry is None or entry.job.endpoint != endpoint:
            raise NotFound(f"no job {job_id} on endpoint {endpoint}", provider=self.name)
        return entry

    def get_job(self, job_id: str, *, endpoint: str) -> Job:
        with _STORE.lock:
            entry = self._job(job_id, endpoint)
            if not entry.job.done:
                entry.polls += 1
                status = _JOB_STEPS[min(entry.polls, len(_JOB_STEPS) - 1)]
                update: dict[str, Any] = {"status": status, "delay_time_ms": 5}
                if status == "completed":
                    update |= {"output": {"echo": entry.chunks[0]["echo"]},
                               "execution_time_ms": 10 * entry.polls}
                entry.job = entry.job.model_copy(update=update)
            return entry.job

    def cancel_job(self, job_id: str, *, endpoint: str) -> Job:
        with _STORE.lock:
            entry = self._job(job_id, endpoint)
            if not entry.job.done:
                entry.job = entry.job.model_copy(update={"status": "cancelled"})
            return entry.job

    def stream_job(
        self, job_id: str, *, endpoint: str, timeout_s: float | None = None
    ) -> Iterator[Any]:  # a mock job streams at once: no deadline to keep
        with _STORE.lock:
            entry = self._job(job_id, endpoint)
        return self._stream(entry, job_id, endpoint)

    def _stream(self, entry: _Job, job_id: str, endpoint: str) -> Iterator[Any]:
        for chunk in entry.chunks:
            with _STORE.lock:
                if entry.job.status == "cancelled":
                    raise ProviderError(f"job {job_id} was cancelled", provider=self.name)
            yield chunk
        job = self.get_job(job_id, endpoint=endpoint)
        while not job.done:
            job = self.get_job(job_id, endpoint=endpoint)
        if job.status != "completed":  # the contract: a stream ends only on success
            raise ProviderError(f"job {job_id} was {job.status}", provider=self.name)

    # -- catalog --------------------------------------------------------------------
    def list_gpu_types(self) -> list[GpuType]:
        return [
            GpuType(provider=self.name, id=name, canonical=name, display_name=GPUS[name].display,
                    memory_gb=GPUS[name].memory_gb, price_per_hour=on, spot_price_per_hour=spot,
                    stock="high", cloud_type="any", regions=("mock-1",), raw={"id": name})
            for name, (on, spot) in _PRICES.items()
        ]


def _pod(cid: str) -> _Pod:
    pod = _STORE.pods.get(cid)
    if pod is None:
        if not cid:
            raise ValidationError("compute id must be a non-empty string")
        raise NotFound(f"no compute {cid}", provider="mock")
    return pod
