"""``ConformanceOptions``: how the conformance suite drives one provider."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["DEFAULT_SPAWN", "ConformanceOptions"]

DEFAULT_SPAWN: Mapping[str, Any] = MappingProxyType(
    {"gpu": "h100", "image": "atlas/conformance:latest", "ports": [(8000, "http")]}
)
"""What the suite spawns unless told otherwise: one H100 with one HTTP port."""


@dataclass(frozen=True)
class ConformanceOptions:
    """Provider-specific knobs for ``ProviderConformance``; every field has a default.

    Attributes:
        spawn: keyword arguments for ``atlas_nb.spawn_compute`` (``ComputeRequest``
            fields). The suite adds its own ``name`` (and ``auth`` for the bearer
            tests). Pick the cheapest machine your provider offers, with at least
            one ``http`` port.
        endpoint: a serverless endpoint id for the job tests. ``None`` skips them
            (with a clear reason) for a provider that declares ``serverless``.
        pod_env: ``compute_id -> env`` reading the env a pod was started with, for
            the check that the bearer token reached the pod. ``None`` skips it.
        ready_timeout_s: the deadline for anything that waits on the cloud (a pod
            becoming ready or stopped, a job finishing, a stream ending). Keep it below
            any per-test timeout (pytest-timeout) you run with.
        poll_s: the longest pause between two polls. Polls start faster than this,
            so an instant provider (the mock) finishes in milliseconds.
    """

    spawn: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_SPAWN)
    endpoint: str | None = None
    pod_env: Callable[[str], Mapping[str, str]] | None = None
    ready_timeout_s: float = 600.0
    poll_s: float = 5.0

    def __post_init__(self) -> None:
        # Fail at construction, in the user's fixture, rather than mid-suite.
        if self.ready_timeout_s <= 0:
            raise ValueError("ConformanceOptions.ready_timeout_s must be > 0 seconds")
        if self.poll_s <= 0:
            raise ValueError("ConformanceOptions.poll_s must be > 0 seconds")
        if "name" in self.spawn:
            raise ValueError(
                "ConformanceOptions.spawn must not set 'name': the suite names each "
                "compute itself so it can find and clean it up"
            )
