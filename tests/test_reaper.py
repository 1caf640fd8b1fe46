"""The reaper: the pure reconcile rules, reap_now against the mock and the sandbox, and the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from orchestrator_support import T0, Clock, FlakyProvider, make_orchestrator

import atlas_nb as atlas
from atlas_nb import cli
from atlas_nb.errors import TransportError
from atlas_nb.models import Compute
from atlas_nb.orchestrator import Orchestrator
from atlas_nb.orchestrator.ledger import Ledger, LedgerEntry, SessionRow
from atlas_nb.orchestrator.naming import compute_name
from atlas_nb.orchestrator.owner import Owner, current
from atlas_nb.orchestrator.reconcile import ReapInputs, plan

ME = current()
DEAD = Owner(ME.host, ME.pid, "another-boot:1")  # our pid, another start time: reused
ELSEWHERE = Owner("another-host", 4242, "x:1")
SESSION, OTHER = "0a0a0a0a", "0b0b0b0b"
LEDGER = "0c0c0c"  # the ledger id plan() is told is its own


def alive(owner: Owner) -> bool | None:
    return {DEAD: False, ELSEWHERE: None}.get(owner, True)


def listed(name: str | None, cid: str, *, status: str = "running",
           age_s: float | None = 10.0) -> Compute:
    born = datetime.fromtimestamp(T0 - age_s, UTC) if age_s is not None else None
    return Compute(id=cid, provider="p", name=name, status=status, created_at=born)  # type: ignore[arg-type]


def entry(name: str, cid: str | None, *, owner: Owner = ME, session: str = OTHER,
          state: str = "live", age_s: float = 10.0) -> LedgerEntry:
    return LedgerEntry(name=name, provider="p", compute_id=cid, session_id=session,
                       host=owner.host, owner_pid=owner.pid, owner_start=owner.start,
                       user_id=None, state=state, created_at=T0 - age_s,  # type: ignore[arg-type]
                       terminated_at=None, reason=None, error=None, cost_per_hour=None,
                       attempts=0)


def name(session: str = OTHER, label: str | None = None) -> str:
    return compute_name("atlas-", LEDGER, session, label)


def run_plan(computes: list[Compute], entries: list[LedgerEntry] = (),  # type: ignore[assignment]
             **kw: object) -> tuple[dict[str, str], dict[str, str]]:
    kw.setdefault("ledger_id", LEDGER)
    inputs = ReapInputs(prefix="atlas-", own_session=SESSION, now=T0, grace_s=600,
                        listed={"p": computes}, entries=entries, alive=alive, **kw)  # type: ignore[arg-type]
    actions, kept = plan(inputs)
    return ({(a.compute_id or a.name or ""): f"{a.action}: {a.reason}" for a in actions},
            {(a.compute_id or a.name or ""): a.reason for a in kept})


def test_names_that_are_not_orchestrator_names_are_never_touched() -> None:
    others = [listed("atlas-1d3da14d25cb", "rp-default", age_s=1e6),  # RunPod's default name
              listed("atlas-demo", "mine", age_s=1e6), listed("prod-db", "x", age_s=1e6),
              listed(None, "nameless", age_s=1e6), listed("ATLAS-0b0b0b0b-abcdef", "up")]
    actions, kept = run_plan(others)
    assert actions == {} and kept == {}


def test_tracked_resources_are_kept() -> None:
    n = name()
    actions, kept = run_plan([listed(n, "c1", age_s=1e6)], [entry(n, "c1", owner=DEAD)],
                             tracked_names=frozenset({n}))
    assert actions == {} and kept == {"c1": "tracked here"}
    actions, kept = run_plan([listed(name(), "c2", age_s=1e6)], tracked_ids=frozenset({"c2"}))
    assert actions == {} and kept == {"c2": "tracked here"}


def test_dead_owners_are_reaped_at_once_live_and_remote_ones_kept() -> None:
    a, b, c = name(label="a"), name(label="b"), name(label="c")
    actions, kept = run_plan(
        [listed(a, "ca", age_s=1), listed(b, "cb", age_s=1e6), listed(c, "cc", age_s=1e6)],
        [entry(a, "ca", owner=DEAD), entry(b, "cb", owner=ME), entry(c, "cc", owner=ELSEWHERE)])
    assert actions == {"ca": f"terminate: owner dead (pid {ME.pid} on {ME.host})"}
    assert kept == {"cb": f"owner alive (pid {ME.pid} on {ME.host})",
                    "cc": "owner on another host (another-host)"}


def test_entries_whose_resource_is_no_longer_listed_are_still_terminated_by_id() -> None:
    n = name()
    actions, _ = run_plan([], [entry(n, "gone", owner=DEAD)])
    assert actions == {"gone": f"terminate: owner dead (pid {ME.pid} on {ME.host})"}


def test_a_remote_owner_is_dead_only_after_a_long_silence() -> None:
    quiet, chatty = name(label="q"), name(label="c")
    sessions = {"0c0c0c0c": SessionRow("0c0c0c0c", ELSEWHERE, 0, T0 - 601, None),
                OTHER: SessionRow(OTHER, ELSEWHERE, 0, T0 - 599, None)}
    actions, kept = run_plan(
        [listed(quiet, "cq"), listed(chatty, "cc")],
        [entry(quiet, "cq", owner=ELSEWHERE, session="0c0c0c0c"),
         entry(chatty, "cc", owner=ELSEWHERE)], sessions=sessions)
    assert actions == {"cq": "terminate: owner on another-host silent for 601s"}
    assert kept == {"cc": "owner on another host (another-host)"}


def test_terminate_failed_entries_are_retried_whoever_owns_them() -> None:
    n = name()
    actions, _ = run_plan([listed(n, "c1")], [entry(n, "c1", owner=ME, state="terminate_failed")])
    assert actions == {"c1": "terminate: retry: terminate failed before"}


def test_entries_of_this_session_it_no_longer_tracks_are_reaped() -> None:
    n = name(SESSION)
    actions, _ = run_plan([listed(n, "c1")], [entry(n, "c1", owner=ME, session=SESSION)])
    assert actions == {"c1": "terminate: this session no longer tracks it"}


def test_stopped_resources_are_reaped_too_terminated_ones_ignored() -> None:
    a, b = name(label="a"), name(label="b")
    actions, kept = run_plan([listed(a, "ca", status="stopped"),
                              listed(b, "cb", status="terminated", age_s=1e6)],
                             [entry(a, "ca", owner=DEAD)])
    assert list(actions) == ["ca"] and kept == {}


def test_an_entry_without_id_is_found_by_name_or_forgotten_after_the_window() -> None:
    found, missing, young = name(label="f"), name(label="m"), name(label="y")
    actions, kept = run_plan(
        [listed(found, "cf")],
        [entry(found, None, owner=DEAD), entry(missing, None, owner=DEAD, age_s=301),
         entry(young, None, owner=DEAD, age_s=5)])
    assert actions["cf"].startswith("terminate: owner dead")
    assert actions[missing].startswith("forget: owner dead")
    assert "never created" in actions[missing]
    assert "may still be in flight" in kept[young]


def test_an_entry_without_id_is_kept_when_the_listing_failed() -> None:
    n = name()
    inputs = ReapInputs(prefix="atlas-", own_session=SESSION, now=T0, grace_s=600, listed={},
                        entries=[entry(n, None, owner=DEAD, age_s=1e6)], alive=alive)
    actions, kept = plan(inputs)
    assert actions == [] and "listing failed" in kept[0].reason


def test_a_closed_entry_still_listed_is_terminated_again() -> None:
    n = name()
    closed = entry(n, "c1", state="terminated")
    actions, _ = run_plan([listed(n, "c1")], known=lambda names: {n: closed} if n in names else {})
    assert actions == {"c1": "terminate: ledger says terminated, still listed"}


def test_unknown_resources_of_a_known_session_follow_its_owner() -> None:
    dead_s, live_s = "0d0d0d0d", "0e0e0e0e"
    a, b = name(dead_s), name(live_s)
    sessions = {dead_s: SessionRow(dead_s, DEAD, 0, 0, None),
                live_s: SessionRow(live_s, ME, 0, 0, None)}
    actions, kept = run_plan([listed(a, "ca"), listed(b, "cb")], sessions=sessions)
    assert list(actions) == ["ca"] and actions["ca"].startswith("terminate: owner dead")
    assert kept["cb"] == f"session {live_s}: owner alive (pid {ME.pid} on {ME.host})"


def test_unknown_resources_wait_for_the_grace_period() -> None:
    old, new, undated = name(label="o"), name(label="n"), name(label="u")
    seen = {"cu": T0 - 601}
    actions, kept = run_plan(
        [listed(old, "co", age_s=601), listed(new, "cn", age_s=599),
         listed(undated, "cu", age_s=None)],
        first_seen=lambda provider, ids: {i: seen[i] for i in ids})
    assert actions == {"co": "terminate: unknown to the ledger, 601s old (grace 600s)",
                       "cu": "terminate: unknown to the ledger, 601s old (grace 600s)"}
    assert kept == {"cn": "unknown to the ledger, in grace period (1s left)"}


# -- reap_now on the mock provider ------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time())  # created_at of mock computes is real time


@pytest.fixture
def provider() -> FlakyProvider:
    return FlakyProvider()


def orphan(ledger: Ledger, provider: FlakyProvider, owner: Owner, *, with_id: bool = True,
           label: str = "orphan") -> Compute:
    """A compute spawned by a (dead or alive) session that is not this process's."""
    n = name(OTHER, label)
    ledger.record_intent(name=n, provider="mock", session_id=OTHER, owner=owner,
                         now=time.time() - 1000)
    c = provider.spawn_compute(atlas.ComputeRequest(image="img:1", name=n))
    if with_id:
        ledger.record_created(n, c.id, 0.2)
    return c


