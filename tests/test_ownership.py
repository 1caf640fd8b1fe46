"""Never kill what is not ours (issue 13, items 2 and 3).

Another ledger (a second machine, a CI job, a colleague on the same account: another
data dir) uses the same default ``atlas-`` prefix; its computes are reported, never
reaped, unless ``--include-foreign``. Hand-named computes that happen to match the
pattern are never reaped unless this ledger made them; older names (no ledger id) are
adopted when the ledger recorded them. Names fit every cloud's limit, and Fly metadata /
Lambda tags carry the ledger id.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sandbox_process import SandboxProcess

import atlas_nb as atlas
from atlas_nb import cli, sandbox
from atlas_nb.errors import ValidationError
from atlas_nb.orchestrator import Orchestrator
from atlas_nb.orchestrator.ledger import Ledger
from atlas_nb.orchestrator.naming import (
    LEDGER_LABEL,
    NAME_MAX,
    compute_name,
    ledger_of,
    new_session_id,
    owned_pattern,
    session_of,
    validate_prefix,
)
from atlas_nb.providers.lambda_labs import LambdaLabs
from atlas_nb.sandbox.server import Sandbox

LATER = 3600.0  # every reaper here runs an hour "later": past any grace period
FLY_APP = "own-app"


def later() -> float:
    return time.time() + LATER


def orchestrator(data: Path, **kw: Any) -> Orchestrator:
    """An orchestrator on its own data dir (its own ledger, so its own ledger id)."""
    kw.setdefault("clock", later)
    return Orchestrator(ledger_path=data / "orchestrator.sqlite3", background=False,
                        kernel_hooks=False, **kw)


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    options = {"fly": {"apps": [FLY_APP], "stop_delay_s": 0.0, "destroy_delay_s": 0.0},
               "lambda_labs": {"launch_interval_s": 0.0}}
    with sandbox.start(clouds=["runpod", "fly", "lambda_labs"], validate=True,
                       provision_delay_s=0.0, start_delay_s=0.0, options=options) as box:
        yield box
        assert box.violations == [], "\n".join(box.violations)


def live_pods(sb: Sandbox) -> dict[str, str]:
    """name -> id of every RunPod pod not terminated."""
    return {p["name"]: p["id"] for p in sb.runpod.live_pods()}  # type: ignore[attr-defined]


def pod(name: str) -> atlas.Compute:
    """A pod made outside any orchestrator (by hand, or by another tool)."""
    return atlas.spawn_compute(provider="runpod", gpu="rtx_4090", image="img:1", name=name)


def test_another_ledgers_compute_is_reported_never_reaped(sb: Sandbox, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    theirs = orchestrator(tmp_path / "colleague")  # same account, same default prefix
    ours = orchestrator(tmp_path / "mine")
    assert theirs.ledger.ledger_id != ours.ledger.ledger_id
    c = theirs.spawn(provider="runpod", gpu="rtx_4090", image="img:1", name="train")
    assert ledger_of(c.name, "atlas-") == theirs.ledger.ledger_id
    # One of ours that no entry knows (its ledger was lost, say): still reaped.
    stray = pod(compute_name("atlas-", ours.ledger.ledger_id, new_session_id(), "lost"))
    try:
        report = ours.reap_now(providers=["runpod"])
        assert [a.compute_id for a in report.terminated] == [stray.id]
        assert c.name in live_pods(sb), "another ledger's live compute was reaped"
        [kept] = report.foreign
        assert (kept.compute_id, kept.action) == (c.id, "keep")
        assert kept.reason == f"another ledger (id {theirs.ledger.ledger_id})"
        assert any(line.startswith("left alone: 1 compute(s) of other ledgers (id "
                                   f"{theirs.ledger.ledger_id})") for line in report.lines())
        assert ours.ledger.entry(c.name or "") is None  # nothing of theirs is recorded

        report = ours.reap_now(providers=["runpod"], include_foreign=True)
        assert [a.compute_id for a in report.terminated] == [c.id]
        assert "another ledger (id" in report.terminated[0].reason
        assert c.name not in live_pods(sb)
    finally:
        theirs.shutdown()
        ours.shutdown()


def test_a_young_foreign_compute_waits_for_the_grace_period_even_when_included(
        sb: Sandbox, tmp_path: Path) -> None:
    theirs = orchestrator(tmp_path / "ci", clock=time.time)
    ours = orchestrator(tmp_path / "mine", clock=time.time)
    c = theirs.spawn(provider="runpod", gpu="rtx_4090", image="img:1")
    try:
        report = ours.reap_now(providers=["runpod"], include_foreign=True)
        assert not list(report)
        assert any(k.compute_id == c.id and "grace period" in k.reason for k in report.kept)
    finally:
        theirs.shutdown()
        ours.shutdown()


def test_reap_cli_reports_foreign_computes_and_include_foreign_takes_them(
        sb: Sandbox, tmp_path: Path, config_file: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text("orchestrator:\n  grace_period_s: 0\n", encoding="utf-8")
    theirs = orchestrator(tmp_path / "laptop")
    c = theirs.spawn(provider="runpod", gpu="rtx_4090", image="img:1")
    try:
        assert cli.main(["reap", "--provider", "runpod"]) == 0
        out = capsys.readouterr().out
        assert "left alone: 1 compute(s) of other ledgers" in out
        assert "--include-foreign" in out
        assert c.name in live_pods(sb)
        assert cli.main(["reap", "--provider", "runpod", "--include-foreign"]) == 0
        out = capsys.readouterr().out
        assert f"did: terminate runpod:{c.id}" in out
        assert c.name not in live_pods(sb)
    finally:
        theirs.shutdown()


@pytest.mark.parametrize("name", [
    "atlas-demo-0a0a0a0a-abcdef",  # a user's name with the prefix
    "atlas-0a0a0a0a-demo-abcdef",  # the shape of an old orchestrator name, made by hand
    "atlas-deadbeef-abcdef",
])
def test_hand_named_computes_are_never_reaped(sb: Sandbox, tmp_path: Path, name: str) -> None:
    ours = orchestrator(tmp_path / "mine")
    c = pod(name)
    try:
        for include_foreign in (False, True):
            report = ours.reap_now(providers=["runpod"], include_foreign=include_foreign)
            assert c.id not in {a.compute_id for a in report}
            assert name in live_pods(sb)
    finally:
        ours.shutdown()
        atlas.terminate(c.id, provider="runpod")


_V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_start TEXT,
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS computes (
    name TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    compute_id TEXT,
    session_id TEXT NOT NULL,
    host TEXT NOT NULL,
    owner_pid INTEGER NOT NULL,
    owner_start TEXT,
    user_id TEXT,
    state TEXT NOT NULL CHECK (state IN ('live', 'terminated', 'terminate_failed')),
    created_at REAL NOT NULL,
    terminated_at REAL,
    reason TEXT,
    error TEXT,
    cost_per_hour REAL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS computes_open ON computes (state) WHERE state != 'terminated';
CREATE INDEX IF NOT EXISTS computes_by_id ON computes (provider, compute_id);
CREATE TABLE IF NOT EXISTS sightings (
    provider TEXT NOT NULL,
    compute_id TEXT NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (provider, compute_id)
);
"""


