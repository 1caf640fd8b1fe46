"""Chaos: 110 seeded cycles of processes spawning tracked pods on the sandbox while creates,
listings and terminates fail, and processes fork, exit, or die of SIGKILL, SIGTERM and
SIGHUP at random points (issue 13, Proof). At the end of each test: 0 computes of ours
left, 0 foreign computes touched (their event lists unchanged), 0 duplicate creates (no
two pods, in any state or account, share a name).

Each cycle is one child process (five run at a time). The child script (``CHILD``) has
these modes:

* ``exit`` / ``stop`` / ``idle``: a normal life (exit, ``stop_tracked``, idle TTL);
* ``kill`` / ``sigterm`` / ``sighup``: the test signals it at a random moment;
* ``fork``: the child forks; the forked grandchild spawns its own pods and exits or is
  sent SIGTERM, while the parent keeps its own. The parent then checks that its pods are
  still live upstream (a fork that ended them exits 3: "STOLEN");
* ``graceful-5xx``: DELETE of its own pods answers 500 or 503 (a rule it adds over the
  sandbox's control API), then it exits normally: the shutdown writes
  ``terminate_failed`` and hands the pods to a detached reaper;
* ``sighup-429`` / ``sigterm-5xx``: the same with 429 ``Retry-After: 1`` (or 500), and
  the signal once the rule is in place: the 2 s shutdown deadline passes, then the
  detached reaper takes over.

Children that exit normally (``exit``, ``graceful-5xx``, ``fork``) first check that no
other process (another ledger's reaper, a fork) ended what they still track.

``test_chaos_one_ledger_forks_and_signals`` (50 cycles): one ledger, one account, the
orchestrator's providers injected (fast HTTP retries; no detached reaper, since an
injected provider cannot be rebuilt elsewhere): the children reap each other's leftovers
and the test reaps every few cycles under the same faults.

``test_chaos_two_ledgers_two_accounts_detached_reapers`` (60 cycles): each child uses
ledger A or B (two data dirs, so two ledger ids, on the same accounts) and spawns on the
default account or a second one (``api_key=``), with registry providers, so shutdowns
under 429/5xx start detached reapers. The per-pod DELETE rules are cleared after each
batch, so the reapers finish; the test waits for every one of them (their pids come from
the children's log lines) and then reaps from each ledger with each account's key.

Bystanders (never to be touched): hand-named pods on both accounts (``prod-db``,
``atlas-demo``, a legacy-looking ``atlas-0b0b0b0b-a1b2c0``), pods named with another
ledger's id on both accounts, and, in the second test, pods of a third ledger C whose
owner was killed -9 at the start and whose ledger is never reaped: nothing but the ledger
id in their names protects them (their owner is dead, and the grace period for unknown
names is 1 s), so any reaper that took another ledger's computes for its own would end
them.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import atlas_nb as atlas
from atlas_nb import config
from atlas_nb.orchestrator import Orchestrator
from atlas_nb.orchestrator.ledger import FILENAME, Ledger
from atlas_nb.orchestrator.naming import compute_name, ledger_of
from atlas_nb.providers import resolve

pytestmark = pytest.mark.slow

SEED = 20261127
PARALLEL = 5
PER_POD_DELETE = "runpod/rest:DELETE /v2/pods/"
EXPECTED_CODE = {"exit": 0, "stop": 0, "idle": 0, "fork": 0, "graceful-5xx": 0,
                 "kill": -signal.SIGKILL, "sigterm": -signal.SIGTERM,
                 "sigterm-5xx": -signal.SIGTERM, "sighup": -signal.SIGHUP,
                 "sighup-429": -signal.SIGHUP}
SETTINGS = ("orchestrator:\n  heartbeat_interval_s: 0.02\n  terminate_attempts: {attempts}\n"
            "  terminate_backoff_s: 0.02\n  reap_interval_s: 3600\n  grace_period_s: 1\n")

CHILD = textwrap.dedent("""
    import logging, os, random, signal, sys, time
    # As in a terminal session (a test run under nohup would inherit SIGHUP ignored).
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    # The orchestrator logs "detached reaper pid N ..." at INFO: the test waits for those.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    logging.getLogger("atlas_nb.orchestrator").setLevel(logging.INFO)
    import atlas_nb as atlas
    from atlas_nb._http import RetryPolicy
    from atlas_nb.errors import AtlasError
    from atlas_nb.orchestrator import Orchestrator
    from atlas_nb.providers.runpod import RunPod
    from atlas_nb.sandbox.control import Control
    mode, seed = sys.argv[1], int(sys.argv[2])
    key = os.environ.get("CHAOS_API_KEY") or None
    # The sandbox commits a late create 0.1 s after the client gave up: settle past that.
    RunPod.create_settle_s = 0.3
    if os.environ.get("CHAOS_PORTABLE") == "1":
        # Registry providers: a detached reaper can rebuild them (the key on its stdin).
        orch = Orchestrator()
        where = {"provider": "runpod", "api_key": key}
        def live_ids():
            return {c.id for c in atlas.list_compute(provider="runpod", api_key=key)
                    if c.status != "terminated"}
    else:
        # Quick HTTP retries keep a cycle short; the orchestrator's policy comes from config.
        fast = RunPod(api_key=key,
                      retry=RetryPolicy(attempts=3, backoff_base=0.02, backoff_max=0.1))
        orch = Orchestrator(providers={"runpod": fast})
        where = {"provider": "runpod"}
        def live_ids():
            return {c.id for c in fast.list_compute() if c.status != "terminated"}
    rng = random.Random(seed)

    def spawn(label, n):
        ids = []
        for _ in range(n):
            try:
                c = orch.spawn(gpu="rtx_4090", image="img:1", name=label,
                               idle_ttl_ms=40 if mode == "idle" else 0, **where)
                ids.append(c.id)
                print("spawned", c.id, flush=True)
            except AtlasError as exc:
                print("spawn failed:", exc, flush=True)
        return ids

    def check_own(when):
        # Nothing this process still tracks was ended by anyone else (another ledger's
        # reaper, a forked child's exit or signal).
        mine = {t.id for t in orch.tracked()}
        try:
            live = live_ids()
        except AtlasError as exc:
            print("check skipped:", exc, flush=True)
            return
        if mine - live:
            print("STOLEN", when, sorted(mine - live), flush=True)
            os._exit(3)

    ids = spawn(f"c{seed}", rng.randint(1, 3) if mode != "graceful-5xx" else rng.randint(1, 2))
    if mode == "stop" and ids:
        try:
            orch.stop_tracked(ids[0])
        except AtlasError as exc:
            print("stop failed:", exc, flush=True)
    if mode == "idle":
        deadline = time.monotonic() + 5
        while orch.tracked() and time.monotonic() < deadline:
            time.sleep(0.02)
    if mode == "fork":
        end = rng.choice(["exit", "sigterm"])
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            spawn(f"g{seed}", rng.randint(1, 2))
            os.write(w, b"x")
            os.close(w)
            if end == "sigterm":
                time.sleep(30)  # the parent sends SIGTERM
            sys.exit(0)  # a normal exit: its atexit cleanup runs
        os.close(w)
        os.read(r, 1)
        os.close(r)
        if end == "sigterm":
            os.kill(pid, signal.SIGTERM)
        print("forked child ended:", os.waitpid(pid, 0)[1], flush=True)
        check_own("after the forked child ended")
    if mode in ("exit", "graceful-5xx"):
        check_own("before exit")
    if mode in ("graceful-5xx", "sighup-429", "sigterm-5xx"):
        faults = Control(os.environ["ATLAS_NB_SANDBOX"]).faults
        for cid in ids:
            if mode == "sighup-429":
                faults(f"runpod/rest:DELETE /v2/pods/{cid}", rate_limit_429=1.0,
                       retry_after_s=1)
            else:
                faults(f"runpod/rest:DELETE /v2/pods/{cid}",
                       error_rate={rng.choice([500, 503]): 1.0})
        print("ready", flush=True)
    if mode.startswith(("kill", "sigterm", "sighup")):
        time.sleep(30)  # the test signals us first