def test_reap_now_dry_run_changes_nothing(tmp_path: Path, clock: Clock,
                                          provider: FlakyProvider) -> None:
    o = make_orchestrator(tmp_path, clock, providers={"mock": provider})
    dead = orphan(o.ledger, provider, DEAD)
    before = o.ledger.entries()
    report = o.reap_now(dry_run=True)
    assert report.dry_run and [(a.action, a.compute_id) for a in report] == [
        ("terminate", dead.id)]
    assert report.lines()[0].startswith(f"would: terminate mock:{dead.id}")
    assert provider.terminate_calls == {}
    assert o.ledger.entries() == before
    assert [c.id for c in provider.live()] == [dead.id]


def test_reap_now_terminates_orphans_and_spares_everything_else(
        tmp_path: Path, clock: Clock, provider: FlakyProvider) -> None:
    o = make_orchestrator(tmp_path, clock, providers={"mock": provider})
    mine = o.spawn(provider="mock", image="img:1")
    dead = orphan(o.ledger, provider, DEAD, label="dead")
    idless = orphan(o.ledger, provider, DEAD, with_id=False, label="idless")
    live = orphan(o.ledger, provider, ME, label="live")
    stopped = orphan(o.ledger, provider, DEAD, label="stopped")
    provider.stop(stopped.id)
    user = provider.spawn_compute(atlas.ComputeRequest(image="img:1", name="atlas-demo"))
    report = o.reap_now()
    assert sorted(a.compute_id or "" for a in report.terminated) == sorted(
        [dead.id, idless.id, stopped.id])
    assert {c.id for c in provider.live()} == {mine.id, live.id, user.id}
    assert user.id not in provider.terminate_calls
    for c in (dead, idless, stopped):
        e = o.ledger.entry(c.name or "")
        assert e is not None and e.state == "terminated" and e.compute_id == c.id
        assert (e.reason or "").startswith("reaped: owner dead")
    assert {a.compute_id: a.reason for a in report.kept}[live.id].startswith("owner alive")
    o.shutdown()


