"""Kernel shutdown under 429 / 5xx on DELETE (issue 13, item 5), with a real ipykernel
(jupyter_client) and the sandbox in another process.

The shutdown has ``shutdown_deadline_s`` (2 s): neither ``Retry-After: 5`` nor the HTTP
layer's own retries may outlive it. What is unconfirmed is written ``terminate_failed``
before the shutdown reply, and a detached reaper (its own session) ends the pods after
the kernel's process group is killed with SIGKILL and the fault is cleared.
"""

from __future__ import annotations

import os
import signal
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sandbox_process import SandboxProcess

from atlas_nb import config
from atlas_nb.orchestrator.ledger import FILENAME, Ledger

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.slow

SPAWN_3 = textwrap.dedent("""
    import atlas_nb.orchestrator as orch
    pods = [orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1", name=f"k{i}")
            for i in range(3)]
    print(",".join(p.id for p in pods))
""")
DELETE = "runpod/rest:DELETE /v2/pods/*"
REPLY_WITHIN_S = 4.0  # the 2 s deadline plus room for the kernel's own work; < Retry-After


@pytest.fixture(scope="module")
def sbp() -> Iterator[SandboxProcess]:
    with SandboxProcess() as sandbox:
        yield sandbox


@pytest.fixture
def kernel(sbp: SandboxProcess) -> Iterator[Any]:
    env = {**os.environ, "ATLAS_NB_SANDBOX": sbp.url, "JUPYTER_PLATFORM_DIRS": "1",
           "PYTHONWARNINGS": "ignore"}
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    yield km, kc
    kc.stop_channels()
    if km.has_kernel:
        km.shutdown_kernel(now=True)


def run(kc: Any, code: str) -> str:
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    reply = kc.execute_interactive(code, timeout=60, output_hook=hook)
    assert reply["content"]["status"] == "ok", "".join(out)
    return "".join(out)


def states(ids: set[str]) -> dict[str, str]:
    return {e.compute_id: e.state for e in Ledger(config.data_dir() / FILENAME).entries()
            if e.compute_id in ids}


@pytest.mark.parametrize("fault", [{"error_rate": {500: 1.0}},
                                   {"rate_limit_429": 1.0, "retry_after_s": 5}],
                         ids=["500", "429-retry-after-5"])
def test_shutdown_within_deadline_then_a_detached_reaper_ends_the_pods(
        sbp: SandboxProcess, kernel: Any, fault: dict[str, Any]) -> None:
    km, kc = kernel
    ids = set(run(kc, SPAWN_3).strip().split(","))
    assert len(ids) == 3 and ids <= sbp.live_ids()
    rule = sbp.control.faults(DELETE, **fault)
    try:
        kc.shutdown()  # the shutdown_request jupyter_client sends on the control channel
        reply = kc.control_channel.get_msg(timeout=REPLY_WITHIN_S)
        assert reply["msg_type"] == "shutdown_reply"
        # The reply came after the cleanup: everything unconfirmed is already recorded.
        assert states(ids) == dict.fromkeys(ids, "terminate_failed")
        pid = km.provisioner.pid
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)  # the kernel's whole process group
        else:
            os.kill(pid, signal.SIGKILL)
        assert ids <= sbp.live_ids()  # nothing ended them yet
    finally:
        rule.clear()
    sbp.wait_gone(ids, timeout_s=120)  # the detached reaper outlived the kernel
    logs = sorted(config.data_dir().glob("reap-*.log"))
    assert logs, "the detached reaper logs to the data dir"
    assert (logs[-1].stat().st_mode & 0o077) == 0
    deadline = time.monotonic() + 60
    while set(states(ids).values()) != {"terminated"}:
        assert time.monotonic() < deadline, states(ids)
        time.sleep(0.2)


SPAWN_ON_TWO_ACCOUNTS = textwrap.dedent("""
    import atlas_nb.orchestrator as orch
    pods = [orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1", name=f"k{i}",
                       api_key=key)
            for key in (None, {key!r}) for i in range(2)]
    print(",".join(p.id for p in pods))
""")


def live_on(sbp: SandboxProcess, key: str) -> set[str]:
    """Ids of the pods not terminated that the account of ``key`` lists."""
    r = httpx.get(f"{sbp.url}/runpod/rest/v2/pods", timeout=10,
                  headers={"Authorization": f"Bearer {key}"})
    r.raise_for_status()
    return {p["id"] for p in r.json()["pods"] if p.get("status") != "TERMINATED"}


def test_leftovers_on_two_accounts_each_get_a_detached_reaper_with_their_key(
        sbp: SandboxProcess, kernel: Any) -> None:
    """One kernel, tracked pods on two RunPod accounts (the default key, and ``api_key=``
    of a second account); DELETE answers 500 through the shutdown. A reaper only acts
    with credentials of the account an entry records, so each account's leftovers need
    a detached reaper holding that account's key (two reapers): the kernel is killed -9
    right after its shutdown reply, the fault cleared, and both accounts' pods end."""
    km, kc = kernel
    second = sbp.control.add_account("runpod")
    ids = run(kc, SPAWN_ON_TWO_ACCOUNTS.replace("{key!r}", repr(second.key))).strip().split(",")
    default_ids, second_ids = set(ids[:2]), set(ids[2:])
    assert default_ids <= sbp.live_ids() and second_ids <= live_on(sbp, second.key)
    assert not second_ids & sbp.live_ids()  # another account's pods: not even listed
    rule = sbp.control.faults(DELETE, error_rate={500: 1.0})
    try:
        kc.shutdown()
        reply = kc.control_channel.get_msg(timeout=REPLY_WITHIN_S)
        assert reply["msg_type"] == "shutdown_reply"
        assert states(set(ids)) == dict.fromkeys(ids, "terminate_failed")
        pid = km.provisioner.pid
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        rule.clear()
    deadline = time.monotonic() + 120
    while (left := (default_ids & sbp.live_ids()) | (second_ids & live_on(sbp, second.key))):
        assert time.monotonic() < deadline, f"still live after 120 s: {sorted(left)}"
        time.sleep(0.2)
    deadline = time.monotonic() + 60
    while set(states(set(ids)).values()) != {"terminated"}:
        assert time.monotonic() < deadline, states(set(ids))
        time.sleep(0.2)
    assert second.key not in "".join(p.read_text() for p in config.data_dir().glob("reap-*.log"))