""")


@dataclass
class Cycle:
    """One child process and how it is to end."""

    proc: subprocess.Popen[str]
    mode: str
    signal_at: float
    tag: str

    def finish(self) -> tuple[int, str, str]:
        """Signal it if its mode says so, wait; ``(exit code, stdout, stderr)``."""
        head = ""
        signum = {"kill": signal.SIGKILL, "sigterm": signal.SIGTERM,
                  "sighup": signal.SIGHUP}.get(self.mode.split("-")[0])
        if signum is not None:
            if "-" in self.mode:  # signal once its DELETE fault rules are in place
                assert self.proc.stdout is not None
                for line in self.proc.stdout:
                    head += line
                    if line.startswith("ready"):
                        break
            else:
                time.sleep(max(0.0, self.signal_at - time.monotonic()))
            if self.proc.poll() is None:
                self.proc.send_signal(signum)
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its forked child holds the pipes too
            out, err = self.proc.communicate()
            raise AssertionError(f"{self.tag} hung:\n{head}{out}\n{err}") from None
        return self.proc.returncode, head + out, err


def start_cycle(rng: random.Random, cycle: int, modes: tuple[str, ...], env: dict[str, str],
                tag: str) -> Cycle:
    mode = rng.choice(modes)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(cycle)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # a hung forked grandchild dies with it
    return Cycle(proc, mode, time.monotonic() + rng.uniform(0.05, 1.4), f"cycle {cycle} ({tag})")


class Tally:
    """What the cycles did: modes, exit codes, detached reaper pids, per-pod faults."""

    def __init__(self) -> None:
        self.modes: Counter[str] = Counter()
        self.codes: Counter[int] = Counter()
        self.reapers: set[int] = set()
        self.shutdown_faults: Counter[str | int] = Counter()

    def add(self, cycle: Cycle) -> None:
        code, out, err = cycle.finish()
        self.modes[cycle.mode] += 1
        self.codes[code] += 1
        what = f"{cycle.tag} {cycle.mode} exited {code}\n--- stdout\n{out}\n--- stderr\n{err}"
        assert "STOLEN" not in out, what  # another process ended what it still tracked
        assert "Traceback" not in err, what
        assert code == EXPECTED_CODE[cycle.mode], what
        self.reapers |= {int(p) for p in re.findall(r"detached reaper pid (\d+)", err)}

    def clear_per_pod_rules(self, sb: Any) -> None:
        """Remove the children's per-pod DELETE rules (counting what they injected)."""
        for rule in sb.faults.rules:
            if rule.route.startswith(PER_POD_DELETE) and "*" not in rule.route:
                self.shutdown_faults.update(rule.injected)
                rule.clear()