def _v2_ledger(path: Path) -> None:
    """A ledger as atlas_nb wrote it before ledger ids (schema version 2), as shipped."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(_V1_SCHEMA)
    conn.execute("ALTER TABLE computes ADD COLUMN target TEXT NOT NULL DEFAULT ''")
    conn.execute("PRAGMA user_version = 2")
    conn.close()


def test_a_migrated_ledger_adopts_the_computes_older_versions_made(
        sb: Sandbox, tmp_path: Path) -> None:
    data = tmp_path / "old"
    data.mkdir()
    _v2_ledger(data / "orchestrator.sqlite3")
    session = new_session_id()
    made = pod(f"atlas-{session}-old-0a1b2c")  # an old orchestrator's name: no ledger id
    elsewhere = pod(f"atlas-{new_session_id()}-old-0d1e2f")  # an old name we never recorded
    conn = sqlite3.connect(data / "orchestrator.sqlite3", isolation_level=None)
    conn.execute(  # its owner: a process that is long gone
        "INSERT INTO computes (name, provider, compute_id, session_id, host, owner_pid, "
        "owner_start, state, created_at, target) VALUES (?, 'runpod', ?, ?, ?, 1, "
        "'another-boot:1', 'live', ?, ?)",
        (made.name, made.id, session, os.uname().nodename, time.time(), sb.url))
    conn.close()
    ours = orchestrator(data)
    try:
        entry = ours.ledger.entry(made.name or "")
        assert entry is not None and entry.legacy
        report = ours.reap_now(providers=["runpod"])
        assert [a.compute_id for a in report.terminated] == [made.id]
        assert any(k.compute_id == elsewhere.id and "no ledger id" in k.reason
                   for k in report.kept)
        assert elsewhere.name in live_pods(sb)
    finally:
        ours.shutdown()
        atlas.terminate(elsewhere.id, provider="runpod")


def test_prefixes_another_prefix_would_match_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        validate_prefix("atlas-20240101-")
    message = str(err.value)
    assert "\n" not in message and "'atlas-'" in message and "e.g. 'ci-'" in message
    with pytest.raises(ValidationError, match="atlas-20240101-"):
        orchestrator(tmp_path, name_prefix="atlas-20240101-")
    for clashing in ("atlas-ab", "atlas-abcdef-", "atlas-0a0a0a0a-x", "atlas-abcdefab-xyz"):
        with pytest.raises(ValidationError):
            validate_prefix(clashing)
    for fine in ("atlas-", "atlas-ci-", "atlas-x", "ci-", "alice-", "atlas-a", "atlas--"):
        assert validate_prefix(fine) == fine


@pytest.mark.parametrize("prefix", ["atlas-ci-", "atlas-x", "atlas-a", "alice-"])
def test_accepted_prefixes_share_no_name_with_the_default(prefix: str) -> None:
    # Names of either shape, with labels that look like ids, match one pattern only.
    labels = [None, "0a0a0a0a", "deadbeef", "0a0a0a-0a0a0a0a", "x"]
    for a, b in ((prefix, "atlas-"), ("atlas-", prefix)):
        for label in labels:
            for _ in range(20):
                made = compute_name(a, "0123ab", new_session_id(), label)
                legacy = f"{a}{new_session_id()}-{label + '-' if label else ''}abcdef"
                assert not owned_pattern(b).match(made), (made, b)
                assert not owned_pattern(b).match(legacy), (legacy, b)


def test_names_fit_every_clouds_limit_with_a_long_label() -> None:
    label = "a very long label for a fine-tuning run of a large model " * 3
    for prefix in ("atlas-", "a" * 19 + "-"):
        name = compute_name(prefix, "0123ab", "89abcdef", label)
        assert len(name) <= NAME_MAX <= 64, name  # Lambda: 64; RunPod, Fly, Vast: more
        assert ledger_of(name, prefix) == "0123ab" and session_of(name, prefix) == "89abcdef"
    assert compute_name("atlas-", "0123ab", "89abcdef", label).startswith(
        "atlas-0123ab-89abcdef-a-very-long-label-")


class FastLambda(LambdaLabs):
    """Lambda without the client-side pause between launches."""

    launch_interval_s: ClassVar[float] = 0.0


def test_a_long_label_spawns_on_lambda(sb: Sandbox, tmp_path: Path,
                                       config_file: Path) -> None:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text("providers:\n  lambda_labs:\n    ssh_key_name: sandbox-key\n")
    ours = orchestrator(tmp_path, clock=time.time)
    try:
        c = ours.spawn(provider=FastLambda, gpu="a100_40g", image="img:1", name="x" * 100)
        assert c.name is not None and len(c.name) <= 64
        assert sb.violations == []
    finally:
        ours.shutdown()


def test_fly_metadata_and_lambda_tags_carry_the_ledger_id(sb: Sandbox, tmp_path: Path,
                                                          config_file: Path) -> None:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text("providers:\n  lambda_labs:\n    ssh_key_name: sandbox-key\n"
                           f"  fly:\n    default_app: {FLY_APP}\n")
    ours = orchestrator(tmp_path, clock=time.time)
    lid = ours.ledger.ledger_id
    try:
        fly = ours.spawn(provider="fly", image="img:1", labels={"team": "vision"})
        lam = ours.spawn(provider=FastLambda, gpu="a100_40g", image="img:1")
        got = atlas.get_compute(fly.id, provider="fly")
        assert got.labels == {**got.labels, LEDGER_LABEL: lid, "team": "vision"}
        machine = sb.fly.machine(FLY_APP, fly.id.split("/")[1])  # type: ignore[attr-defined]
        assert machine["config"]["metadata"][LEDGER_LABEL] == lid  # on the wire, as Fly keeps it
        got = atlas.get_compute(lam.id, provider=FastLambda)
        assert got.labels == {LEDGER_LABEL: lid}
        assert {"key": LEDGER_LABEL, "value": lid} in got.raw["tags"]
        assert sb.violations == []
    finally:
        ours.shutdown()


_SPAWN_AND_DIE = textwrap.dedent("""
    import os, signal
    import atlas_nb.orchestrator as orch
    c = orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1")
    print(c.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_another_machines_orphan_is_left_to_its_own_ledger(tmp_path: Path,
                                                           config_file: Path) -> None:
    # The sandbox runs in its own process; a "second machine" (its own data dir) spawns and
    # is killed -9. Our reaper, after the grace period, must leave its pod alone; that
    # machine's next reap takes it.
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text("orchestrator:\n  grace_period_s: 0\n", encoding="utf-8")
    with SandboxProcess() as box:
        env = {**os.environ, "ATLAS_NB_SANDBOX": box.url,
               "ATLAS_NB_DATA_DIR": str(tmp_path / "other-machine")}
        proc = subprocess.run([sys.executable, "-c", _SPAWN_AND_DIE], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        orphan = proc.stdout.strip()
        assert orphan in box.live_ids()
        sandbox.attach(box.url)
        ours = Orchestrator(background=False, kernel_hooks=False)
        report = ours.reap_now(providers=["runpod"])
        assert orphan not in {a.compute_id for a in report}
        assert [a.compute_id for a in report.foreign] == [orphan]
        assert orphan in box.live_ids()
        theirs = Orchestrator(ledger_path=tmp_path / "other-machine" / "orchestrator.sqlite3",
                              background=False, kernel_hooks=False)
        assert [a.compute_id for a in theirs.reap_now(providers=["runpod"]).terminated] == [
            orphan]
        assert orphan not in box.live_ids()
        ours.shutdown()
        theirs.shutdown()


def test_a_ledger_keeps_its_id_across_orchestrators(tmp_path: Path) -> None:
    first = Ledger(tmp_path / "orchestrator.sqlite3").ledger_id
    assert first == Ledger(tmp_path / "orchestrator.sqlite3").ledger_id
    assert first != Ledger(tmp_path / "other" / "orchestrator.sqlite3").ledger_id


def test_labels_must_be_portable_to_every_cloud_with_labels() -> None:
    from atlas_nb.models import ComputeRequest

    assert ComputeRequest(image="i", labels={"team": "vision"}).labels == {"team": "vision"}
    for bad in ({"Team": "x"}, {"t": "x"}, {"team_a": "x"}, {"team": "x" * 129}, {"team": 1}):
        with pytest.raises(ValidationError, match="labels"):
            ComputeRequest(image="i", labels=bad)
