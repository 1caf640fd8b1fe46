"""A spawn that raised after its create may have succeeded (issue 13, item 7): the create's
answer was lost, and the lookup by name then failed with 503. The ledger entry written
before the create (no id) is resolved by name at shutdown: terminated when found, closed
when a successful listing proves it absent, left open (and reported) when the listing
fails, without making ``atlas-nb reap`` fail forever. Sandbox in another process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from sandbox_process import SandboxProcess

from atlas_nb.errors import AtlasError
from atlas_nb.orchestrator import Orchestrator

pytestmark = pytest.mark.slow

CREATE = "runpod/rest:POST /v2/pods"
LIST = "runpod/rest:GET /v2/pods"


@pytest.fixture(scope="module")
def sbp() -> Iterator[SandboxProcess]:
    with SandboxProcess() as sandbox:
        yield sandbox


@pytest.fixture
def orch(sbp: SandboxProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[Orchestrator]:
    monkeypatch.setenv("ATLAS_NB_SANDBOX", sbp.url)
    o = Orchestrator(background=False, kernel_hooks=False, terminate_backoff_s=0.01)
    yield o
    o.shutdown(detach=False)


def lost_create(sbp: SandboxProcess, orch: Orchestrator, outcome: str = "lost") -> str:
    """Spawn with the create's answer lost (or refused) and every lookup failing 503;
    returns the ledger name of the spawn, which raised."""
    create = sbp.control.faults(CREATE, sequence=[outcome])
    listing = sbp.control.faults(LIST, error_rate={503: 1.0})
    try:
        with pytest.raises(AtlasError):
            orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1", name="lost")
    finally:
        create.clear()
        listing.clear()
    (entry,) = [e for e in orch.ledger.open_entries() if e.session_id == orch.session_id]
    assert entry.compute_id is None and orch.tracked() == []
    return entry.name


def live_named(sbp: SandboxProcess, name: str) -> list[str]:
    return [p["id"] for p in sbp.pods() if p.get("name") == name
            and p.get("status") != "TERMINATED"]


def test_graceful_shutdown_terminates_a_lost_create(sbp: SandboxProcess,
                                                    orch: Orchestrator) -> None:
    name = lost_create(sbp, orch)
    assert len(live_named(sbp, name)) == 1  # it bills, untracked
    assert orch.shutdown(detach=False) == []
    assert live_named(sbp, name) == []
    entry = orch.ledger.entry(name)
    assert entry is not None and entry.state == "terminated" and entry.compute_id


def test_a_successful_listing_closes_a_create_that_never_happened(
        sbp: SandboxProcess, orch: Orchestrator) -> None:
    name = lost_create(sbp, orch, outcome="503")  # refused: nothing was made
    orch.shutdown(detach=False)
    entry = orch.ledger.entry(name)
    assert entry is not None and (entry.state, entry.reason) == ("terminated", "never_created")


def test_a_failed_listing_leaves_it_open_and_reap_does_not_fail_forever(
        sbp: SandboxProcess, orch: Orchestrator) -> None:
    name = lost_create(sbp, orch, outcome="503")
    listing = sbp.control.faults(LIST, error_rate={503: 1.0})
    try:
        orch.shutdown(detach=False)
        entry = orch.ledger.entry(name)
        assert entry is not None and entry.state == "terminate_failed"  # open, reported
        env = {"ATLAS_NB_SANDBOX": sbp.url}
        failed = _reap(env)
        assert failed.returncode == 1, failed.stdout  # this run could not list: operational
    finally:
        listing.clear()
    # Listing works again: the row is "unknown yet" (within the intent window) or closed,
    # and neither makes reap fail.
    ok = _reap({"ATLAS_NB_SANDBOX": sbp.url})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert name in ok.stdout or orch.ledger.entry(name).state == "terminated"  # type: ignore[union-attr]


def _reap(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "atlas_nb.cli", "reap", "-v", "--provider",
                           "runpod"], env={**os.environ, **extra}, capture_output=True,
                          text=True, timeout=120)