def test_a_failing_reap_stays_in_the_ledger_and_is_retried(
        tmp_path: Path, clock: Clock, provider: FlakyProvider) -> None:
    o = make_orchestrator(tmp_path, clock, providers={"mock": provider})
    dead = orphan(o.ledger, provider, DEAD)
    provider.fail_terminates = 2
    report = o.reap_now()
    assert [a.compute_id for a in report.failed] == [dead.id]
    assert "injected" in (report.failed[0].error or "")
    e = o.ledger.entry(dead.name or "")
    assert e is not None and e.state == "terminate_failed"
    report = o.reap_now()
    assert [a.reason for a in report.terminated] == ["retry: terminate failed before"]
    assert provider.live() == []


def test_a_provider_whose_listing_fails_is_reported_and_ids_still_reaped(
        tmp_path: Path, clock: Clock, provider: FlakyProvider) -> None:
    def broken(**_: object) -> list[Compute]:
        raise TransportError("connection refused", provider="mock")

    o = make_orchestrator(tmp_path, clock, providers={"mock": provider})
    dead = orphan(o.ledger, provider, DEAD)
    provider.list_compute = broken  # type: ignore[method-assign]
    report = o.reap_now()
    assert report.errors == {"mock": "[mock] connection refused"}
    assert [a.compute_id for a in report.terminated] == [dead.id]