def run_batches(sb: Any, cycles: range, rng: random.Random, modes: tuple[str, ...],
                env_for: Any, tally: Tally, between: Any = None) -> None:
    for first in range(cycles.start, cycles.stop, PARALLEL):
        batch = []
        for c in range(first, min(first + PARALLEL, cycles.stop)):
            env, tag = env_for(rng)
            batch.append(start_cycle(rng, c, modes, env, tag))
        try:
            for cycle in batch:
                tally.add(cycle)
        finally:  # on a failure, no child may outlive the test
            for cycle in batch:
                if cycle.proc.poll() is None:
                    cycle.proc.kill()
                    cycle.proc.communicate()
        tally.clear_per_pod_rules(sb)
        if between is not None:
            between(first)


def wait_for_exit(pids: set[int], timeout_s: float) -> float:
    """Wait until none of ``pids`` runs (gone, or a zombie nobody reaped); seconds waited.
    They are detached reapers: not our children, so they cannot be waited for."""
    started = time.monotonic()
    while True:
        running = set()
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if state != "Z":
                running.add(pid)
        if not running:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"detached reapers still running: {running}"
        time.sleep(0.25)


def pods_of(sb: Any, ledgers: set[str], *, live: bool = True) -> list[dict[str, Any]]:
    """Every pod (any account) whose name carries one of ``ledgers``' ids."""
    pods = sb.runpod.live_pods() if live else list(sb.runpod.pods.values())
    return [p for p in pods if ledger_of(p.get("name"), "atlas-") in ledgers]


