"""The RunPod cloud of the sandbox: REST v2, GraphQL and the serverless runtime.

``sb.runpod`` is this object. Besides serving the three APIs it offers helpers
for tests: ``pods`` (every pod ever made, as REST v2 dicts, env included),
``live_pods()``, ``pod_env(id)``, ``add_endpoint(...)``, ``preempt(id)`` (a spot
interruption), ``fail_pod(id)`` (status ERROR), ``set_availability(gpu, level)``
and the knobs ``provision_delay_s`` / ``start_delay_s``. The sandbox-wide
``sb.capacity`` overrides (per canonical GPU) apply on top of ``set_availability``.

Serverless jobs a test moves by hand: ``add_manual_endpoint(id)`` makes an endpoint
without workers, and ``drive(id)`` returns a ``JobDriver`` for its newest job (or
``drive(id, job_id)``): ``start()``, ``emit(*chunks)``, ``complete(output)``,
``fail(error)``, ``cancel()`` (see ``manual_jobs``). ``sb.runpod.serverless`` also
has the knobs ``runsync_wait_s``, ``stream_batch`` and ``stream_form``.

Options (``Sandbox(options={"runpod": {...}})``): ``provision_delay_s``,
``start_delay_s``, ``workers`` and ``exec_delay_s`` (for the default
endpoints), ``stream_wait_s`` (how long ``/stream`` waits for a chunk),
``runsync_wait_s`` (the longest ``/runsync`` holds its answer; default: its
``?wait=``), ``stream_batch`` (the most chunks one ``/stream`` answer carries;
default: all), ``stream_form`` (``"object"``, runpod-python's ``{status, stream}``,
the default; ``"array"``, the bare list RunPod's docs show), ``enforce_rate_limits``
(answer 429 past the RateLimit quotas).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import sandbox_key
from ..accounts import Accounts
from ..cloud import Api, CloudContext, DelayKnobs, json_response
from ..ratelimit import RateLimiter
from .catalog import Catalog
from .graphql import build_graphql_app
from .manual_jobs import JobDriver
from .pods import PodStore
from .rest import SPEC, build_rest_app, problem
from .serverless import Endpoint, Handler, ServerlessRuntime
from .serverless_app import build_serverless_app

__all__ = ["RunPodCloud"]


class RunPodCloud(DelayKnobs):
    """RunPod: pods (REST v2 and GraphQL share them), the catalog, serverless endpoints."""

    name = "runpod"

    def __init__(self, ctx: CloudContext) -> None:
        self.ctx = ctx
        self.key = sandbox_key(self.name)
        self.accounts = Accounts(self.name, self.key)
        """Its accounts (``accounts.py``): ``self.key`` is the default one's key."""
        self.catalog = Catalog(capacity=ctx.capacity)
        self.store = PodStore(ctx, self.catalog)
        self.limiter = RateLimiter(
            ctx.clock, enforce=bool(ctx.options.get("enforce_rate_limits", False))
        )
        self.serverless = ServerlessRuntime(ctx)

    def __repr__(self) -> str:
        endpoints = list(self.serverless.endpoints)
        return f"RunPodCloud(pods={len(self.store.all())}, endpoints={endpoints})"

    def apis(self) -> Sequence[Api]:
        """REST v2 (validated against the vendored spec), GraphQL and serverless."""
        return [
            Api(
                "rest",
                build_rest_app(self.store, self.catalog, self.limiter, self.accounts),
                problem,
                spec=SPEC,
            ),
            Api(
                "graphql",
                build_graphql_app(self.store, self.catalog, self.accounts, self.ctx.report),
                _graphql_error,
            ),
            Api("serverless", build_serverless_app(self.serverless, self.accounts),
                _serverless_error),
        ]

    def close(self) -> None:
        """Stop the serverless workers."""
        self.serverless.close()

    # ---- helpers for tests -----------------------------------------------------------
    @property
    def pods(self) -> dict[str, dict[str, Any]]:
        """Every pod ever created (terminated ones too), id -> REST v2 dict with env."""
        return {p.id: self.store.wire(p) for p in self.store.all(include_terminated=True)}

    def live_pods(self) -> list[dict[str, Any]]:
        """Pods that are not terminated, as REST v2 dicts."""
        return [self.store.wire(p) for p in self.store.all()]

    def pod_env(self, pod_id: str) -> dict[str, str]:
        """The env a pod was created with (what the provider must never put in ``raw``)."""
        return dict(self.store.get(pod_id, include_terminated=True).env)

    def preempt(self, pod_id: str) -> None:
        """Interrupt a pod as a spot preemption would (status EXITED)."""
        self.store.interrupt(pod_id)

    def fail_pod(self, pod_id: str) -> None:
        """Put a pod in status ERROR."""
        self.store.interrupt(pod_id, error=True)

    def set_availability(self, gpu_id: str, level: str) -> None:
        """Set a GPU type's stock (``NONE|LOW|MEDIUM|HIGH``); NONE makes creates fail (400)."""
        self.catalog.set_availability(gpu_id, level)

    def add_endpoint(
        self, endpoint_id: str, handler: Handler, *, workers: int = 1, exec_delay_s: float = 0.0
    ) -> Endpoint:
        """Register a serverless endpoint whose jobs run ``handler(job)`` in worker threads."""
        return self.serverless.add_endpoint(
            endpoint_id, handler, workers=workers, exec_delay_s=exec_delay_s
        )

    def add_manual_endpoint(self, endpoint_id: str) -> Endpoint:
        """Register an endpoint without workers: its jobs wait until a test ``drive``s them."""
        return self.serverless.add_manual_endpoint(endpoint_id)

    def drive(self, endpoint_id: str, job_id: str | None = None) -> JobDriver:
        """A ``JobDriver`` for a manual endpoint's job (default: the newest one)."""
        return self.serverless.drive(endpoint_id, job_id)

    def job(self, endpoint_id: str, job_id: str) -> dict[str, Any] | None:
        """A job's ``/status`` body, or ``None``."""
        job = self.serverless.job(endpoint_id, job_id)
        return self.serverless.body(job) if job else None


def _graphql_error(status: int, detail: str, headers: Any = None) -> Any:
    return json_response({"errors": [{"message": detail}]}, status, headers)


def _serverless_error(status: int, detail: str, headers: Any = None) -> Any:
    return json_response({"error": detail}, status, headers)
