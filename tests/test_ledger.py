"""The durable ledger: file mode, WAL, intent before create, crashes, concurrent processes."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from orchestrator_support import Clock, FlakyProvider, make_orchestrator

from atlas_nb import config
from atlas_nb.errors import UnknownError
from atlas_nb.models import ComputeRequest
from atlas_nb.orchestrator import Orchestrator
from atlas_nb.orchestrator.ledger import FILENAME, Ledger
from atlas_nb.orchestrator.owner import Owner, current

ME = current()


def test_default_path_is_in_the_data_dir_with_mode_0600_and_wal() -> None:
    o = Orchestrator(background=False, kernel_hooks=False)
    assert o.ledger.path == config.data_dir() / FILENAME
    o.spawn(provider="mock", image="img:1")
    for path in o.ledger.path.parent.glob(f"{FILENAME}*"):  # the db, -wal and -shm
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    mode = sqlite3.connect(o.ledger.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    o.shutdown()


def test_a_too_open_ledger_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    Ledger(path).sessions()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_intent_is_recorded_before_the_provider_is_called(tmp_path: Path) -> None:
    provider = FlakyProvider()
    o = make_orchestrator(tmp_path, Clock(), providers={"mock": provider})
    seen: list[object] = []

    def check(request: ComputeRequest) -> None:
        entry = o.ledger.entry(request.name or "")
        seen.append(entry and (entry.state, entry.compute_id, entry.owner_pid, entry.provider))

    provider.on_spawn = check
    c = o.spawn(provider="mock", image="img:1", user_id="u1")
    assert seen == [("live", None, os.getpid(), "mock")]
    entry = o.ledger.entry(c.name or "")
    assert entry is not None
    assert (entry.compute_id, entry.session_id, entry.host, entry.owner_start, entry.user_id) == (
        c.id, o.session_id, ME.host, ME.start, "u1")
    assert entry.cost_per_hour == 0.2
    o.shutdown()
    closed = o.ledger.entry(c.name or "")
    assert closed is not None and closed.state == "terminated"
    assert closed.terminated_at is not None and closed.reason == "shutdown"


def test_an_unusable_ledger_refuses_the_spawn_before_anything_is_created(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    provider = FlakyProvider()
    o = Orchestrator(ledger_path=blocker / "ledger.sqlite3", providers={"mock": provider},
                     background=False, kernel_hooks=False)
    with pytest.raises(UnknownError, match=r"ledger .* cannot be opened"):
        o.spawn(provider="mock", image="img:1")
    assert provider.list_compute() == []


def test_session_rows_and_open_entries(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.open_session("0000aaaa", ME, 10.0)
    ledger.record_intent(name="n1", provider="mock", session_id="0000aaaa", owner=ME, now=11.0)
    ledger.record_intent(name="n2", provider="runpod", session_id="0000aaaa", owner=ME, now=12.0)
    ledger.record_created("n1", "id-1", 0.5)
    ledger.record_terminate_failed("n2", 13.0, "idle", "boom")
    assert [e.name for e in ledger.open_entries()] == ["n1", "n2"]
    assert [e.name for e in ledger.open_entries(["runpod"])] == ["n2"]
    n2 = ledger.entry("n2")
    assert n2 is not None and (n2.state, n2.error, n2.attempts, n2.reason) == (
        "terminate_failed", "boom", 1, "idle")
    ledger.record_terminated("n1", 14.0, "idle")
    ledger.record_terminated("n2", 15.0, None)
    assert ledger.open_entries() == []
    n2 = ledger.entry("n2")
    assert n2 is not None and (n2.state, n2.error, n2.reason) == ("terminated", None, "idle")
    ledger.end_session("0000aaaa", 16.0)
    row = ledger.sessions()["0000aaaa"]
    assert (row.owner, row.started_at, row.ended_at) == (ME, 10.0, 16.0)
    assert ledger.providers() == {"mock", "runpod"}


def test_a_terminated_entry_is_never_reopened_by_a_late_failure(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.record_intent(name="n", provider="mock", session_id="s", owner=ME, now=1.0)
    ledger.record_terminated("n", 2.0, "idle")
    ledger.record_terminate_failed("n", 3.0, "atexit", "late")
    entry = ledger.entry("n")
    assert entry is not None and entry.state == "terminated"


def test_lookups_by_many_names_and_first_sightings(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    names = [f"n{i}" for i in range(1200)]  # more than one SQLite parameter chunk
    for name in names[::100]:
        ledger.record_intent(name=name, provider="mock", session_id="s", owner=ME, now=1.0)
    assert sorted(ledger.states_by_name(names)) == sorted(names[::100])
    assert ledger.first_seen("mock", ["a", "b"], 5.0, record=False) == {}
    assert ledger.first_seen("mock", ["a", "b"], 5.0) == {"a": 5.0, "b": 5.0}
    assert ledger.first_seen("mock", ["a", "c"], 9.0) == {"a": 5.0, "c": 9.0}


def test_old_terminated_entries_are_pruned_on_open(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    ledger = Ledger(path)
    ledger.record_intent(name="old", provider="mock", session_id="s", owner=ME, now=1.0)
    ledger.record_terminated("old", 2.0, "idle")  # 1970: far older than 30 days
    ledger.record_intent(name="stuck", provider="mock", session_id="s", owner=ME, now=1.0)
    ledger.close()
    assert [e.name for e in Ledger(path).entries()] == ["stuck"]  # open entries are kept


_CRASH = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from orchestrator_support import FlakyProvider
    from atlas_nb.orchestrator import Orchestrator
    provider = FlakyProvider()
    provider.on_spawn = lambda request: os.kill(os.getpid(), signal.SIGKILL)
    o = Orchestrator(ledger_path=sys.argv[1], providers={"mock": provider}, background=False)
    o.spawn(provider="mock", image="img:1", name="crashy")
""")


