"""The reaper: one reconcile pass over the providers, the ledger and the tracked set.

``Reaper.run`` lists each provider in scope, reads the ledger (after the listing, so a
spawn recorded meanwhile is seen as owned), takes the tracked snapshot (after the
ledger, so an entry of this session that is not in it really is untracked), asks
``reconcile.plan`` what to do and, unless it is a dry run, does it: terminations in
parallel with a short backoff, each recorded in the ledger (``terminated``, or
``terminate_failed`` so the next pass retries it). One pass runs at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from ..errors import AtlasError
from ..models import Compute
from ..providers import Provider
from ..providers.base import fingerprint_of
from . import owner as owners
from .ledger import Ledger, configured_providers, current_target, write_or_log
from .reconcile import ReapAction, ReapInputs, ReapReport, plan
from .settings import Settings
from .terminate import one_line

__all__ = ["Reaper"]

_WORKERS = 8
_ATTEMPTS = 2  # per pass: a failure is retried by the next pass anyway


class Reaper:
    """Runs reconcile passes for one orchestrator (its ledger, settings and session)."""

    def __init__(
        self, *, ledger: Ledger, settings: Settings, session_id: str,
        clock: Callable[[], float], provider_named: Callable[[str], Provider],
        tracked: Callable[[], tuple[set[str], set[str], set[str]]],
        terminate: Callable[[Provider, str, int], tuple[bool, str | None]],
    ) -> None:
        self._ledger = ledger
        self._settings = settings
        self._session_id = session_id
        self._clock = clock
        self._provider_named = provider_named
        self._tracked = tracked  # () -> (names, ids, providers) of what is tracked
        self._terminate = terminate
        self._lock = threading.Lock()
        self.last_run: float | None = None

    def run(self, dry_run: bool = False, providers: Iterable[str] | None = None, *,
            include_foreign: bool = False, only: Iterable[str] | None = None) -> ReapReport:
        """One pass; ``dry_run`` only plans. ``providers`` overrides the scope.
        ``include_foreign``: other ledgers' computes are fair game too (past the grace).
        ``only``: act on (and report) just these compute ids or ledger names; the scope
        is then their providers (what the detached reaper uses)."""
        wanted = frozenset(only) if only is not None else None
        with self._lock:
            now = self._clock()
            if not dry_run:
                self.last_run = now
            if wanted is not None and providers is None:
                providers = {e.provider for e in self._ledger.open_entries(
                    target=current_target()) if e.name in wanted or e.compute_id in wanted}
            scope = self._scope(providers)
            listed: dict[str, list[Compute]] = {}
            errors: dict[str, str] = {}
            for name in sorted(scope):
                try:
                    listed[name] = list(self._provider_named(name).list_compute())
                except Exception as exc:  # one provider failing must not stop the others
                    errors[name] = one_line(exc)
            entries = self._ledger.open_entries(scope, target=current_target())
            sessions = self._ledger.sessions()
            names, ids, _ = self._tracked()
            actions, kept = plan(ReapInputs(
                prefix=self._settings.name_prefix, own_session=self._session_id, now=now,
                grace_s=self._settings.grace_period_s, listed=listed, entries=entries,
                tracked_names=frozenset(names), tracked_ids=frozenset(ids), sessions=sessions,
                alive=owners.is_alive, known=self._ledger.states_by_name,
                first_seen=lambda p, cids: self._ledger.first_seen(p, cids, now,
                                                                   record=not dry_run),
                ledger_id=self._ledger.ledger_id, include_foreign=include_foreign,
                account_of=self._account_of,
            ))
            if wanted is not None:
                actions, kept = _only(actions, wanted), _only(kept, wanted)
            if dry_run:
                return ReapReport(actions, kept=kept, errors=errors, dry_run=True)
            return ReapReport(self._execute(actions), kept=kept, errors=errors)

    def _account_of(self, name: str) -> str | None:
        """The account the reaper's credentials for ``name`` reach (``None``: unknown, so
        entries recorded with an account are left for a reaper that has its key)."""
        try:
            return fingerprint_of(self._provider_named(name))
        except Exception:  # a lookup that fails proves no account
            return None

    def _scope(self, providers: Iterable[str] | None) -> set[str]:
        if providers is not None:
            return set(providers)
        if self._settings.reap_providers is not None:
            return set(self._settings.reap_providers)
        scope = self._tracked()[2] | self._ledger.providers()
        if self._ledger.recovered_from is not None:  # a fresh ledger after corruption
            scope |= configured_providers()  # knows no provider: list every configured one
        return scope

    def _execute(self, actions: list[ReapAction]) -> list[ReapAction]:
        if not actions:
            return []
        done: list[ReapAction | Future[ReapAction]] = []
        with ThreadPoolExecutor(max_workers=min(_WORKERS, len(actions)),
                                thread_name_prefix="atlas-reap") as pool:
            for action in actions:
                try:
                    done.append(pool.submit(self._execute_one, action))
                except RuntimeError:
                    # The interpreter is shutting down (the daemon thread's pass as the
                    # process exits): no new threads, so do it in line rather than drop it.
                    done.append(self._execute_one(action))
        return [d.result() if isinstance(d, Future) else d for d in done]

    def _execute_one(self, action: ReapAction) -> ReapAction:
        now = self._clock()
        if action.action == "forget":
            write_or_log(self._ledger.record_terminated, action.name, now, "never_created")
            return action.finished(True)
        try:
            p = self._provider_named(action.provider)
        except AtlasError as exc:
            return action.finished(False, one_line(exc))
        assert action.compute_id is not None
        ok, err = self._terminate(p, action.compute_id, _ATTEMPTS)
        entry = self._ledger.entry(action.name) if action.name else None
        why = f"reaped: {action.reason}"
        if entry is None and action.name:
            write_or_log(self._ledger.record_reaped, name=action.name, provider=action.provider,
                 compute_id=action.compute_id, now=now, reason=why, error=err)
        elif entry is not None and entry.state != "terminated":
            if entry.compute_id is None:
                write_or_log(self._ledger.record_created, entry.name, action.compute_id, None)
            if ok:
                write_or_log(self._ledger.record_terminated, entry.name, now, why)
            else:
                write_or_log(self._ledger.record_terminate_failed, entry.name, now, why,
                     err or "failed")
        return action.finished(ok, err)


def _only(actions: list[ReapAction], wanted: frozenset[str]) -> list[ReapAction]:
    return [a for a in actions if a.name in wanted or a.compute_id in wanted]
