"""Shared helpers for the orchestrator tests: a manual clock, a provider whose terminate
fails on demand, and an ``Orchestrator`` factory that starts no thread and no hooks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atlas_nb.errors import ProviderError
from atlas_nb.models import Compute, ComputeRequest
from atlas_nb.orchestrator import Event, Orchestrator
from atlas_nb.providers.mock import MockProvider

T0 = 1_800_000_000.0


class Clock:
    """An injectable epoch clock that only moves when told to."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FlakyProvider(MockProvider):
    """The mock provider, with ``fail_terminates`` terminate calls failing (500) first,
    a hook run inside ``spawn_compute`` and a count of terminate calls per id."""

    name = "mock"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.fail_terminates = 0
        self.fail_spawn: Exception | None = None
        self.on_spawn: Callable[[ComputeRequest], None] | None = None
        self.terminate_calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def spawn_compute(self, request: ComputeRequest) -> Compute:
        if self.on_spawn is not None:
            self.on_spawn(request)
        if self.fail_spawn is not None:
            raise self.fail_spawn
        return super().spawn_compute(request)

    def terminate(self, compute_id: str) -> None:
        with self._lock:
            self.terminate_calls[compute_id] = self.terminate_calls.get(compute_id, 0) + 1
            if self.fail_terminates > 0:
                self.fail_terminates -= 1
                raise ProviderError("injected terminate failure", provider=self.name, status=500)
        super().terminate(compute_id)

    def live(self) -> list[Compute]:
        """Computes not terminated."""
        return [c for c in self.list_compute() if c.status != "terminated"]


def make_orchestrator(tmp_path: Path, clock: Clock, sleeps: Any = None, **kwargs: Any
                      ) -> Orchestrator:
    """An orchestrator on a private ledger: no thread, no hooks, 60 s idle TTL by default."""
    kwargs.setdefault("idle_ttl_ms", 60_000)
    return Orchestrator(clock=clock, sleep=sleeps if sleeps is not None else (lambda s: None),
                        ledger_path=tmp_path / "ledger.sqlite3", background=False,
                        kernel_hooks=False, **kwargs)


class Recorder(list[Event]):
    """A subscriber callback that keeps what it receives."""

    def __call__(self, event: Event) -> None:
        self.append(event)

    def kinds(self, compute_id: str | None = None) -> list[tuple[str, Any]]:
        return [(e.kind, e.value) for e in self if compute_id in (None, e.compute_id)
                and e.kind != "heartbeat"]
