"""The notebook layer's thin adapter over ``atlas_nb.orchestrator``.

Every magic and panel that spawns, lists, touches or stops tracked computes goes
through here, so the orchestrator is imported (and started) only when first used.
It also remembers which tracked computes live in a sandbox this kernel started, so
``%atlas sandbox off`` can end them while the sandbox still answers.

The orchestrator starts (and installs its kernel hooks) on the first tracked spawn, not at
``%load_ext``, and keeps running after ``%unload_ext``: it belongs to the kernel, so tracked
computes are still reaped when idle and ended with the kernel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the models load pydantic: not at %load_ext time
    from ..models import Compute
    from ..orchestrator import CostSummary, Event, ReapReport, Subscription, TrackedCompute

__all__ = [
    "cost",
    "find",
    "forget_sandboxed",
    "reap",
    "spawn",
    "stop_tracked",
    "subscribe",
    "touch",
    "tracked",
    "use",
    "watch_sandbox",
]

_lock = threading.Lock()
_sandboxed: dict[str, set[str]] = {}  # sandbox URL -> ids tracked while it was active
_watch: Any = None
_override: Any = None


def use(orchestrator: Any = None) -> None:
    """Route the magics and panels to ``orchestrator`` (an ``Orchestrator``); ``None``
    goes back to the process default (``atlas_nb.orchestrator.default()``)."""
    global _override
    with _lock:
        _override = orchestrator


def _orch() -> Any:
    with _lock:
        if _override is not None:
            return _override
    from .. import orchestrator

    return orchestrator


def spawn(**fields: Any) -> Compute:
    """Spawn a tracked compute (``Orchestrator.spawn`` fields)."""
    compute: Compute = _orch().spawn(**fields)
    return compute


def tracked() -> list[TrackedCompute]:
    """Snapshots of every tracked compute, oldest first."""
    snaps: list[TrackedCompute] = _orch().tracked()
    return snaps


def find(compute_id: str) -> TrackedCompute | None:
    """The snapshot of one tracked compute, or ``None``."""
    return next((t for t in tracked() if t.id == compute_id), None)


def touch(compute: Compute | str) -> None:
    """Reset a tracked compute's idle clock (``NotFound`` if it is not tracked)."""
    _orch().touch(compute)


def stop_tracked(compute: Compute | str) -> None:
    """Terminate a tracked compute upstream and stop tracking it."""
    _orch().stop_tracked(compute)


def subscribe(key: str, callback: Callable[[Event], None]) -> Subscription:
    """Orchestrator events of one compute (``"*"``: all)."""
    sub: Subscription = _orch().subscribe(key, callback)
    return sub


def cost() -> CostSummary:
    """The session's spend rate and accrued cost."""
    summary: CostSummary = _orch().cost()
    return summary


def reap(dry_run: bool, providers: Iterable[str] | None = None) -> ReapReport:
    """Reconcile providers with the ledger (``dry_run``: plan only)."""
    report: ReapReport = _orch().reap_now(dry_run, providers=providers)
    return report


def watch_sandbox(url: str, clouds: Iterable[str]) -> None:
    """Remember computes that start being tracked while the sandbox at ``url`` is on."""
    global _watch
    names = frozenset(clouds)

    def on_event(event: Event) -> None:
        if event.kind == "status" and event.status == "running" and event.provider in names:
            with _lock:
                _sandboxed.setdefault(url, set()).add(event.compute_id)

    watch = subscribe("*", on_event)
    with _lock:
        previous, _watch = _watch, watch
    if previous is not None:
        previous.unsubscribe()


def forget_sandboxed(url: str) -> int:
    """Stop tracking (terminating them) the computes that live in the sandbox at ``url``."""
    global _watch
    with _lock:
        ids = _sandboxed.pop(url, set())
        watch, _watch = _watch, None
    if watch is not None:
        watch.unsubscribe()
    if not ids:
        return 0
    from ..errors import AtlasError

    ended = 0
    live = {t.id for t in tracked()}
    for cid in ids & live:
        try:
            stop_tracked(cid)
            ended += 1
        except AtlasError:
            continue  # it stays in the ledger; the reaper keeps trying
    return ended