def assert_no_duplicate_creates(sb: Any) -> int:
    names = Counter(p["name"] for p in sb.runpod.pods.values() if p.get("name"))
    dupes = {n: k for n, k in names.items() if k > 1}
    assert dupes == {}, f"duplicate creates: {dupes}"
    return sum(names.values())


def assert_untouched(sb: Any, before: dict[str, list[Any]]) -> None:
    for pid, events in before.items():  # still there, never stopped, no new event of any kind
        pod = sb.runpod.store.get(pid)
        assert (pod.phase, pod.last_change) == ("BOOT", "Rented by User"), pid
        assert pod.events == events, pid


def bystanders(sb: Any, keys: list[str | None]) -> list[str]:
    """Pods no reaper here may touch, on each account of ``keys``: hand-named ones (with
    and without the prefix, one legacy-looking) and ones named with another ledger's id."""
    made = []
    for i, key in enumerate(keys):
        names = [f"prod-db-{i}", f"atlas-demo-{i}", f"atlas-0b0b0b0b-a1b2c{i}",
                 compute_name("atlas-", "c0ffee", "0b0b0b0b", f"by{i}")]
        made += [atlas.spawn_compute(provider="runpod", gpu="rtx_4090", image="img:1", name=n,
                                     api_key=key).id for n in names]
    made.append(atlas.spawn_compute(provider="runpod", image="img:1").id)  # atlas-<hex>
    return made


@pytest.fixture
def sb() -> Iterator[Any]:
    with atlas.sandbox.start(clouds=["runpod"], validate=False, seed=SEED,
                             provision_delay_s=0.0, start_delay_s=0.0) as sandbox:
        yield sandbox


def test_chaos_one_ledger_forks_and_signals(sb: Any) -> None:
    cycles = 50
    modes = ("exit", "stop", "idle", "kill", "kill", "sigterm", "sighup", "fork")
    config.config_path().write_text(SETTINGS.format(attempts=3))
    before = {pid: list(sb.runpod.store.get(pid).events) for pid in bystanders(sb, [None])}
    faults = [
        sb.faults("runpod/rest:DELETE /v2/pods/*", error_rate={500: 0.25, 503: 0.1},
                  rate_limit_429=0.05, retry_after_s=1),
        sb.faults("runpod/rest:POST /v2/pods", error_rate={502: 0.1}, lost_response_rate=0.1,
                  late_commit_rate=0.05, late_commit_ms=100),
        sb.faults("runpod/rest:GET /v2/pods", error_rate={500: 0.15}),
    ]
    env = {**os.environ, "ATLAS_NB_SANDBOX": sb.url, "PYTHONWARNINGS": "ignore"}
    reaper = Orchestrator(background=False, kernel_hooks=False, terminate_backoff_s=0.01)
    mine = {reaper.ledger.ledger_id}
    tally = Tally()
    started = time.monotonic()

    def reap_sometimes(first: int) -> None:
        if first % (3 * PARALLEL) == 0:
            reaper.reap_now()  # under the same faults, while other sessions come and go

    run_batches(sb, range(cycles), random.Random(SEED), modes, lambda rng: (env, "ledger"),
                tally, reap_sometimes)
    chaos_s = time.monotonic() - started
    injected = sum(sum(rule.injected.values()) for rule in faults)
    for rule in faults:
        rule.clear()
    for _ in range(5):
        report = reaper.reap_now()
        assert all("unknown to the ledger" not in a.reason for a in report), report.lines()
        if not pods_of(sb, mine):
            break
    leaked = pods_of(sb, mine)
    assert leaked == [], f"leaked {len(leaked)} pods: {[p['name'] for p in leaked]}"
    assert_untouched(sb, before)
    created = assert_no_duplicate_creates(sb)
    # The ledger agrees: everything created is closed; what stays open never got an id.
    entries = reaper.ledger.entries()
    assert entries and all(e.state == "terminated" or e.compute_id is None for e in entries)
    reaped = [e for e in entries if (e.reason or "").startswith("reaped: owner dead")]
    # The run really was chaotic: every mode ran, faults fired, kills left work for reapers.
    assert set(tally.modes) == set(modes), tally.modes
    assert injected > 20 and reaped, (injected, len(reaped))
    print(f"\nchaos (one ledger): {cycles} cycles in {chaos_s:.1f}s, modes {dict(tally.modes)}, "
          f"exit codes {dict(tally.codes)}, {injected} faults injected, {created} pods "
          f"created, {len(entries)} ledger entries, {len(reaped)} reaped from dead owners")


