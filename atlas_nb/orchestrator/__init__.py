"""The kernel-scoped orchestrator: tracked computes that never leak.

>>> import atlas_nb.orchestrator as orch
>>> c = orch.spawn(provider="mock", gpu="h100", image="img:1", idle_ttl_ms=15 * 60_000)
>>> c.name.startswith("atlas-")
True
>>> unsubscribe = orch.subscribe(c.id, print)
>>> orch.touch(c.id)                       # activity: the idle clock restarts
>>> [t.name for t in orch.tracked()] == [c.name]
True
>>> orch.stop_tracked(c.id)                # terminates upstream, stops tracking
>>> orch.shutdown()

What it guarantees (see each module for the details):

* **Idle TTL and max lifetime** per compute; activity is ``touch()`` or any atlas_nb
  call on that compute. A daemon thread ticks every ``heartbeat_interval_s``.
* **Events** ``status(running)``, ``heartbeat``, ``terminating(reason)``,
  ``status(terminated)``, ``terminate_failed(error)``, once per transition (``events``).
* **Names** ``{prefix}{ledger}-{session}-[{label}-]{suffix}``: ownership is visible upstream.
* **A durable ledger** (SQLite, 0600, WAL) records each spawn *before* the create
  (``ledger``), so nothing survives a crash unrecorded.
* **The reaper** terminates owned resources whose owner is provably dead (at once),
  unknown owned ones past a grace period, stopped ones too, and never anything else
  (``reconcile``, ``reaper``); ``reap_now(dry_run=True)`` or ``atlas-nb reap --dry-run`` plans only.
* **Kernel scope**: kernel shutdown/restart, atexit and SIGTERM terminate every tracked
  compute (``kernel``); after kill -9 the next start or reap does.
* **Budget**: ``max_hourly_spend`` / ``max_total_spend`` refuse a spawn with
  ``BudgetExceeded`` before anything is sent (``budget``).

The module-level functions use ``default()``, one ``Orchestrator`` per process built
from the config file's ``orchestrator:`` section.
"""

from __future__ import annotations

import os
from typing import Any

from .._fork_safe_lock import ForkSafeLock
from ..models import Compute, ComputeRequest
from .budget import BudgetExceeded, CostSummary
from .events import Callback, Event, Subscription
from .ledger_repair import LedgerWarning
from .naming import new_session_id
from .orchestrator import Orchestrator
from .reconcile import ReapAction, ReapReport
from .settings import Settings
from .tracker import TrackedCompute

__all__ = [
    "BudgetExceeded",
    "CostSummary",
    "Event",
    "LedgerWarning",
    "Orchestrator",
    "ReapAction",
    "ReapReport",
    "Settings",
    "Subscription",
    "TrackedCompute",
    "cost",
    "default",
    "reap_now",
    "session_id",
    "shutdown",
    "spawn",
    "start",
    "stop_tracked",
    "subscribe",
    "tick",
    "touch",
    "tracked",
]

_lock = ForkSafeLock()
_default: Orchestrator | None = None
_default_pid = 0
_session: tuple[int, str] | None = None


def session_id() -> str:
    """This process's session id (stable for its life; a forked child gets its own)."""
    global _session
    with _lock:
        if _session is None or _session[0] != os.getpid():
            _session = (os.getpid(), new_session_id())
        return _session[1]


def default() -> Orchestrator:
    """The process's orchestrator, created on first use (a new one after ``shutdown()``)."""
    global _default, _default_pid
    sid = session_id()
    with _lock:
        if _default is None or _default._closed or _default_pid != os.getpid():
            _default, _default_pid = Orchestrator(session_id=sid), os.getpid()
        return _default


def start() -> Orchestrator:
    """Start the default orchestrator now: its first pass reaps what dead sessions left."""
    return default().start()


def spawn(request: ComputeRequest | None = None, **kwargs: Any) -> Compute:
    """Spawn a tracked compute; see ``Orchestrator.spawn``."""
    return default().spawn(request, **kwargs)


def touch(compute: Compute | str) -> None:
    """Note activity on a tracked compute."""
    default().touch(compute)


def stop_tracked(compute: Compute | str) -> None:
    """Terminate a tracked compute upstream and stop tracking it."""
    default().stop_tracked(compute)


def tracked() -> list[TrackedCompute]:
    """Snapshots of every tracked compute."""
    return default().tracked()


def subscribe(compute: Compute | str, callback: Callback) -> Subscription:
    """Receive one compute's events (``"*"``: every compute's); returns the handle."""
    return default().subscribe(compute, callback)


def reap_now(dry_run: bool = False, **kwargs: Any) -> ReapReport:
    """Reconcile providers with the ledger now; ``dry_run`` only reports."""
    return default().reap_now(dry_run, **kwargs)


def tick() -> list[tuple[str, str]]:
    """Run one heartbeat of the default orchestrator now."""
    return default().tick()


def cost() -> CostSummary:
    """Spend rate and accrued cost of the default orchestrator."""
    return default().cost()


def shutdown() -> list[str]:
    """Terminate everything the default orchestrator tracks and stop it."""
    with _lock:
        orch = _default
    return orch.shutdown() if orch is not None else []
