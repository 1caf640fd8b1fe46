r"""The tracked computes of one orchestrator: a lock-guarded state machine.

States and the only transitions (each yields its event exactly once)::

    (spawn) -> running --> terminating --> (terminated: untracked)
                                       \-> terminate_failed --> terminating (retry, silent)

``Tracker`` holds no I/O and takes ``now`` as an argument, so it is driven
deterministically by the orchestrator's injectable clock. Every method must be
called with ``Tracker.lock`` held (the orchestrator does); it returns the events
to publish once the lock is released.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..models import COMPUTE_STATUSES, Compute
from .events import Event

__all__ = ["Record", "TrackState", "TrackedCompute", "Tracker"]

TrackState = Literal["running", "terminating", "terminate_failed"]


@dataclass(frozen=True)
class TrackedCompute:
    """A snapshot of one tracked compute (what ``tracked()`` returns)."""

    compute: Compute
    provider: str
    name: str
    state: TrackState
    user_id: str | None
    spawned_at: float
    last_activity: float
    idle_for_s: float
    idle_ttl_ms: int | None
    max_lifetime_ms: int | None
    cost_per_hour: float
    accrued_cost: float
    expires_at: float | None
    last_error: str | None

    @property
    def id(self) -> str:
        """The compute id."""
        return self.compute.id


@dataclass
class Record:
    """Mutable tracking state of one compute (inside the tracker only)."""

    compute: Compute
    provider: Any  # the Provider instance it was spawned with (same key, URL and http)
    name: str
    user_id: str | None
    spawned_at: float
    last_activity: float
    idle_ttl_ms: int | None
    max_lifetime_ms: int | None
    cost_per_hour: float
    state: TrackState = "running"
    reason: str | None = None
    last_error: str | None = None
    failures: int = 0
    retry_at: float = 0.0
    ended_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def id(self) -> str:
        return self.compute.id

    def accrued(self, now: float) -> float:
        end = self.ended_at if self.ended_at is not None else now
        return self.cost_per_hour * max(0.0, end - self.spawned_at) / 3600.0

    def expires_at(self) -> float | None:
        limits = []
        if self.idle_ttl_ms:
            limits.append(self.last_activity + self.idle_ttl_ms / 1000.0)
        if self.max_lifetime_ms:
            limits.append(self.spawned_at + self.max_lifetime_ms / 1000.0)
        return min(limits) if limits else None

    def due(self, now: float) -> str | None:
        """Why it must be terminated at ``now`` (``None``: not yet)."""
        if self.max_lifetime_ms and now - self.spawned_at >= self.max_lifetime_ms / 1000.0:
            return "max_lifetime"
        if self.idle_ttl_ms and now - self.last_activity >= self.idle_ttl_ms / 1000.0:
            return "idle"
        return None


class Tracker:
    """Records by compute id, plus the names of spawns still in flight."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._records: dict[str, Record] = {}
        self._pending: dict[str, float] = {}  # name -> reserved $/h, between intent and id
        self._spent_closed = 0.0  # accrued cost of computes no longer tracked

    # -- membership -------------------------------------------------------------------
    def begin_pending(self, name: str, reserved_per_hour: float) -> None:
        self._pending[name] = reserved_per_hour

    def end_pending(self, name: str) -> None:
        self._pending.pop(name, None)

    def get(self, compute_id: str) -> Record | None:
        return self._records.get(compute_id)

    def records(self) -> list[Record]:
        return list(self._records.values())

    def names_and_ids(self) -> tuple[set[str], set[str]]:
        """Every name and id this tracker owns (pending spawns included)."""
        names = set(self._pending) | {r.name for r in self._records.values()}
        return names, set(self._records)

    def providers(self) -> set[str]:
        return {r.compute.provider for r in self._records.values()}

    # -- transitions ------------------------------------------------------------------
    def add(self, record: Record) -> list[Event]:
        """Start tracking: ``status(running)``."""
        self._pending.pop(record.name, None)
        self._records[record.id] = record
        return [_event(record, "status", record.spawned_at, status="running")]

    def touch(self, compute_id: str, now: float) -> bool:
        """Note activity; ``False`` if not tracked. Only a running compute's clock resets."""
        record = self._records.get(compute_id)
        if record is None:
            return False
        if record.state == "running":
            record.last_activity = max(record.last_activity, now)
        return True

    def begin_terminate(self, compute_id: str, reason: str, now: float
                        ) -> tuple[Record | None, list[Event]]:
        """running -> terminating (emits ``terminating``), or a silent retry of a
        terminate_failed one. ``(None, [])`` when it is already terminating or gone."""
        record = self._records.get(compute_id)
        if record is None or record.state == "terminating":
            return None, []
        if record.state == "terminate_failed":
            record.state = "terminating"
            return record, []
        record.state, record.reason = "terminating", reason
        return record, [_event(record, "terminating", now, reason=reason)]

    def finish_terminate(self, compute_id: str, ok: bool, error: str | None, now: float,
                         retry_after_s: float) -> list[Event]:
        """terminating -> terminated (untracked; ``status(terminated)``) or terminate_failed
        (``terminate_failed(error)`` the first time only)."""
        record = self._records.get(compute_id)
        if record is None or record.state != "terminating":
            return []
        if ok:
            record.ended_at = now
            self._spent_closed += record.accrued(now)
            del self._records[compute_id]
            record.done.set()
            return [_event(record, "status", now, status="terminated")]
        record.failures += 1
        record.last_error = error
        record.retry_at = now + min(retry_after_s * 2 ** (record.failures - 1), 900.0)
        first = record.failures == 1
        record.state = "terminate_failed"
        record.done.set()
        record.done = threading.Event()  # a later retry gets a fresh completion signal
        return [_event(record, "terminate_failed", now, error=error)] if first else []

    # -- ticks ------------------------------------------------------------------------
    def due(self, now: float) -> tuple[list[tuple[str, str]], list[str], list[Event]]:
        """``(to terminate with reason, terminate_failed ones to retry, heartbeats)``."""
        terminate: list[tuple[str, str]] = []
        retry: list[str] = []
        beats: list[Event] = []
        for record in self._records.values():
            if record.state == "running":
                reason = record.due(now)
                if reason:
                    terminate.append((record.id, reason))
                else:
                    beats.append(_event(record, "heartbeat", now,
                                        idle_for_s=max(0.0, now - record.last_activity),
                                        accrued_cost=round(record.accrued(now), 6)))
            elif record.state == "terminate_failed" and now >= record.retry_at:
                retry.append(record.id)
        return terminate, retry, beats

    def running_ids(self) -> list[str]:
        return [r.id for r in self._records.values() if r.state == "running"]

    def active_ids(self) -> list[str]:
        """Every tracked id not already being terminated."""
        return [r.id for r in self._records.values() if r.state != "terminating"]

    # -- money ------------------------------------------------------------------------
    def hourly_rate(self) -> float:
        """$/h of everything tracked, plus what in-flight spawns reserved."""
        return sum(r.cost_per_hour for r in self._records.values()) + sum(self._pending.values())

    def spent(self, now: float) -> float:
        """Accrued $ of everything this tracker ever tracked."""
        return self._spent_closed + sum(r.accrued(now) for r in self._records.values())

    def snapshot(self, now: float, ids: Iterable[str] | None = None) -> list[TrackedCompute]:
        records = (self._records.values() if ids is None
                   else [r for i in ids if (r := self._records.get(i)) is not None])
        return [_snapshot(r, now) for r in records]

    def observe(self, event: str, data: Mapping[str, Any], now: float
                ) -> tuple[list[Event], str | None]:
        """A facade telemetry event (``compute.get``, ``compute.stop``, ...). On a tracked
        compute it is activity, and a ``get`` refreshes its status; a terminate made outside
        the orchestrator (or a ``get`` that finds it terminated) ends the tracking:
        ``terminating(external)`` then ``status(terminated)``. Returns the events and the
        name of the compute that ended, if any."""
        cid = data.get("id")
        record = self._records.get(cid) if isinstance(cid, str) else None
        if record is None or record.compute.provider != data.get("provider"):
            return [], None
        status = data.get("status") if event == "compute.get" else None
        if status in COMPUTE_STATUSES and status != record.compute.status:
            record.compute = record.compute.model_copy(update={"status": status})
        if record.state != "running" or not (event == "compute.terminate"
                                             or status == "terminated"):
            self.touch(record.id, now)
            return [], None
        _, events = self.begin_terminate(record.id, "external", now)
        events += self.finish_terminate(record.id, True, None, now, 0.0)
        return events, record.name


def _snapshot(r: Record, now: float) -> TrackedCompute:
    return TrackedCompute(
        compute=r.compute, provider=r.compute.provider, name=r.name, state=r.state,
        user_id=r.user_id, spawned_at=r.spawned_at, last_activity=r.last_activity,
        idle_for_s=max(0.0, now - r.last_activity), idle_ttl_ms=r.idle_ttl_ms,
        max_lifetime_ms=r.max_lifetime_ms, cost_per_hour=r.cost_per_hour,
        accrued_cost=r.accrued(now), expires_at=r.expires_at(), last_error=r.last_error,
    )


def _event(r: Record, kind: Any, at: float, **data: Any) -> Event:
    return Event(kind=kind, compute_id=r.id, provider=r.compute.provider, name=r.name, at=at,
                 **data)

