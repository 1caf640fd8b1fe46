"""The ledger under damage: deleted while processes run (issue 13 item 10), and corrupt
or truncated files (item 11). The processes are real subprocesses; the clouds are the
sandbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import atlas_nb as atlas
from atlas_nb import config
from atlas_nb.orchestrator import Orchestrator
from atlas_nb.orchestrator.ledger import FILENAME, Ledger, LedgerWarning
from atlas_nb.orchestrator.owner import current

ME = current()


def _files(path: Path) -> list[Path]:
    """The database and its WAL companions."""
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _delete(path: Path) -> None:
    for f in _files(path):
        f.unlink(missing_ok=True)


class Child:
    """A Python subprocess that runs ``script`` and then one stdin line per step."""

    def __init__(self, script: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def ask(self, line: str = "") -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer, self.proc.stderr.read() if self.proc.stderr else "no answer"
        return answer

    def close(self) -> str:
        self.proc.kill()
        _, err = self.proc.communicate(timeout=60)
        return err


# -- deleted while processes run --------------------------------------------------------------
_LEDGER_USER = """
    import sys, time
    from atlas_nb.orchestrator.ledger import Ledger
    from atlas_nb.orchestrator.owner import current
    ledger, tag = Ledger(sys.argv[1]), sys.argv[2]
    ledger.open_session(tag, current(), time.time())
    n = 0
    for line in sys.stdin:
        n += 1
        ledger.record_intent(name=f"{tag}-{n}", provider="mock", session_id=tag,
                             owner=current(), now=time.time())
        print(len(ledger.open_entries()), flush=True)
"""


def test_two_processes_recreate_a_deleted_ledger_with_their_open_entries(tmp_path: Path
                                                                         ) -> None:
    path = tmp_path / FILENAME
    a, b = Child(_LEDGER_USER, str(path), "a"), Child(_LEDGER_USER, str(path), "b")
    try:
        assert a.ask() == "1" and b.ask() == "2" and a.ask() == "3"  # a-1, b-1, a-2
        _delete(path)
        # Each process writes again: the first to notice recreates the file; the second
        # merges into it (and closing its old connection must not delete the new WAL).
        assert a.ask() == "4"  # a-1, a-2, a-3 and b-1 (read from a's old connection)
        assert b.ask() == "5"  # + b-2
        assert a.ask() == "6"  # + a-4: still written to the file on disk
        reader = Ledger(path)
        assert sorted(e.name for e in reader.entries()) == [
            "a-1", "a-2", "a-3", "a-4", "b-1", "b-2"]
        assert set(reader.sessions()) == {"a", "b"}
        reader.close()
    finally:
        a.close()
        b.close()


@pytest.fixture(scope="module")
def sb() -> Iterator[Any]:
    with atlas.sandbox.start(clouds=["runpod"], validate=False, provision_delay_s=0.0,
                             start_delay_s=0.0) as sandbox:
        yield sandbox


def live_ids(sb: Any) -> set[str]:
    return {p["id"] for p in sb.runpod.live_pods()}


_KERNEL = """
    import sys
    import atlas_nb.orchestrator as orch
    from atlas_nb.orchestrator import Orchestrator
    o = Orchestrator(background=False, kernel_hooks=False)
    for line in sys.stdin:
        c = o.spawn(provider="runpod", gpu="rtx_4090", image="img:1", name="kept")
        print(c.id, flush=True)
"""


def test_a_deleted_ledger_is_recreated_so_another_process_keeps_the_live_pods(sb: Any) -> None:
    path = config.data_dir() / FILENAME
    a = Child(_KERNEL, env={**os.environ, "ATLAS_NB_SANDBOX": sb.url})
    try:
        ids = [a.ask(), a.ask()]
        _delete(path)
        ids.append(a.ask())  # a write after the deletion: the ledger is recreated
        assert path.exists()
        # Another process (this one) reaps with no grace period: the pods are owned by a
        # live process according to the recreated ledger, so they stay.
        report = Orchestrator(kernel_hooks=False, background=False,
                              grace_period_s=0.0).reap_now()
        assert not [x for x in report if x.compute_id in ids], report.lines()
        assert set(ids) <= live_ids(sb)
        entries = {e.compute_id: e for e in Ledger(path).entries()}
        assert set(ids) <= set(entries)
        assert {entries[i].owner_pid for i in ids} == {a.proc.pid}
    finally:
        a.close()
        for cid in ids:
            atlas.terminate(cid, provider="runpod")


# -- corrupt or truncated -----------------------------------------------------------------------
def _aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


def test_garbage_is_moved_aside_with_a_warning_and_a_fresh_ledger_starts(tmp_path: Path
                                                                         ) -> None:
    path = tmp_path / FILENAME
    ledger_id = Ledger(path).ledger_id
    garbage = os.urandom(3000)
    path.write_bytes(garbage)
    ledger = Ledger(path)
    with pytest.warns(LedgerWarning, match=r"not a usable database.*moved aside to .*corrupt-"):
        assert ledger.entries() == []
    (aside,) = _aside(path)
    assert aside.read_bytes() == garbage  # kept for inspection, never deleted
    assert ledger.recovered_from == aside
    assert ledger.ledger_id == ledger_id  # the id file is untouched
    ledger.record_intent(name="n", provider="mock", session_id="s", owner=ME, now=1.0)
    assert [e.name for e in Ledger(path).entries()] == ["n"]
    assert Ledger(path).recovered_from == aside  # every later process knows it, too


def _filled(path: Path, n: int) -> None:
    ledger = Ledger(path)
    for i in range(n):
        ledger.record_intent(name=f"atlas-{i:04d}-" + "x" * 60, provider="mock", session_id="s",
                             owner=ME, now=1.0 + i)
    ledger.close()  # checkpoints the WAL into the file


def test_a_truncated_database_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    _filled(path, 400)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.warns(LedgerWarning, match="moved aside"):
        assert Ledger(path).open_entries() == []
    assert len(_aside(path)) == 1


_WRITE_AND_DIE = """
    import os, sys, time
    from atlas_nb.orchestrator.ledger import Ledger
    from atlas_nb.orchestrator.owner import current
    ledger = Ledger(sys.argv[1])
    for i in range(20):
        ledger.record_intent(name=f"n{i:02d}", provider="mock", session_id="s",
                             owner=current(), now=1.0 + i)
    os._exit(0)  # no close: the commits are in the WAL only
