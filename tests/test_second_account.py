"""Never leak a second account's compute (issue 13, item 4; the ledger and reaper side).

A compute spawned with ``api_key=`` of another account records that account's
fingerprint in the ledger. A reaper whose credentials reach another account must not
"terminate" it there (a 404 from the wrong account proves nothing): the entry stays open
and the report says which key to set. With that account's key, the reaper ends it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from sandbox_process import SandboxProcess

import atlas_nb as atlas
from atlas_nb import cli, sandbox
from atlas_nb.models import Compute
from atlas_nb.orchestrator import Orchestrator
from atlas_nb.orchestrator.ledger import Ledger, LedgerEntry
from atlas_nb.orchestrator.naming import compute_name
from atlas_nb.orchestrator.owner import Owner
from atlas_nb.orchestrator.reconcile import ReapAction, ReapInputs, plan
from atlas_nb.providers import resolve
from atlas_nb.providers.base import fingerprint_of
from atlas_nb.sandbox.server import Sandbox

_SPAWN_AND_DIE = textwrap.dedent("""
    import os, signal, sys
    import atlas_nb.orchestrator as orch
    c = orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1", api_key=sys.argv[1])
    print(c.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def spawn_and_die(url: str, key: str) -> str:
    """A kernel spawns a pod on the account of ``key`` and is killed -9 (no cleanup)."""
    env = {**os.environ, "ATLAS_NB_SANDBOX": url}
    proc = subprocess.run([sys.executable, "-c", _SPAWN_AND_DIE, key], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert key not in proc.stdout + proc.stderr
    return proc.stdout.strip()


def live_ids(key: str) -> set[str]:
    """The account's pods that are not terminated, as that account lists them."""
    return {c.id for c in atlas.list_compute(provider="runpod", api_key=key)
            if c.status != "terminated"}


def ledger() -> Ledger:
    return Ledger(atlas.config.data_dir() / "orchestrator.sqlite3")


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with sandbox.start(clouds=["runpod"], validate=True, provision_delay_s=0.0,
                       start_delay_s=0.0) as box:
        yield box
        assert box.violations == [], "\n".join(box.violations)


def test_the_default_credentials_never_close_another_accounts_entry(
        sb: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    second = sb.add_account("runpod")
    pod = spawn_and_die(sb.url, second.key)
    [entry] = ledger().open_entries()
    fingerprint = fingerprint_of(resolve("runpod", api_key=second.key))
    assert entry.account == fingerprint and entry.compute_id == pod
    assert second.key not in (entry.account or "")
    default = fingerprint_of(resolve("runpod"))
    assert default != fingerprint

    for _ in range(2):  # a second reap does no harm either
        report = Orchestrator(kernel_hooks=False, background=False).reap_now()
        assert not list(report), "the reaper acted on another account's entry"
        [needs] = report.needs_key
        assert (needs.compute_id, needs.action) == (pod, "keep")
        assert f"runpod account {fingerprint}" in needs.reason
        assert "set RUNPOD_API_KEY to that account's key" in needs.reason
        assert any(line.startswith("needs key: ") for line in report.lines())
        assert pod in live_ids(second.key)
        after = ledger().entry(entry.name)
        assert after is not None and after.state == "live"  # still open: not "terminated"

    assert cli.main(["reap"]) == 0
    assert "needs key: " in capsys.readouterr().out

    # With that account's key, the reaper ends it.
    with_key = Orchestrator(kernel_hooks=False, background=False,
                            providers={"runpod": resolve("runpod", api_key=second.key)})
    report = with_key.reap_now()
    assert [a.compute_id for a in report.terminated] == [pod]
    assert "owner dead" in report.terminated[0].reason
    assert pod not in live_ids(second.key)
    closed = ledger().entry(entry.name)
    assert closed is not None and closed.state == "terminated"


def test_a_tracked_compute_of_another_account_ends_with_its_own_credentials(
        sb: Sandbox, tmp_path: object) -> None:
    second = sb.add_account("runpod")
    orch = Orchestrator(kernel_hooks=False, background=False)
    c = orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1", api_key=second.key)
    entry = ledger().entry(c.name or "")
    assert entry is not None
    assert entry.account == fingerprint_of(resolve("runpod", api_key=second.key))
    assert orch.shutdown() == []
    assert c.id not in live_ids(second.key)


def test_atlas_nb_reap_with_the_accounts_key_on_stdin_ends_it(sb: Sandbox) -> None:
    """The key a detached reaper gets on stdin counts like ``api_key=``: it reaches the
    second account even with a sandbox attached (whose default key would otherwise win),
    and it never shows in argv or output."""
    second = sb.add_account("runpod")
    pod = spawn_and_die(sb.url, second.key)
    env = {**os.environ, "ATLAS_NB_SANDBOX": sb.url}
    argv = [sys.executable, "-m", "atlas_nb.cli", "reap", "--keys-from-stdin"]
    without = subprocess.run(argv, input="{}", env=env, capture_output=True, text=True,
                             timeout=120)
    assert without.returncode == 0 and "needs key: " in without.stdout, without.stderr
    assert pod in live_ids(second.key)
    done = subprocess.run(argv, input=f'{{"runpod": "{second.key}"}}', env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert pod in done.stdout and second.key not in done.stdout + done.stderr
    assert pod not in live_ids(second.key)


def test_the_sandbox_in_another_process_keeps_accounts_apart() -> None:
    with SandboxProcess() as box:
        second = box.control.add_account("runpod")
        pod = spawn_and_die(box.url, second.key)
        sandbox.attach(box.url)
        report = Orchestrator(kernel_hooks=False, background=False).reap_now()
        assert not list(report) and [a.compute_id for a in report.needs_key] == [pod]
        assert pod in live_ids(second.key)
        [entry] = ledger().open_entries()
        assert entry.state == "live"
        with_key = Orchestrator(kernel_hooks=False, background=False,
                                providers={"runpod": resolve("runpod", api_key=second.key)})
        assert [a.compute_id for a in with_key.reap_now().terminated] == [pod]
        assert pod not in live_ids(second.key)


# -- the rule itself (reconcile.plan, pure) ---------------------------------------------
_T0 = 1_800_000_000.0
_DEAD = Owner(host="elsewhere-never", pid=1, start="x")


def _entry(name: str, cid: str | None, account: str | None) -> LedgerEntry:
    return LedgerEntry(name=name, provider="p", compute_id=cid, session_id="0b0b0b0b",
                       host=_DEAD.host, owner_pid=1, owner_start="x", user_id=None,
                       state="live", created_at=_T0 - 1e6, terminated_at=None, reason=None,
                       error=None, cost_per_hour=None, attempts=0, account=account)


def _plan(entries: list[LedgerEntry], listed: list[Compute], mine: str | None
          ) -> tuple[dict[str, str], dict[str, ReapAction]]:
    actions, kept = plan(ReapInputs(
        prefix="atlas-", own_session="0a0a0a0a", now=_T0, grace_s=600, listed={"p": listed},
        entries=entries, alive=lambda owner: False, ledger_id="0c0c0c",
        account_of=lambda provider: mine))
    return {a.name or "": a.action for a in actions}, {a.name or "": a for a in kept}


def test_plan_acts_only_with_the_entrys_account_or_when_its_listing_shows_it() -> None:
    n = [compute_name("atlas-", "0c0c0c", "0b0b0b0b", f"n{i}") for i in range(5)]
    entries = [_entry(n[0], "id0", "acct-a"),   # same account: terminate
               _entry(n[1], "id1", "acct-b"),   # another account, not listed: keep
               _entry(n[2], "id2", "acct-b"),   # another account, but listed here: terminate
               _entry(n[3], None, "acct-b"),    # never got an id: an empty listing here
               _entry(n[4], "id4", None)]       # proves nothing; unknown account: as before
    listed = [Compute(id="id2", provider="p", name=n[2], status="running")]
    actions, kept = _plan(entries, listed, "acct-a")
    assert actions == {n[0]: "terminate", n[2]: "terminate", n[4]: "terminate"}
    assert {k: v.flag for k, v in kept.items()} == {n[1]: "needs_key", n[3]: "needs_key"}
    assert "set the p provider's api_key" in kept[n[1]].reason  # no env var for "p"
    actions, kept = _plan(entries, listed, None)  # the reaper's own account is unknown
    assert actions == {n[2]: "terminate", n[4]: "terminate"}
    assert set(kept) == {n[0], n[1], n[3]}
