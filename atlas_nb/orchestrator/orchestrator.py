"""``Orchestrator``: tracked computes with idle TTLs, events, a durable ledger and a reaper.

One instance per kernel is the norm (``atlas_nb.orchestrator`` keeps a default one);
more are fine, each with its own session id. Everything is thread safe. Time comes
from the injectable ``clock`` (epoch seconds) and waits from ``sleep``, so tests
drive it with ``tick()`` and ``reap_now()`` instead of sleeping; the daemon thread
calls the same methods every ``heartbeat_interval_s``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .. import config, facade, telemetry
from .._http import deadline as http_deadline
from ..errors import AtlasError, NotFound, ProviderError, UnknownError, ValidationError
from ..models import Compute, ComputeRequest
from ..providers import Provider, resolve
from ..providers import names as provider_names
from ..providers.base import fingerprint_of
from . import detached
from . import owner as owners
from .budget import Budget, CatalogPrices, CostSummary, estimate_price
from .events import ALL, Callback, EventBus, Outbox, Subscription
from .ledger import FILENAME, Ledger, LedgerEntry, current_target, write_or_log
from .naming import LEDGER_LABEL, compute_name, new_session_id
from .reaper import Reaper
from .reconcile import ReapReport
from .settings import Settings, check_cost, from_config
from .terminate import one_line, terminate_with_backoff
from .tracker import Record, TrackedCompute, Tracker

__all__ = ["Orchestrator"]

_log = logging.getLogger("atlas_nb.orchestrator")
# Every orchestrator of this process, so a forked child can make each its own (see
# ``_after_fork``); weak, so an orchestrator nobody holds can still be collected.
_instances: weakref.WeakSet[Orchestrator] = weakref.WeakSet()


def _compute_id(compute: Compute | str) -> str:
    cid: Any = compute.id if isinstance(compute, Compute) else compute
    if not isinstance(cid, str) or not cid:
        raise ValidationError("pass a compute id (a non-empty string) or the Compute itself")
    return cid


class Orchestrator:
    """Tracks computes it spawns and guarantees they end: idle TTL, max lifetime, budget,
    explicit stop, kernel shutdown/restart, process exit, or (after a kill -9) the next
    reap of the ledger.

    Args:
        clock: epoch seconds (default ``time.time``).
        sleep: waits between retries.
        providers: name -> Provider instance (or class) to use instead of the registry.
        ledger_path: the SQLite ledger (default ``config.data_dir()/orchestrator.sqlite3``).
        session_id: 8 hex digits (default: fresh); must be unique among live orchestrators.
        background: run the daemon heartbeat/reaper thread once started.
        kernel_hooks: install the kernel-shutdown / atexit / SIGTERM cleanup on first use.
        settings: use these instead of the config file's ``orchestrator:`` section.
        **overrides: override single settings of the config file's ``orchestrator:``
            section (see ``settings.Settings``); ``idle_ttl_ms=0`` disables the idle TTL.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        providers: Mapping[str, Any] | None = None,
        ledger_path: str | os.PathLike[str] | None = None,
        session_id: str | None = None,
        background: bool = True,
        kernel_hooks: bool = True,
        settings: Settings | None = None,
        **overrides: Any,
    ) -> None:
        base = settings if settings is not None else from_config(config.load().get("orchestrator"))
        unknown = sorted(set(overrides) - set(Settings.__dataclass_fields__))
        if unknown:
            raise ValidationError(f"unknown Orchestrator option(s): {', '.join(unknown)}")
        self.settings = base.with_overrides(**overrides)
        self._clock = clock if clock is not None else time.time
        self._sleep = sleep if sleep is not None else time.sleep
        self._injected = dict(providers or {})
        self.ledger = Ledger(ledger_path if ledger_path is not None
                             else config.data_dir() / FILENAME)
        self._prices = CatalogPrices()
        self._background = background
        self._kernel_hooks = kernel_hooks
        self._closed = False
        self._own_state(session_id or new_session_id())
        self._telemetry_id = f"atlas_nb.orchestrator.{self.session_id}.{id(self):x}"
        _instances.add(self)

    def _own_state(self, session_id: str) -> None:
        """The state that belongs to one process: its session, what it tracks, its locks
        and thread. Set at creation, and again in a forked child (``_after_fork``)."""
        self.session_id = session_id
        self._pid = os.getpid()
        self._resolved: dict[str, Provider] = {}
        # Providers that another process can rebuild from the registry, the environment
        # and the keys we pass it (not an injected instance or an http= transport).
        self._portable: set[int] = set()
        self._unresolved: dict[str, Provider] = {}  # open spawn-failed entry -> its provider
        self._budget = Budget(self.settings.max_hourly_spend, self.settings.max_total_spend)
        self._tracker = Tracker()
        self._lock = self._tracker.lock
        self._bus = EventBus()
        self._outbox = Outbox(self._bus)
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._reaper = Reaper(
            ledger=self.ledger, settings=self.settings, session_id=self.session_id,
            clock=self._clock, provider_named=self._provider_named, tracked=self._tracked_sets,
            terminate=lambda p, cid, attempts: self._terminate_upstream(p, cid,
                                                                        attempts=attempts))

    def _after_fork(self) -> None:
        """In a forked child: the parent's computes stay the parent's. The child starts
        empty, with a session of its own (recorded on its first spawn, with its own pid
        as owner), so its exit, signals and reaps never touch what the parent tracks, and
        what it spawns is its own. Locks, the thread and the ledger connection are new
        (another thread may have held a lock at the fork; SQLite forbids sharing one).
        Event subscriptions made before the fork stay with the parent."""
        self.ledger = Ledger(self.ledger.path)
        self._own_state(new_session_id())

    def __repr__(self) -> str:
        with self._lock:
            n = len(self._tracker.records())
        state = "closed" if self._closed else "running" if self._started else "new"
        return f"Orchestrator(session={self.session_id!r}, tracked={n}, {state})"

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> Orchestrator:
        """Record the session, attach the activity handler, install the cleanup hooks and
        start the daemon thread (whose first pass reaps what dead sessions left).
        Idempotent; ``spawn`` calls it."""
        with self._state_lock:
            if self._closed:
                raise ValidationError("this orchestrator was shut down; create a new one")
            if self._started:
                return self
            self._started = True
        try:
            self.ledger.open_session(self.session_id, owners.current(), self._clock())
        except (sqlite3.Error, AtlasError) as exc:
            with self._state_lock:
                self._started = False
            if isinstance(exc, AtlasError):
                raise
            raise UnknownError(f"the orchestrator ledger {self.ledger.path} is unusable ({exc}); "
                               "fix it or point ATLAS_NB_DATA_DIR elsewhere") from None
        telemetry.attach(self._telemetry_id, "*", self._on_telemetry)
        if self._kernel_hooks:
            from . import kernel

            kernel.install(self)
        if self._background:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"atlas-orchestrator-{self.session_id}")
            self._thread.start()
        return self

    def _owned(self) -> bool:
        """Whether this process created (or, after a fork, reset) this orchestrator."""
        return self._pid == os.getpid()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the thread must survive anything one tick does
                _log.exception("orchestrator tick failed")
            if self._stop.wait(self.settings.heartbeat_interval_s):
                return

    def shutdown(self, reason: str = "shutdown", *, parallel: bool = True,
                 deadline_s: float | None = None, detach: bool = True) -> list[str]:
        """Terminate every tracked compute and stop. Returns the ids left behind.

        Also resolves this session's *untracked* open ledger entries (a spawn that raised
        after its create may have succeeded): terminated by id, or looked up by name and
        terminated if found, closed if a listing proves them absent.

        ``deadline_s`` bounds everything, HTTP included (request timeouts, retries and
        ``Retry-After`` waits). What is unconfirmed by then is written as
        ``terminate_failed`` before this returns and, with ``detach``, handed to a
        detached reaper (``detached.launch``) that outlives this process.
        ``parallel=False`` starts no thread (for ``atexit``). An orchestrator inherited
        through ``fork()`` and not yet reset does nothing here (it is the parent's).
        """
        if not self._owned():
            return []
        with self._state_lock:
            first, self._closed = not self._closed, True
        self._stop.set()
        deadline = time.monotonic() + deadline_s if deadline_s is not None else None
        with self._lock:
            ids = self._tracker.active_ids()
        untracked = self._untracked_entries() if self._started else []
        jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
            *((self._terminate, (cid, reason)) for cid in ids),
            *((self._end_untracked, (e, reason)) for e in untracked)]
        if parallel and jobs:
            try:
                workers = [threading.Thread(target=fn, args=args, kwargs={"deadline": deadline},
                                            daemon=True, name="atlas-terminate")
                           for fn, args in jobs]
                for w in workers:
                    w.start()
            except RuntimeError:  # interpreter shutdown: no new threads; do it in line
                parallel = False
            else:
                for w in workers:
                    w.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if not parallel:
            for fn, args in jobs:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                fn(*args, deadline=deadline)
        with self._lock:
            records = self._tracker.records()
        left = [r.id for r in records]
        handoff = self._mark_unconfirmed([(r.name, r.provider) for r in records], reason)
        if self._started:
            handoff += self._mark_unconfirmed(
                [(e.name, self._unresolved.get(e.name)) for e in self._untracked_entries()],
                reason)
        if first and self._started:
            telemetry.detach(self._telemetry_id)
            write_or_log(self.ledger.end_session, self.session_id, self._clock())
        if detach and handoff:
            self._detach(handoff)
        if not left and self._kernel_hooks:
            from . import kernel

            kernel.forget(self)  # nothing left for the exit hooks to do
        return left

    def _untracked_entries(self) -> list[LedgerEntry]:
        """Open ledger entries of this session that it does not track (nor is spawning)."""
        try:
            entries = self.ledger.open_entries(target=current_target())
        except (sqlite3.Error, AtlasError) as exc:
            _log.warning("orchestrator ledger read failed: %s", exc)
            return []
        with self._lock:
            names, ids = self._tracker.names_and_ids()
        return [e for e in entries if e.session_id == self.session_id and e.name not in names
                and (e.compute_id is None or e.compute_id not in ids)]

    def _end_untracked(self, e: LedgerEntry, reason: str, *, deadline: float | None = None
                       ) -> bool:
        """End one untracked entry of this session: by id, else by name (a spawn that
        raised after the create: the create may have succeeded). ``True`` once closed."""
        p = self._unresolved.get(e.name)
        try:
            if p is None:
                p = self._provider_named(e.provider)
            found = [e.compute_id] if e.compute_id else None
            if found is None:
                with http_deadline(deadline):
                    found = [c.id for c in p.list_compute(name=e.name)
                             if c.name == e.name and c.status != "terminated"]
        except Exception as exc:  # a failed lookup proves nothing: the entry stays open
            write_or_log(self.ledger.record_terminate_failed, e.name, self._clock(), reason,
                         f"lookup by name failed: {one_line(exc)}")
            return False
        for cid in found:
            if e.compute_id is None:
                write_or_log(self.ledger.record_created, e.name, cid, None)
            ok, err = self._terminate_upstream(p, cid, deadline)
            if not ok:
                write_or_log(self.ledger.record_terminate_failed, e.name, self._clock(),
                             reason, err or "failed")
                return False
        # Terminated, or a successful listing shows nothing under its name: never created.
        write_or_log(self.ledger.record_terminated, e.name, self._clock(),
                     reason if found else "never_created")
        self._unresolved.pop(e.name, None)
        return True

    def _mark_unconfirmed(self, items: list[tuple[str, Provider | None]], reason: str
                          ) -> list[tuple[str, Provider | None]]:
        """Write each still-open entry as ``terminate_failed`` (a terminate still in
        flight past the deadline is unconfirmed); returns those that are open."""
        out = []
        for name, p in items:
            entry = self.ledger.entry(name) if name else None
            if entry is None or entry.state == "terminated":
                continue
            if entry.state == "live":
                write_or_log(self.ledger.record_terminate_failed, name, self._clock(), reason,
                             "unconfirmed when the shutdown deadline passed")
            out.append((entry.compute_id or name, p))
        return out

    def _detach(self, handoff: list[tuple[str, Provider | None]]) -> None:
        """Hand what is left to detached reapers (see ``detached``), with the keys only
        this process holds: one reaper per distinct key, since a reaper acts only on the
        entries of the account its key reaches (two accounts of one cloud, two reapers).
        Entries whose provider another process cannot rebuild (an injected instance, an
        ``http=`` transport) stay for the next reap here."""
        known = set(provider_names())
        groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
        for what, p in handoff:
            if p is not None and (id(p) not in self._portable or p.name not in known):
                continue
            key: tuple[tuple[str, str], ...] = ()
            key_of = getattr(p, "api_key", None)  # BaseProvider's; a plugin may lack it
            if p is not None and callable(key_of):
                with contextlib.suppress(Exception):  # no key: the environment's is inherited
                    key = ((p.name, str(key_of())),)
            groups.setdefault(key, []).append(what)
        for key, only in groups.items():
            detached.launch(only, data_dir=self.ledger.path.parent, keys=dict(key),
                            sandbox_url=current_target() or None)

    # -- spawning ---------------------------------------------------------------------
    def spawn(
        self,
        request: ComputeRequest | None = None,
        *,
        provider: Any = None,
        idle_ttl_ms: int | None = None,
        max_lifetime_ms: int | None = None,
        user_id: str | None = None,
        cost_per_hour: float | None = None,
        api_key: str | None = None,
        base_url: Any = None,
        http: Any = None,
        **fields: Any,
    ) -> Compute:
        """Spawn a tracked compute (fields as for ``spawn_compute``) and return it.

        Its name becomes ``{prefix}{ledger}-{session}-[{name}-]{suffix}``. ``idle_ttl_ms`` /
        ``max_lifetime_ms`` default to the settings (0 disables). ``cost_per_hour``
        feeds the budget guard when the catalog has no price. The spawn is in the ledger
        before the provider is called. Raises ``BudgetExceeded`` before anything is sent
        when a spend cap would be crossed.
        """
        if request is not None and fields:
            request = ComputeRequest(**{**request.model_dump(), **fields})
        req = request if request is not None else ComputeRequest(**fields)
        ttl, lifetime = self.settings.limits(idle_ttl_ms, req.idle_ttl_ms, max_lifetime_ms)
        check_cost(cost_per_hour)
        p = self._provider(provider, api_key, base_url, http)
        # The ledger id goes in the name and in the cloud's labels: the reaper of another
        # ledger (machine, CI job, colleague on the account) then leaves it alone.
        ledger_id = self.ledger.ledger_id
        name = compute_name(self.settings.name_prefix, ledger_id, self.session_id, req.name)
        req = req.model_copy(update={"name": name, "idle_ttl_ms": ttl,
                                     "labels": {**req.labels, LEDGER_LABEL: ledger_id}})
        # Which account it lands in (api_key=/base_url= may differ from the defaults), so
        # a reaper acts on it only with credentials of that account; looked up before
        # anything is created.
        account = fingerprint_of(p)
        self.start()
        price = None
        if self._budget.active:
            price = estimate_price(req, self._prices.catalog(p), cost_per_hour)
        what = f"{req.gpu_count}x {req.gpu or 'cpu'} on {p.name}"
        with self._lock:
            self._budget.check(price=price, what=what, hourly_rate=self._tracker.hourly_rate(),
                               spent=self._tracker.spent(self._clock()),
                               horizon_h=lifetime / 3_600_000 if lifetime else 1.0)
            self._tracker.begin_pending(name, price or 0.0)
        try:
            self.ledger.record_intent(name=name, provider=p.name, session_id=self.session_id,
                                      owner=owners.current(), now=self._clock(),
                                      user_id=user_id, cost_per_hour=price, account=account)
        except (sqlite3.Error, AtlasError) as exc:
            with self._lock:
                self._tracker.end_pending(name)
            raise UnknownError(f"cannot record the spawn in the ledger {self.ledger.path} "
                               f"({exc}); nothing was created") from None
        try:
            compute = facade.spawn_compute(req, provider=p)
        except BaseException as exc:
            self._spawn_failed(p, name, exc)
            raise
        now = self._clock()
        rate = compute.cost_per_hour or price or float(cost_per_hour or 0.0)
        write_or_log(self.ledger.record_created, name, compute.id, rate)
        record = Record(compute=compute, provider=p, name=name, user_id=user_id, spawned_at=now,
                        last_activity=now, idle_ttl_ms=ttl, max_lifetime_ms=lifetime,
                        cost_per_hour=rate)
        with self._lock:
            self._outbox.put(self._tracker.add(record))
        self._outbox.drain()
        return compute

    def _spawn_failed(self, p: Provider, name: str, exc: BaseException) -> None:
        """A create raised: make sure nothing is left under ``name``, or leave the ledger
        entry open (this session no longer tracks it, so the next reap handles it)."""
        with self._lock:
            self._tracker.end_pending(name)
            # Until resolved, shutdown and reap look it up by name with this provider.
            self._unresolved[name] = p
        if not isinstance(exc, Exception):  # Ctrl-C: no network now; the reaper finishes
            return
        try:
            found = [c for c in p.list_compute(name=name)
                     if c.name == name and c.status != "terminated"]
        except Exception:
            return
        for c in found:
            ok, err = self._terminate_upstream(p, c.id)
            if not ok:
                write_or_log(self.ledger.record_created, name, c.id, None)
                write_or_log(self.ledger.record_terminate_failed, name, self._clock(),
                             "spawn_failed", err or "terminate failed")
                return
        write_or_log(self.ledger.record_terminated, name, self._clock(), "spawn_failed")
        with self._lock:
            self._unresolved.pop(name, None)

    # -- the tracked set --------------------------------------------------------------
    def touch(self, compute: Compute | str) -> None:
        """Note activity on a tracked compute (resets its idle clock)."""
        cid = _compute_id(compute)
        with self._lock:
            if not self._tracker.touch(cid, self._clock()):
                raise NotFound(f"compute {cid} is not tracked by this orchestrator",
                               hint="see tracked() for what it tracks")

    def tracked(self) -> list[TrackedCompute]:
        """Snapshots of every tracked compute, oldest first."""
        with self._lock:
            snaps = self._tracker.snapshot(self._clock())
        return sorted(snaps, key=lambda s: s.spawned_at)

    def stop_tracked(self, compute: Compute | str, *, timeout_s: float | None = None) -> None:
        """Terminate a tracked compute upstream and stop tracking it.

        Raises ``NotFound`` if it is not tracked, and ``ProviderError`` if every retry
        failed (it then stays tracked and in the ledger as ``terminate_failed``).
        """
        cid = _compute_id(compute)
        with self._lock:
            record = self._tracker.get(cid)
        if record is None:
            raise NotFound(f"compute {cid} is not tracked by this orchestrator",
                           hint="see tracked(); terminate it with atlas_nb.terminate instead")
        result = self._terminate(cid, "stop_tracked")
        if result is None:  # someone else is terminating it: wait for that outcome
            record.done.wait(timeout_s)
            with self._lock:
                current = self._tracker.get(cid)
            result = (current is None, current.last_error if current else None)
        ok, err = result
        if not ok:
            raise ProviderError(
                f"could not terminate {cid}: {err}", provider=record.compute.provider,
                hint="it stays in the ledger as terminate_failed; the reaper retries it",
            )

    def subscribe(self, compute: Compute | str, callback: Callback) -> Subscription:
        """Call ``callback(event)`` for each event of one compute, or of all with ``"*"``."""
        key = ALL if compute == ALL else _compute_id(compute)
        return self._bus.subscribe(key, callback)

    def cost(self) -> CostSummary:
        """The spend rate and what has been spent (accrued per second of tracking)."""
        now = self._clock()
        with self._lock:
            snaps = self._tracker.snapshot(now)
            spent = self._tracker.spent(now)
        return CostSummary(
            rate_per_hour=sum(s.cost_per_hour for s in snaps),
            accrued_live=sum(s.accrued_cost for s in snaps), spent_total=spent,
            max_hourly_spend=self.settings.max_hourly_spend,
            max_total_spend=self.settings.max_total_spend,
            per_compute={s.id: s.accrued_cost for s in snaps},
        )

    # -- heartbeat --------------------------------------------------------------------
    def tick(self, *, reap: bool | None = None) -> list[tuple[str, str]]:
        """One heartbeat: terminate what is idle, past its lifetime or over budget, retry
        failed terminates, emit heartbeats, and reap when due (``reap`` forces it on or
        off). Returns the ``(id, reason)`` terminations it started."""
        now = self._clock()
        with self._lock:
            due, retry, beats = self._tracker.due(now)
            total = self.settings.max_total_spend
            if total is not None and self._tracker.spent(now) >= total:
                due = [(cid, "budget") for cid in self._tracker.running_ids()]
            self._outbox.put(beats)
        self._outbox.drain()
        for cid, reason in due:
            self._terminate(cid, reason)
        for cid in retry:
            self._terminate(cid, "retry")
        if self._started:
            write_or_log(self.ledger.touch_session, self.session_id, now)
        last = self._reaper.last_run
        if reap or (reap is None and (last is None
                                      or now - last >= self.settings.reap_interval_s)):
            try:
                self.reap_now()
            except AtlasError as exc:
                _log.warning("orchestrator reap failed: %s", exc)
        return due + [(cid, "retry") for cid in retry]

    # -- terminating ------------------------------------------------------------------
    def _terminate(self, cid: str, reason: str, *, deadline: float | None = None
                   ) -> tuple[bool, str | None] | None:
        """Drive one tracked compute to its end; ``None`` if it was already ending."""
        with self._lock:
            record, events = self._tracker.begin_terminate(cid, reason, self._clock())
            self._outbox.put(events)
        self._outbox.drain()
        if record is None:
            return None
        ok, err = self._terminate_upstream(record.provider, cid, deadline)
        now = self._clock()
        why = record.reason or reason
        if ok:
            write_or_log(self.ledger.record_terminated, record.name, now, why)
        else:
            write_or_log(self.ledger.record_terminate_failed, record.name, now, why,
                         err or "failed")
        with self._lock:
            self._outbox.put(self._tracker.finish_terminate(
                cid, ok, err, now, retry_after_s=self.settings.reap_interval_s))
        self._outbox.drain()
        return ok, err

    def _terminate_upstream(self, p: Provider, cid: str, deadline: float | None = None,
                            attempts: int | None = None) -> tuple[bool, str | None]:
        return terminate_with_backoff(
            p, cid, attempts=attempts or self.settings.terminate_attempts,
            backoff_s=self.settings.terminate_backoff_s, sleep=self._sleep, deadline=deadline)

    def _on_telemetry(self, event: str, data: Mapping[str, Any]) -> None:
        """Facade calls on tracked computes: activity, status, or an outside terminate."""
        if not event.startswith("compute.") or event == "compute.spawn":
            return
        now = self._clock()
        with self._lock:
            events, ended = self._tracker.observe(event, data, now)
            self._outbox.put(events)
        if ended is not None:
            write_or_log(self.ledger.record_terminated, ended, now, "external")
        self._outbox.drain()

    # -- reaping ----------------------------------------------------------------------
    def reap_now(self, dry_run: bool = False, *, providers: Iterable[str] | None = None,
                 include_foreign: bool = False, only: Iterable[str] | None = None
                 ) -> ReapReport:
        """Reconcile providers with the ledger now (see ``reconcile``). ``dry_run`` only
        plans. ``providers`` limits the providers listed (default: ``reap_providers``, else
        every provider the ledger mentions or this orchestrator tracks).
        ``include_foreign`` also terminates other ledgers' computes past the grace period
        (by default they are only reported).
        ``only``: just these compute ids or ledger names (the detached reaper's pass)."""
        return self._reaper.run(dry_run, providers, include_foreign=include_foreign,
                                only=only)

    def _tracked_sets(self) -> tuple[set[str], set[str], set[str]]:
        with self._lock:
            names, ids = self._tracker.names_and_ids()
            return names, ids, self._tracker.providers()

    # -- providers --------------------------------------------------------------------
    def _provider(self, provider: Any, api_key: str | None, base_url: Any, http: Any
                  ) -> Provider:
        if provider is None or isinstance(provider, str):
            name = config.resolve_provider_name(provider)
            if api_key is None and base_url is None and http is None:
                return self._provider_named(name)
            p = resolve(name, api_key=api_key, base_url=base_url, http=http)
            if base_url is None and (http is None or isinstance(http, Mapping)):
                with self._lock:  # a registry name and a key: a detached reaper can do it
                    self._portable.add(id(p))
            return p
        return resolve(provider, api_key=api_key, base_url=base_url, http=http)

    def _provider_named(self, name: str) -> Provider:
        with self._lock:
            hit = self._resolved.get(name)
        if hit is not None:
            return hit
        injected = self._injected.get(name)
        instance = resolve(injected if injected is not None else name)
        with self._lock:
            kept = self._resolved.setdefault(name, instance)
            if injected is None:
                self._portable.add(id(kept))
            return kept


def _reset_in_child() -> None:
    for orch in list(_instances):
        orch._after_fork()


os.register_at_fork(after_in_child=_reset_in_child)