"""


def test_a_truncated_wal_loses_only_the_torn_commit_and_is_not_corruption(tmp_path: Path
                                                                          ) -> None:
    path = tmp_path / FILENAME
    subprocess.run([sys.executable, "-c", textwrap.dedent(_WRITE_AND_DIE), str(path)],
                   check=True, timeout=60)
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size > 0
    with open(wal, "r+b") as f:
        f.truncate(wal.stat().st_size - 100)  # a torn last frame, as after a power cut
    with warnings.catch_warnings():
        warnings.simplefilter("error", LedgerWarning)
        names = [e.name for e in Ledger(path).entries()]
    assert _aside(path) == []
    assert names == [f"n{i:02d}" for i in range(len(names))] and len(names) >= 15


_KILLED = """
    import os, signal
    import atlas_nb.orchestrator as orch
    ids = [orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1").id for _ in range(2)]
    print(",".join(ids), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_after_corruption_the_reaper_lists_the_configured_providers(sb: Any) -> None:
    # A kernel spawned two pods and was killed -9; then its ledger got corrupted. The
    # fresh ledger knows no provider, so the reaper falls back to every provider with a
    # key, finds the dead kernel's pods and ends them.
    env = {**os.environ, "ATLAS_NB_SANDBOX": sb.url}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLED)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ids = proc.stdout.strip().split(",")
    assert set(ids) <= live_ids(sb)
    path = config.data_dir() / FILENAME
    _delete(path)
    path.write_bytes(b"SQLite format 2\x00" + os.urandom(4000))
    o = Orchestrator(kernel_hooks=False, background=False, grace_period_s=0.0)
    with pytest.warns(LedgerWarning, match="moved aside"):
        report = o.reap_now()
    done = {x.compute_id for x in report.terminated}
    assert set(ids) <= done, report.lines()
    assert not set(ids) & live_ids(sb)
    # ...and the orchestrator works normally on the fresh ledger.
    c = o.spawn(provider="runpod", gpu="rtx_4090", image="img:1")
    assert c.id in live_ids(sb)
    assert o.shutdown() == []
    assert c.id not in live_ids(sb)


def test_a_process_holding_the_old_file_carries_its_entries_into_the_fresh_one(
        tmp_path: Path) -> None:
    # Process A has the ledger open; the file at the path is then replaced by garbage, and
    # process B (here a second Ledger) moves it aside and starts fresh. A's next write
    # notices the path names another file and carries its open entries over.
    path = tmp_path / FILENAME
    a = Ledger(path)
    a.record_intent(name="a-1", provider="mock", session_id="a", owner=ME, now=1.0)
    a.record_intent(name="a-2", provider="mock", session_id="a", owner=ME, now=2.0)
    a.record_terminated("a-2", 3.0, "idle")
    _delete(path)
    path.write_bytes(os.urandom(5000))
    b = Ledger(path)
    with pytest.warns(LedgerWarning, match="moved aside"):
        assert b.open_entries() == []
    a.record_intent(name="a-3", provider="mock", session_id="a", owner=ME, now=4.0)
    assert [e.name for e in b.open_entries()] == ["a-1", "a-3"]
    assert b.recovered_from is not None and a.recovered_from == b.recovered_from


_OPEN_GARBAGE = """
    import os, sys, time, warnings
    from atlas_nb.orchestrator.ledger import Ledger
    from atlas_nb.orchestrator.owner import current
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.001)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ledger = Ledger(sys.argv[1])
        ledger.record_intent(name=sys.argv[3], provider="mock", session_id="s",
                             owner=current(), now=time.time())
    print(len(seen), flush=True)
"""


def test_processes_opening_a_corrupt_ledger_together_repair_it_once(tmp_path: Path) -> None:
    path, go = tmp_path / FILENAME, tmp_path / "go"
    path.write_bytes(os.urandom(8000))
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(_OPEN_GARBAGE), str(path),
                               str(go), f"p{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(6)]
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert len(_aside(path)) == 1  # one repairer; the others opened its fresh ledger
    assert sum(int(out) for out, _ in outs) == 1  # and only its user was warned
    assert sorted(e.name for e in Ledger(path).entries()) == [f"p{i}" for i in range(6)]
