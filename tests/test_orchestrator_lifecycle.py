"""Tracked computes: spawn, names, idle TTL, max lifetime, activity, stop, shutdown, events."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from orchestrator_support import Clock, FlakyProvider, Recorder, make_orchestrator

import atlas_nb as atlas
from atlas_nb.errors import NotFound, ProviderError, TransportError, ValidationError
from atlas_nb.orchestrator import Orchestrator
from atlas_nb.orchestrator.naming import owned_pattern, session_of
from atlas_nb.providers.mock import MockProvider


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider() -> FlakyProvider:
    return FlakyProvider()


@pytest.fixture
def orch(tmp_path: Path, clock: Clock, sleeps: list[float], provider: FlakyProvider):
    o = make_orchestrator(tmp_path, clock, sleeps, providers={"mock": provider})
    yield o
    o.shutdown()


def spawn(o: Orchestrator, **kw: object) -> atlas.Compute:
    kw.setdefault("provider", "mock")
    return o.spawn(gpu="h100", image="img:1", **kw)


def test_spawn_names_records_and_tracks(orch: Orchestrator, provider: FlakyProvider,
                                        clock: Clock) -> None:
    c = spawn(orch, name="My Model!", user_id="ada")
    assert c.name is not None and c.name.startswith(
        f"atlas-{orch.ledger.ledger_id}-{orch.session_id}-my-model-")
    assert session_of(c.name, "atlas-") == orch.session_id
    assert [x.id for x in provider.live()] == [c.id]
    (t,) = orch.tracked()
    assert (t.id, t.name, t.provider, t.state, t.user_id) == (c.id, c.name, "mock", "running",
                                                              "ada")
    assert (t.idle_for_s, t.idle_ttl_ms, t.expires_at) == (0.0, 60_000, clock.t + 60)
    entry = orch.ledger.entry(c.name)
    assert entry is not None
    assert (entry.compute_id, entry.state, entry.session_id, entry.user_id) == (
        c.id, "live", orch.session_id, "ada")


def test_names_are_unique_and_unlabelled_names_match_the_pattern(orch: Orchestrator) -> None:
    names = {spawn(orch).name for _ in range(5)}
    assert len(names) == 5
    assert all(owned_pattern("atlas-").match(n or "") for n in names)


def test_idle_ttl_terminates_after_the_ttl_and_touch_postpones_it(
        orch: Orchestrator, provider: FlakyProvider, clock: Clock) -> None:
    c = spawn(orch)
    clock.advance(50)
    assert orch.tick(reap=False) == []
    orch.touch(c.id)  # activity: the idle clock restarts at t+50
    clock.advance(59)
    assert orch.tick(reap=False) == []
    assert orch.tracked()[0].idle_for_s == 59
    clock.advance(1)
    assert orch.tick(reap=False) == [(c.id, "idle")]
    assert orch.tracked() == []
    assert provider.live() == []
    entry = orch.ledger.entry(c.name or "")
    assert entry is not None and (entry.state, entry.reason) == ("terminated", "idle")


def test_any_facade_call_on_the_compute_counts_as_activity(orch: Orchestrator,
                                                           clock: Clock) -> None:
    c = spawn(orch)
    orch.start()  # attaches the telemetry handler (spawn did already; idempotent)
    clock.advance(55)
    atlas.get_compute(c.id, provider="mock")  # emits compute.get for this id
    clock.advance(55)
    assert orch.tick(reap=False) == []
    assert orch.tracked()[0].idle_for_s == 55


def test_activity_on_another_compute_or_provider_does_not_count(orch: Orchestrator,
                                                                clock: Clock) -> None:
    c = spawn(orch)
    other = atlas.spawn_compute(provider="mock", gpu="h100", image="img:1")
    clock.advance(59)
    atlas.get_compute(other.id, provider="mock")
    atlas.telemetry.emit("compute.get", {"provider": "runpod", "id": c.id})
    clock.advance(1)
    assert orch.tick(reap=False) == [(c.id, "idle")]


def test_a_get_refreshes_the_status_and_a_terminated_one_ends_tracking(
        orch: Orchestrator, provider: FlakyProvider) -> None:
    rec = Recorder()
    orch.subscribe("*", rec)
    c = spawn(orch)
    atlas.stop(c.id, provider="mock")
    atlas.get_compute(c.id, provider="mock")
    assert orch.tracked()[0].compute.status == "stopped"
    MockProvider().terminate(c.id)  # behind the orchestrator's back (e.g. the web console)
    atlas.get_compute(c.id, provider="mock")
    assert orch.tracked() == []
    assert rec.kinds() == [("status", "running"), ("terminating", "external"),
                           ("status", "terminated")]


def test_max_lifetime_wins_over_activity(orch: Orchestrator, clock: Clock) -> None:
    c = spawn(orch, max_lifetime_ms=120_000, idle_ttl_ms=0)  # no idle TTL at all
    for _ in range(11):
        clock.advance(10)
        orch.touch(c.id)
        assert orch.tick(reap=False) == []
    clock.advance(10)
    assert orch.tick(reap=False) == [(c.id, "max_lifetime")]


def test_idle_ttl_zero_disables_it(orch: Orchestrator, clock: Clock) -> None:
    spawn(orch, idle_ttl_ms=0)
    clock.advance(10 * 86400)
    assert orch.tick(reap=False) == []
    assert orch.tracked()[0].expires_at is None


def test_the_request_idle_ttl_is_used_when_no_argument_is_given(orch: Orchestrator,
                                                                clock: Clock) -> None:
    c = orch.spawn(atlas.ComputeRequest(image="img:1", idle_ttl_ms=5_000), provider="mock")
    clock.advance(5)
    assert orch.tick(reap=False) == [(c.id, "idle")]


def test_events_once_per_transition_in_order(orch: Orchestrator, clock: Clock) -> None:
    everything, mine = Recorder(), Recorder()
    orch.subscribe("*", everything)
    c = spawn(orch)
    orch.subscribe(c, mine)
    clock.advance(30)
    orch.tick(reap=False)
    clock.advance(30)
    orch.tick(reap=False)
    orch.tick(reap=False)  # nothing left: no second terminating, no second terminated
    assert everything.kinds() == [("status", "running"), ("terminating", "idle"),
                                  ("status", "terminated")]
    assert [e.kind for e in mine] == ["heartbeat", "terminating", "status"]
    beat = mine[0]
    assert (beat.idle_for_s, beat.compute_id, beat.name) == (30, c.id, c.name)
    assert beat.accrued_cost == pytest.approx(2.99 * 30 / 3600, abs=1e-6)


def test_no_duplicate_terminating_when_stop_and_idle_race(orch: Orchestrator, clock: Clock,
                                                          provider: FlakyProvider) -> None:
    rec = Recorder()
    orch.subscribe("*", rec)
    c = spawn(orch)
    clock.advance(60)
    entered, release = threading.Event(), threading.Event()
    original = provider.terminate

    def slow_terminate(cid: str) -> None:
        entered.set()
        release.wait(5)
        original(cid)

    provider.terminate = slow_terminate  # type: ignore[method-assign]
    ticker = threading.Thread(target=orch.tick, kwargs={"reap": False})
    ticker.start()
    assert entered.wait(5)
    stopper = threading.Thread(target=orch.stop_tracked, args=(c.id,))
    stopper.start()
    release.set()
    ticker.join(5)
    stopper.join(5)
    assert rec.kinds() == [("status", "running"), ("terminating", "idle"),
                           ("status", "terminated")]


def test_a_raising_callback_is_isolated(orch: Orchestrator, caplog: pytest.LogCaptureFixture
                                        ) -> None:
    def boom(event: object) -> None:
        raise RuntimeError("callback bug")

    after = Recorder()
    orch.subscribe("*", boom)
    orch.subscribe("*", after)
    c = spawn(orch)
    orch.stop_tracked(c.id)
    assert after.kinds() == [("status", "running"), ("terminating", "stop_tracked"),
                             ("status", "terminated")]
    assert "callback failed" in caplog.text


def test_unsubscribe_handle(orch: Orchestrator) -> None:
    rec = Recorder()
    handle = orch.subscribe("*", rec)
    c = spawn(orch)
    assert handle() is True
    assert handle.unsubscribe() is False
    orch.stop_tracked(c.id)
    assert rec.kinds() == [("status", "running")]
    with orch.subscribe("*", rec):
        spawn(orch)
    assert len(rec.kinds()) == 2


def test_callbacks_may_call_the_orchestrator(orch: Orchestrator) -> None:
    seen: list[object] = []

    def reentrant(event: atlas.orchestrator.Event) -> None:
        seen.append(len(orch.tracked()))
        if event.kind == "status" and event.status == "running":
            orch.stop_tracked(event.compute_id)  # from inside a callback: no deadlock

    orch.subscribe("*", reentrant)
    spawn(orch)
    assert orch.tracked() == []
    assert seen == [1, 0, 0]  # later events are published after the nested stop finished


def test_stop_tracked_terminates_and_untracks(orch: Orchestrator, provider: FlakyProvider
                                              ) -> None:
    c = spawn(orch)
    orch.stop_tracked(c)
    assert provider.live() == []
    assert orch.tracked() == []
    with pytest.raises(NotFound, match="not tracked"):
        orch.stop_tracked(c.id)
    with pytest.raises(NotFound, match="not tracked"):
        orch.touch(c.id)


def test_terminate_outside_the_orchestrator_ends_tracking(orch: Orchestrator) -> None:
    rec = Recorder()
    orch.subscribe("*", rec)
    c = spawn(orch)
    atlas.terminate(c.id, provider="mock")
    assert orch.tracked() == []
    assert rec.kinds() == [("status", "running"), ("terminating", "external"),
                           ("status", "terminated")]
    entry = orch.ledger.entry(c.name or "")
    assert entry is not None and (entry.state, entry.reason) == ("terminated", "external")


def test_terminate_is_retried_with_backoff(orch: Orchestrator, provider: FlakyProvider,
                                           sleeps: list[float]) -> None:
    c = spawn(orch)
    provider.fail_terminates = 2
    orch.stop_tracked(c.id)
    assert provider.terminate_calls[c.id] == 3
    assert sleeps == [0.5, 1.0]
    assert provider.live() == []


def test_terminate_failed_is_reported_kept_and_retried_later(
        orch: Orchestrator, provider: FlakyProvider, clock: Clock, sleeps: list[float]) -> None:
    rec = Recorder()
    orch.subscribe("*", rec)
    c = spawn(orch)
    provider.fail_terminates = 100
    with pytest.raises(ProviderError, match="injected terminate failure") as err:
        orch.stop_tracked(c.id)
    assert "terminate_failed" in (err.value.hint or "")
    assert provider.terminate_calls[c.id] == 4  # terminate_attempts
    assert sleeps == [0.5, 1.0, 2.0]
    (t,) = orch.tracked()
    assert t.state == "terminate_failed" and "injected" in (t.last_error or "")
    entry = orch.ledger.entry(c.name or "")
    assert entry is not None and entry.state == "terminate_failed"
    clock.advance(30)
    assert orch.tick(reap=False) == []  # not yet: retries back off (reap interval)
    clock.advance(30)
    assert orch.tick(reap=False) == [(c.id, "retry")]  # fails again: silent
    provider.fail_terminates = 0
    clock.advance(120)
    assert orch.tick(reap=False) == [(c.id, "retry")]
    assert orch.tracked() == [] and provider.live() == []
    assert rec.kinds() == [("status", "running"), ("terminating", "stop_tracked"),
                           ("terminate_failed", t.last_error), ("status", "terminated")]
    entry = orch.ledger.entry(c.name or "")
    assert entry is not None and entry.state == "terminated"


def test_shutdown_terminates_everything_and_closes(orch: Orchestrator,
                                                   provider: FlakyProvider) -> None:
    rec = Recorder()
    orch.subscribe("*", rec)
    cs = [spawn(orch) for _ in range(4)]
    assert orch.shutdown() == []
    assert provider.live() == []
    assert {e.compute_id for e in rec if e.reason == "shutdown"} == {c.id for c in cs}
    assert all(e.state == "terminated" for e in orch.ledger.entries())
    with pytest.raises(ValidationError, match="shut down"):
        spawn(orch)


def test_sequential_shutdown_reports_what_it_left(orch: Orchestrator,
                                                  provider: FlakyProvider) -> None:
    c = spawn(orch)
    provider.fail_terminates = 100
    assert orch.shutdown("atexit", parallel=False) == [c.id]
    entry = orch.ledger.entry(c.name or "")
    assert entry is not None and (entry.state, entry.reason) == ("terminate_failed", "atexit")


def test_context_manager_shuts_down(tmp_path: Path, clock: Clock,
                                    provider: FlakyProvider) -> None:
    with make_orchestrator(tmp_path, clock, providers={"mock": provider}) as o:
        spawn(o)
        assert len(provider.live()) == 1
    assert provider.live() == []


def test_a_failed_spawn_leaves_nothing_and_closes_its_entry(
        orch: Orchestrator, provider: FlakyProvider) -> None:
    provider.fail_spawn = TransportError("connection reset", provider="mock")
    with pytest.raises(TransportError):
        spawn(orch)
    (entry,) = orch.ledger.entries()
    assert (entry.state, entry.reason, entry.compute_id) == ("terminated", "spawn_failed", None)
    assert orch.tracked() == []


def test_a_spawn_that_created_before_failing_is_terminated(
        orch: Orchestrator, provider: FlakyProvider) -> None:
    def create_then_fail(request: atlas.ComputeRequest) -> None:
        MockProvider().spawn_compute(request)  # the pod exists upstream, but the answer is lost

    provider.on_spawn = create_then_fail
    provider.fail_spawn = TransportError("answer lost", provider="mock")
    with pytest.raises(TransportError):
        spawn(orch)
    assert provider.live() == []
    (entry,) = orch.ledger.entries()
    assert (entry.state, entry.reason) == ("terminated", "spawn_failed")


def test_bad_arguments_fail_before_anything_is_sent(orch: Orchestrator,
                                                    provider: FlakyProvider) -> None:
    with pytest.raises(ValidationError, match="idle_ttl_ms"):
        spawn(orch, idle_ttl_ms=-1)
    with pytest.raises(ValidationError, match="max_lifetime_ms"):
        spawn(orch, max_lifetime_ms=1.5)
    with pytest.raises(ValidationError, match="cost_per_hour"):
        spawn(orch, cost_per_hour=-2)
    with pytest.raises(ValidationError, match="image"):
        orch.spawn(provider="mock")
    with pytest.raises(ValidationError, match="compute id"):
        orch.touch("")
    assert provider.list_compute() == [] and orch.ledger.entries() == []


def test_concurrent_spawns_touches_ticks_and_stops(orch: Orchestrator, clock: Clock,
                                                   provider: FlakyProvider) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            c = spawn(orch)
            for _ in range(20):
                orch.touch(c.id)
                orch.tick(reap=False)
                orch.tracked()
            orch.stop_tracked(c.id)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert orch.tracked() == [] and provider.live() == []
    assert len(orch.ledger.entries()) == 8
    assert all(e.state == "terminated" for e in orch.ledger.entries())


def test_the_background_thread_ticks(tmp_path: Path, provider: FlakyProvider) -> None:
    ended = threading.Event()
    o = Orchestrator(ledger_path=tmp_path / "l.sqlite3", providers={"mock": provider},
                     kernel_hooks=False, heartbeat_interval_s=0.01, idle_ttl_ms=1)
    o.subscribe("*", lambda e: ended.set() if e.status == "terminated" else None)
    try:
        spawn(o)
        assert ended.wait(10)  # no tick() call: the daemon thread found it idle
        assert o._thread is not None and o._thread.daemon
    finally:
        o.shutdown()
    assert o._thread is not None
    o._thread.join(5)
    assert not o._thread.is_alive()


def test_module_level_api_uses_one_default_per_process(tmp_path: Path) -> None:
    import atlas_nb.orchestrator as orch

    try:
        c = orch.spawn(provider="mock", image="img:1")
        assert orch.default() is orch.default()
        assert c.name is not None and orch.session_id() in c.name
        assert [t.id for t in orch.tracked()] == [c.id]
        orch.touch(c.id)
        rec = Recorder()
        orch.subscribe(c.id, rec)
        orch.stop_tracked(c.id)
        assert [k for k, _ in rec.kinds()] == ["terminating", "status"]
        assert orch.cost().rate_per_hour == 0
        assert orch.tracked() == []
    finally:
        first = orch.default()
        orch.shutdown()
    assert orch.default() is not first  # a new one after shutdown, same session id
    assert orch.default().session_id == first.session_id
    orch.shutdown()