def test_the_entry_survives_a_kill_between_intent_and_create(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(path), str(Path(__file__).parent)],
                          capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    (entry,) = Ledger(path).entries()
    assert (entry.state, entry.compute_id, entry.provider) == ("live", None, "mock")
    assert "-crashy-" in entry.name and entry.owner_pid != os.getpid()
    assert entry.owner.start is not None
    assert Ledger(path).sessions()[entry.session_id].owner.pid == entry.owner_pid


_WRITER = textwrap.dedent("""
    import sys, time
    from atlas_nb.orchestrator.ledger import Ledger
    from atlas_nb.orchestrator.owner import current
    ledger, tag = Ledger(sys.argv[1]), sys.argv[2]
    for i in range(int(sys.argv[3])):
        name = f"{tag}-{i}"
        ledger.record_intent(name=name, provider="mock", session_id=tag, owner=current(),
                             now=time.time())
        ledger.record_created(name, f"id-{name}", 1.0)
        ledger.open_entries()
        if i % 2:
            ledger.record_terminated(name, time.time(), "test")
    print("done")
""")


def test_two_processes_share_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag, str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for tag in ("k1", "k2")]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == b"done", err.decode()
    entries = Ledger(path).entries()
    assert len(entries) == 2 * n
    assert {e.session_id for e in entries} == {"k1", "k2"}
    assert len({e.owner_pid for e in entries}) == 2
    assert sum(e.state == "live" for e in entries) == n
    assert all(e.compute_id == f"id-{e.name}" for e in entries)


def test_owner_identity_detects_reuse_and_other_hosts() -> None:
    from atlas_nb.orchestrator.owner import is_alive

    assert is_alive(ME) is True
    assert is_alive(Owner(ME.host, ME.pid, "another-boot:123")) is False  # pid reused
    assert is_alive(Owner("elsewhere", ME.pid, ME.start)) is None
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert is_alive(Owner(ME.host, proc.pid, None)) is False


def test_a_zombie_owner_is_dead() -> None:
    from atlas_nb.orchestrator.owner import is_alive, start_token

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        owner = Owner(ME.host, proc.pid, start_token(proc.pid))
        assert is_alive(owner) is True
        proc.kill()
        for _ in range(200):  # until the kernel has made it a zombie (we have not reaped it)
            if is_alive(owner) is False:
                break
            import time

            time.sleep(0.01)
        assert is_alive(owner) is False
        assert Path(f"/proc/{proc.pid}").exists() or sys.platform != "linux"
    finally:
        proc.wait()