def test_the_reap_scope_defaults_to_the_ledger_and_can_be_limited(
        tmp_path: Path, clock: Clock, provider: FlakyProvider) -> None:
    o = make_orchestrator(tmp_path, clock, providers={"mock": provider})
    assert o.reap_now().errors == {}  # empty ledger: nothing listed at all
    orphan(o.ledger, provider, DEAD)
    assert "unknown provider 'nope'" in o.reap_now(providers=["nope"]).errors["nope"]
    assert len(o.reap_now(dry_run=True, providers=["mock"])) == 1


def test_the_first_tick_reaps(tmp_path: Path, clock: Clock, provider: FlakyProvider) -> None:
    o = make_orchestrator(tmp_path, clock, providers={"mock": provider})
    orphan(o.ledger, provider, DEAD)
    o.tick()
    assert provider.live() == []
    orphan(o.ledger, provider, DEAD, label="second")
    clock.advance(30)
    o.tick()  # the reap interval (60 s) has not passed
    assert len(provider.live()) == 1
    clock.advance(30)
    o.tick()
    assert provider.live() == []


# -- against the sandbox (RunPod over loopback) -------------------------------------------------


@pytest.fixture(scope="module")
def sb() -> Iterator[object]:
    with atlas.sandbox.start(clouds=["runpod"], validate=False, provision_delay_s=0.0,
                             start_delay_s=0.0) as sandbox:
        yield sandbox


