"""The ledger's identity (issue 13 item 2, storage): the id file beside the ledger, and the
schema-3 migration that adopts what older versions created and records each account."""

from __future__ import annotations

import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from atlas_nb.errors import UnknownError
from atlas_nb.orchestrator.ledger import FILENAME, SCHEMA_VERSION, Ledger, schema_version
from atlas_nb.orchestrator.ledger_id import ID_FILENAME, is_ledger_id
from atlas_nb.orchestrator.owner import current

ME = current()


def test_every_ledger_gets_a_random_id_in_its_own_0600_file(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / FILENAME)
    lid = ledger.ledger_id
    assert is_ledger_id(lid) and len(lid) == 6 and lid == lid.lower()
    id_file = tmp_path / ID_FILENAME
    assert id_file.read_text().strip() == lid
    assert stat.S_IMODE(id_file.stat().st_mode) == 0o600
    assert Ledger(tmp_path / FILENAME).ledger_id == lid  # every process reads the same one
    assert Ledger(tmp_path / "other" / FILENAME).ledger_id != lid  # ~1 in 16M to collide
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_the_id_outlives_the_database(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    ledger = Ledger(path)
    lid = ledger.ledger_id
    ledger.record_intent(name="n", provider="mock", session_id="s", owner=ME, now=1.0)
    ledger.close()
    for f in tmp_path.glob(f"{FILENAME}*"):
        f.unlink()
    assert Ledger(path).ledger_id == lid


def test_a_wiped_data_dir_gets_the_id_back_from_a_running_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ledger = Ledger(data / FILENAME)
    lid = ledger.ledger_id
    ledger.record_intent(name="n", provider="mock", session_id="s", owner=ME, now=1.0)
    shutil.rmtree(data)
    ledger.record_intent(name="m", provider="mock", session_id="s", owner=ME, now=2.0)
    assert (data / ID_FILENAME).read_text().strip() == lid
    assert Ledger(data / FILENAME).ledger_id == lid
    assert sorted(e.name for e in Ledger(data / FILENAME).entries()) == ["m", "n"]


_READ_ID = """
    import os, sys, time
    from atlas_nb.orchestrator.ledger import Ledger
    go = sys.argv[2]
    while not os.path.exists(go):
        time.sleep(0.001)
    print(Ledger(sys.argv[1]).ledger_id)
"""


def test_kernels_starting_together_agree_on_one_id(tmp_path: Path) -> None:
    go = tmp_path / "go"
    for trial in range(3):
        path = tmp_path / str(trial) / FILENAME
        procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(_READ_ID), str(path),
                                   str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(8)]
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
        go.unlink()
        assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
        found = {out.strip() for out, _ in outs}
        assert len(found) == 1 and is_ledger_id(found.pop())


def test_a_damaged_id_file_is_never_silently_replaced(tmp_path: Path) -> None:
    (tmp_path / ID_FILENAME).write_text("not an id\n")
    with pytest.raises(UnknownError, match=r"ledger id file .* is damaged"):
        _ = Ledger(tmp_path / FILENAME).ledger_id
    assert (tmp_path / ID_FILENAME).read_text() == "not an id\n"


# -- schema 3 ------------------------------------------------------------------------------------
_V2 = """
CREATE TABLE sessions (session_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,
    pid_start TEXT, started_at REAL NOT NULL, seen_at REAL NOT NULL, ended_at REAL);
CREATE TABLE computes (name TEXT PRIMARY KEY, provider TEXT NOT NULL, compute_id TEXT,
    session_id TEXT NOT NULL, host TEXT NOT NULL, owner_pid INTEGER NOT NULL, owner_start TEXT,
    user_id TEXT, state TEXT NOT NULL CHECK (state IN ('live', 'terminated',
    'terminate_failed')), created_at REAL NOT NULL, terminated_at REAL, reason TEXT,
    error TEXT, cost_per_hour REAL, attempts INTEGER NOT NULL DEFAULT 0,
    target TEXT NOT NULL DEFAULT '');
CREATE INDEX computes_open ON computes (state) WHERE state != 'terminated';
CREATE INDEX computes_by_id ON computes (provider, compute_id);
CREATE TABLE sightings (provider TEXT NOT NULL, compute_id TEXT NOT NULL,
    first_seen REAL NOT NULL, PRIMARY KEY (provider, compute_id));
INSERT INTO computes (name, provider, compute_id, session_id, host, owner_pid, state,
    created_at) VALUES ('atlas-0a1b2c3d-llm-x1y2z3', 'runpod', 'pod-1', '0a1b2c3d', 'vm', 42,
    'live', 1.0);
INSERT INTO computes (name, provider, compute_id, session_id, host, owner_pid, state,
    created_at) VALUES ('atlas-0a1b2c3d-x9y8z7', 'vast', '77', '0a1b2c3d', 'vm', 42,
    'terminate_failed', 2.0);
PRAGMA user_version = 2;
"""


def _v2_ledger(path: Path) -> None:
    """A ledger file exactly as version 2 of the schema left it, with two computes."""
    conn = sqlite3.connect(path)
    conn.executescript(_V2)
    conn.close()


def test_a_v2_ledger_is_migrated_and_its_computes_adopted_as_legacy(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    _v2_ledger(path)
    assert schema_version(path) == 2
    ledger = Ledger(path)
    old = {e.name: e for e in ledger.open_entries()}
    assert sorted(old) == ["atlas-0a1b2c3d-llm-x1y2z3", "atlas-0a1b2c3d-x9y8z7"]
    assert all(e.legacy and e.account is None for e in old.values())
    assert old["atlas-0a1b2c3d-llm-x1y2z3"].compute_id == "pod-1"
    ledger.record_intent(name=f"atlas-{ledger.ledger_id}-s1-abc", provider="runpod",
                         session_id="s1", owner=ME, now=3.0, account="runpod:acct-1")
    new = ledger.entry(f"atlas-{ledger.ledger_id}-s1-abc")
    assert new is not None and not new.legacy and new.account == "runpod:acct-1"
    ledger.close()
    assert schema_version(path) == SCHEMA_VERSION == 3
    # Adoption happens once: a second open marks nothing new as legacy.
    again = {e.name: e.legacy for e in Ledger(path).entries()}
    assert again[f"atlas-{ledger.ledger_id}-s1-abc"] is False


def test_accounts_are_recorded_for_reaped_resources_too(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / FILENAME)
    ledger.record_reaped(name="atlas-x", provider="runpod", compute_id="p", now=1.0,
                         reason="reaped", account="runpod:acct-2")
    entry = ledger.entry("atlas-x")
    assert entry is not None and entry.account == "runpod:acct-2" and not entry.legacy


def test_pending_entries_are_the_open_ones_with_no_id_yet(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / FILENAME)
    for name, session in (("a", "s1"), ("b", "s1"), ("c", "s2"), ("d", "s1")):
        ledger.record_intent(name=name, provider="mock", session_id=session, owner=ME,
                             now=float(ord(name)))
    ledger.record_created("a", "id-a", None)
    ledger.record_terminated("d", 200.0, "never_created")
    assert [e.name for e in ledger.pending_entries("s1")] == ["b"]
    assert [e.name for e in ledger.pending_entries()] == ["b", "c"]
    assert all(e.compute_id is None and e.state == "live" for e in ledger.pending_entries())
