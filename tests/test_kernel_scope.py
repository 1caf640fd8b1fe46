"""Kernel scope, proven with real Jupyter kernels (jupyter_client + ipykernel) against a
sandbox running in this process: shutdown, restart and SIGKILL leave 0 leaked pods.

Each kernel gets ``ATLAS_NB_SANDBOX`` and this test's private data dir and config (the
autouse fixture's env), spawns 3 tracked pods, and is then shut down, restarted or
killed. The ledger's ``reason`` tells which hook did the work, so a cleanup done by the
fallback instead of the kernel hook fails the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import atlas_nb as atlas
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


@pytest.fixture(scope="module")
def sb() -> Iterator[Any]:
    with atlas.sandbox.start(clouds=["runpod"], validate=False, provision_delay_s=0.0,
                             start_delay_s=0.0) as sandbox:
        yield sandbox


def live_ids(sb: Any) -> set[str]:
    return {p["id"] for p in sb.runpod.live_pods()}


def ledger() -> Ledger:
    return Ledger(config.data_dir() / FILENAME)


class Kernel:
    """One ipykernel process driven through jupyter_client."""

    def __init__(self, sb: Any) -> None:
        env = {**os.environ, "ATLAS_NB_SANDBOX": sb.url, "JUPYTER_PLATFORM_DIRS": "1",
               "PYTHONWARNINGS": "ignore"}
        self.km = jupyter_client.KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env)
        self.kc = self._client()

    def _client(self) -> Any:
        kc = self.km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        return kc

    def run(self, code: str) -> str:
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                out.append(content["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(content["traceback"]))

        reply = self.kc.execute_interactive(code, timeout=60, output_hook=hook)
        assert reply["content"]["status"] == "ok", "".join(out)
        return "".join(out)

    def spawn3(self) -> set[str]:
        ids = set(self.run(SPAWN_3).strip().split(","))
        assert len(ids) == 3
        return ids

    def restart(self) -> None:
        self.kc.stop_channels()
        self.km.restart_kernel(now=False)
        self.kc = self._client()

    def kill9(self) -> None:
        os.kill(self.km.provisioner.pid, signal.SIGKILL)  # nothing runs: no hook, no atexit

    def close(self) -> None:
        self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=False)


@pytest.fixture
def kernels(sb: Any) -> Iterator[list[Kernel]]:
    made: list[Kernel] = []
    yield made
    for k in made:
        k.close()


def start_kernel(sb: Any, kernels: list[Kernel]) -> Kernel:
    k = Kernel(sb)
    kernels.append(k)
    return k


def reasons(ids: set[str]) -> set[str | None]:
    return {e.reason for e in ledger().entries() if e.compute_id in ids}


def wait_gone(sb: Any, ids: set[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while ids & live_ids(sb):
        assert time.monotonic() < deadline, f"still alive: {ids & live_ids(sb)}"
        time.sleep(0.05)


def test_graceful_shutdown_terminates_every_tracked_pod(sb: Any, kernels: list[Kernel]) -> None:
    k = start_kernel(sb, kernels)
    ids = k.spawn3()
    assert ids <= live_ids(sb)
    assert "kernel" in k.run("from atlas_nb.orchestrator import kernel; print(kernel.installed())")
    k.close()
    assert not ids & live_ids(sb)  # leaked: 0
    assert reasons(ids) == {"kernel_shutdown"}  # the do_shutdown hook did it, not atexit


def test_shutdown_while_a_cell_is_busy(sb: Any, kernels: list[Kernel]) -> None:
    k = start_kernel(sb, kernels)
    ids = k.spawn3()
    k.kc.execute("import time; time.sleep(60)")  # the shell thread stays busy
    time.sleep(0.2)
    k.close()
    assert not ids & live_ids(sb)
    assert reasons(ids) <= {"kernel_shutdown", "sigterm"}


def test_restart_terminates_every_tracked_pod(sb: Any, kernels: list[Kernel]) -> None:
    k = start_kernel(sb, kernels)
    ids = k.spawn3()
    k.restart()
    assert not ids & live_ids(sb)
    assert reasons(ids) == {"kernel_restart"}
    more = k.spawn3()  # the restarted kernel works, and is cleaned up in turn
    k.close()
    assert not (ids | more) & live_ids(sb)


def test_sigkill_leaves_pods_until_a_new_kernel_starts_its_orchestrator(
        sb: Any, kernels: list[Kernel]) -> None:
    k = start_kernel(sb, kernels)
    ids = k.spawn3()
    pid = k.km.provisioner.pid
    k.kill9()
    time.sleep(0.5)
    assert ids <= live_ids(sb)  # kill -9 ran no cleanup: the pods are still billing
    assert {e.state for e in ledger().entries() if e.compute_id in ids} == {"live"}
    k2 = start_kernel(sb, kernels)
    k2.run("import atlas_nb.orchestrator as orch; orch.start()")
    wait_gone(sb, ids)  # the new orchestrator's first pass found them in the ledger
    # A pod is gone upstream a moment before the reaper writes why in the ledger.
    deadline = time.monotonic() + 30
    while None in reasons(ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all((r or "").startswith(f"reaped: owner dead (pid {pid} on") for r in reasons(ids))


def test_sigkill_then_atlas_nb_reap(sb: Any, kernels: list[Kernel], tmp_path: Path) -> None:
    k = start_kernel(sb, kernels)
    ids = k.spawn3()
    k.kill9()
    time.sleep(0.5)
    assert ids <= live_ids(sb)
    script = Path(sys.executable).with_name("atlas-nb")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "atlas_nb.cli"]
    env = {**os.environ, "ATLAS_NB_SANDBOX": sb.url}
    dry = subprocess.run([*cmd, "reap", "--dry-run"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would: terminate runpod:") == 3
    assert ids <= live_ids(sb)
    real = subprocess.run([*cmd, "reap"], env=env, capture_output=True, text=True, timeout=60)
    assert real.returncode == 0, real.stderr
    assert real.stdout.count("did: terminate runpod:") == 3
    assert not ids & live_ids(sb)


def test_cleanup_all_runs_every_registered_orchestrator_once(tmp_path: Path) -> None:
    from orchestrator_support import FlakyProvider

    from atlas_nb.orchestrator import Orchestrator, kernel

    previous = signal.getsignal(signal.SIGTERM)
    provider = FlakyProvider()
    orchs = [Orchestrator(ledger_path=tmp_path / "l.sqlite3", providers={"mock": provider},
                          background=False) for _ in range(2)]
    try:
        ids = {o.spawn(provider="mock", image="img:1").id for o in orchs for _ in range(2)}
        assert "atexit" in kernel.installed()
        left = kernel.cleanup_all("sigterm", parallel=True)
        assert left == {o.session_id: [] for o in orchs}
        assert provider.live() == []
        assert {e.reason for e in orchs[0].ledger.entries() if e.compute_id in ids} == {"sigterm"}
        assert kernel.cleanup_all("atexit", parallel=False) == {}  # shut down: forgotten
    finally:
        signal.signal(signal.SIGTERM, previous)  # leave the test process as it was


_HOOKS = textwrap.dedent("""
    import signal
    import atlas_nb, atlas_nb.orchestrator as orch
    from atlas_nb.orchestrator import kernel
    print(sorted(kernel.installed()), signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    orch.default()  # building the default orchestrator installs nothing either
    print(sorted(kernel.installed()), signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    orch.spawn(provider="mock", image="img:1")
    print(sorted(kernel.installed()), signal.getsignal(signal.SIGTERM) is kernel._on_signal)
""")


def test_hooks_are_installed_on_first_track_not_on_import() -> None:
    proc = subprocess.run([sys.executable, "-c", _HOOKS], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[] True", "[] True",
                                        "['atexit', 'sighup', 'sigterm'] True"]


_OUTSIDE = textwrap.dedent("""
    import os, signal, sys, time
    import atlas_nb.orchestrator as orch
    ids = [orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1").id for _ in range(3)]
    print(",".join(ids), flush=True)
    if sys.argv[1] == "sigterm":
        time.sleep(60)  # killed by the test's SIGTERM
""")


@pytest.mark.parametrize(("how", "reason"), [("exit", "atexit"), ("sigterm", "sigterm")])
def test_outside_jupyter_atexit_and_sigterm_clean_up(sb: Any, how: str, reason: str) -> None:
    env = {**os.environ, "ATLAS_NB_SANDBOX": sb.url}
    proc = subprocess.Popen([sys.executable, "-c", _OUTSIDE, how], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    ids = set(proc.stdout.readline().strip().split(","))
    assert len(ids) == 3
    if how == "sigterm":
        assert ids <= live_ids(sb)
        proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    assert proc.returncode == (-signal.SIGTERM if how == "sigterm" else 0), proc.stderr.read()
    assert not ids & live_ids(sb)
    assert reasons(ids) == {reason}