_KILLED = textwrap.dedent("""
    import os, signal, sys
    import atlas_nb.orchestrator as orch
    ids = [orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1").id for _ in range(2)]
    print(",".join(ids), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def _live_names(sb: object) -> set[str]:
    return {p["name"] for p in sb.runpod.live_pods()}  # type: ignore[attr-defined]


def run_killed_child(sb: object) -> list[str]:
    env = {**os.environ, "ATLAS_NB_SANDBOX": sb.url}  # type: ignore[attr-defined]
    proc = subprocess.run([sys.executable, "-c", _KILLED], env=env, capture_output=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    return proc.stdout.decode().strip().split(",")


def test_after_kill_9_the_next_orchestrator_start_reaps(sb: object) -> None:
    user = atlas.spawn_compute(provider="runpod", gpu="rtx_4090", image="img:1", name="keep-me")
    ids = run_killed_child(sb)
    live = {p["id"] for p in sb.runpod.live_pods()}  # type: ignore[attr-defined]
    assert set(ids) <= live  # kill -9 ran no cleanup
    o = Orchestrator(kernel_hooks=False, heartbeat_interval_s=0.05)
    try:
        o.start()
        deadline = time.monotonic() + 20
        while set(ids) & {p["id"] for p in sb.runpod.live_pods()}:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the new orchestrator did not reap"
            time.sleep(0.05)
    finally:
        o.shutdown()
    assert user.id in {p["id"] for p in sb.runpod.live_pods()}  # type: ignore[attr-defined]
    atlas.terminate(user.id, provider="runpod")


def test_reap_cli_dry_run_then_real(sb: object, capsys: pytest.CaptureFixture[str]) -> None:
    ids = run_killed_child(sb)
    assert cli.main(["reap", "--dry-run", "--provider", "runpod"]) == 0
    out = capsys.readouterr().out
    assert out.count("would: terminate runpod:") == 2 and "dry run" in out
    assert set(ids) <= {p["id"] for p in sb.runpod.live_pods()}  # type: ignore[attr-defined]
    assert cli.main(["reap"]) == 0
    out = capsys.readouterr().out
    assert out.count("did: terminate runpod:") == 2 and out.count(" ok") == 2
    assert not set(ids) & {p["id"] for p in sb.runpod.live_pods()}  # type: ignore[attr-defined]
    assert cli.main(["reap", "--json"]) == 0
    assert '"actions": []' in capsys.readouterr().out


def test_reap_cli_exit_status_on_failure(sb: object, capsys: pytest.CaptureFixture[str]) -> None:
    ids = run_killed_child(sb)
    rule = sb.faults("runpod/rest:DELETE /v2/pods/*", error_rate={500: 1.0})  # type: ignore[attr-defined]
    try:
        assert cli.main(["reap"]) == 1
        assert capsys.readouterr().out.count("FAILED") == 2
    finally:
        rule.clear()
    assert cli.main(["reap"]) == 0
    assert "retry: terminate failed before" in capsys.readouterr().out
    assert not set(ids) & {p["id"] for p in sb.runpod.live_pods()}  # type: ignore[attr-defined]


def test_a_sandbox_session_never_judges_real_cloud_entries(sb: object) -> None:
    # A dead kernel's *real* RunPod pod is in the ledger. A later session that talks to a
    # sandbox must leave that entry alone: the pod would 404 there and be forgotten while it
    # still bills on the real cloud.
    ledger = Ledger(atlas.config.data_dir() / "orchestrator.sqlite3")
    atlas.sandbox.detach(sb.url)  # type: ignore[attr-defined]
    try:
        ledger.record_intent(name=compute_name("atlas-", ledger.ledger_id, OTHER, None),
                             provider="runpod",
                             session_id=OTHER, owner=DEAD, now=time.time())
    finally:
        atlas.sandbox.attach(sb.url)  # type: ignore[attr-defined]
    real = ledger.open_entries()[-1]
    ledger.record_created(real.name, "real-pod-1", 2.0)
    assert real.target == ""
    assert ledger.open_entries(target=sb.url) == []  # type: ignore[attr-defined]
    report = Orchestrator(kernel_hooks=False).reap_now()
    assert not [a for a in report if a.name == real.name]
    entry = ledger.entry(real.name)
    assert entry is not None and entry.state == "live"  # still there for a real-cloud reap
    ledger.close()


# -- `atlas-nb reap` usage, --only and --keys-from-stdin (issue 13, items 5 and 12) -------
def _reap_cli(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atlas_nb.cli", "reap", *argv], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_reap_cli_usage_errors_are_one_line_with_a_suggestion() -> None:
    run = _reap_cli("--provider", "runpd")
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "did you mean 'runpod'" in run.stderr
    bad = _reap_cli("--keys-from-stdin", stdin="{not json")
    assert bad.returncode == 2 and "--keys-from-stdin" in bad.stderr


def test_reap_cli_only_with_nothing_open_is_ok_and_takes_keys_on_stdin() -> None:
    run = _reap_cli("--only", "nosuchid", "--retry-for", "5", "--keys-from-stdin",
                    stdin='{"runpod": "rp-secret-key"}')
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rp-secret-key" not in run.stdout + run.stderr