_THIRD_LEDGER = textwrap.dedent("""
    import os, signal, sys
    import atlas_nb.orchestrator as orch
    for key in (None, sys.argv[1]):
        print(orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1", name="c3",
                         api_key=key).id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # its ledger is never reaped in this test
""")


def test_chaos_two_ledgers_two_accounts_detached_reapers(sb: Any, tmp_path: Path) -> None:
    cycles = 60
    modes = ("exit", "graceful-5xx", "graceful-5xx", "sighup-429", "sigterm-5xx", "kill",
             "kill", "sighup", "fork")
    config.config_path().write_text(SETTINGS.format(attempts=1))
    second = sb.add_account("runpod")
    dirs = {name: tmp_path / f"ledger-{name}" for name in "abc"}
    base = {**os.environ, "ATLAS_NB_SANDBOX": sb.url, "PYTHONWARNINGS": "ignore",
            "CHAOS_PORTABLE": "1"}
    third = subprocess.run([sys.executable, "-c", _THIRD_LEDGER, second.key],
                           env={**base, "ATLAS_NB_DATA_DIR": str(dirs["c"])},
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == -signal.SIGKILL, third.stderr
    foreign = third.stdout.split() + bystanders(sb, [None, second.key])
    assert len(foreign) == 11
    before = {pid: list(sb.runpod.store.get(pid).events) for pid in foreign}
    faults = [
        sb.faults("runpod/rest:DELETE /v2/pods/*", error_rate={500: 0.2, 503: 0.1},
                  rate_limit_429=0.05, retry_after_s=1),
        sb.faults("runpod/rest:POST /v2/pods", error_rate={502: 0.1}, lost_response_rate=0.1,
                  late_commit_rate=0.05, late_commit_ms=100),
        sb.faults("runpod/rest:GET /v2/pods", error_rate={500: 0.1}),
    ]
    accounts = {"default": sb.runpod.key, "acct2": second.key}

    def env_for(rng: random.Random) -> tuple[dict[str, str], str]:
        ledger = rng.choice("ab")
        account = "acct2" if rng.random() < 0.35 else "default"
        env = {**base, "ATLAS_NB_DATA_DIR": str(dirs[ledger])}
        if account == "acct2":
            env["CHAOS_API_KEY"] = second.key
        return env, f"ledger {ledger}, {account}"

    tally = Tally()
    started = time.monotonic()
    run_batches(sb, range(cycles), random.Random(SEED + 1), modes, env_for, tally)
    chaos_s = time.monotonic() - started
    injected = sum(sum(rule.injected.values()) for rule in faults)
    for rule in faults:
        rule.clear()
    try:
        waited = wait_for_exit(tally.reapers, timeout_s=90)
    finally:  # on a failure, none may outlive the test (and act on a later sandbox)
        for pid in tally.reapers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    logs = [p for d in (dirs["a"], dirs["b"]) for p in sorted(d.glob("reap-*.log"))]
    # Then a reap from each ledger with each account's key (the account-2 leftovers of a
    # kill -9 need that account's key: the default one cannot even see them).
    ledgers = {name: Ledger(dirs[name] / FILENAME) for name in "ab"}
    ours = {ledgers[name].ledger_id for name in "ab"}
    assert len(ours | {Ledger(dirs["c"] / FILENAME).ledger_id}) == 3
    for _ in range(3):
        for name in "ab":
            for key in accounts.values():
                reaper = Orchestrator(ledger_path=dirs[name] / FILENAME, background=False,
                                      kernel_hooks=False, terminate_backoff_s=0.01,
                                      providers={"runpod": resolve("runpod", api_key=key)})
                report = reaper.reap_now()
                assert all("unknown to the ledger" not in a.reason for a in report), (
                    report.lines())
        if not pods_of(sb, ours):
            break
    leaked = pods_of(sb, ours)
    assert leaked == [], f"leaked {len(leaked)} pods: {[p['name'] for p in leaked]}"
    assert_untouched(sb, before)
    created = assert_no_duplicate_creates(sb)
    for name in "ab":
        entries = ledgers[name].entries()
        assert entries and all(e.state == "terminated" or e.compute_id is None
                               for e in entries), name
    spawned = pods_of(sb, ours, live=False)
    on_second = [p for p in spawned if sb.runpod.store.get(
        p["id"], include_terminated=True).account != "default"]
    # Not vacuous: every mode ran, both ledgers and accounts were used, the shutdown
    # faults fired (429 and 5xx), detached reapers ran and logged, kills happened.
    assert set(tally.modes) == set(modes), tally.modes
    assert {ledger_of(p["name"], "atlas-") for p in spawned} == ours
    assert on_second and len(on_second) < len(spawned)
    assert tally.shutdown_faults[429] > 0 and (tally.shutdown_faults[500]
                                               + tally.shutdown_faults[503]) > 0, (
        tally.shutdown_faults)
    assert tally.reapers and logs, (tally.reapers, logs)
    assert injected > 20
    print(f"\nchaos (two ledgers, two accounts): {cycles} cycles in {chaos_s:.1f}s, modes "
          f"{dict(tally.modes)}, exit codes {dict(tally.codes)}, {injected} faults injected "
          f"+ {dict(tally.shutdown_faults)} on DELETE during shutdowns, {created} pods "
          f"created ({len(on_second)} of ours on the second account), "
          f"{len(tally.reapers)} detached reapers ({len(logs)} logs) finished "
          f"{waited:.1f}s after the faults cleared")


_SPAWN_AND_DIE = textwrap.dedent("""
    import os, signal
    import atlas_nb.orchestrator as orch
    print(orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1").id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_reap_pass_during_interpreter_shutdown_still_terminates(
        sb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the chaos above: a child's daemon thread was reaping when the child exited
    normally. ``concurrent.futures`` refuses new work once the interpreter shuts down, so
    the pass died with a traceback on stderr and ended nothing. It now runs in line."""
    import concurrent.futures.thread as pool_module

    dead = subprocess.run([sys.executable, "-c", _SPAWN_AND_DIE], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "ATLAS_NB_SANDBOX": sb.url})
    assert dead.returncode == -signal.SIGKILL, dead.stderr
    pod = dead.stdout.strip()
    reaper = Orchestrator(background=False, kernel_hooks=False)
    monkeypatch.setattr(pool_module, "_shutdown", True)  # what atexit's _python_exit sets
    report = reaper.reap_now()
    assert [a.compute_id for a in report.terminated] == [pod], report.lines()
    assert sb.runpod.store.get(pod, include_terminated=True).phase == "TERMINATED"
