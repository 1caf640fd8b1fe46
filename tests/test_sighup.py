"""SIGHUP (a closed terminal, a dropped ssh session) ends tracked computes like SIGTERM
(issue 13, item 6): a script spawns pods against a sandbox in another process, gets
SIGHUP, and dies of it with its pods terminated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from sandbox_process import SandboxProcess

from atlas_nb import config
from atlas_nb.orchestrator.ledger import FILENAME, Ledger

pytestmark = pytest.mark.slow

_SCRIPT = textwrap.dedent("""
    import time
    import atlas_nb.orchestrator as orch
    ids = [orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1").id for _ in range(2)]
    print(",".join(ids), flush=True)
    time.sleep(120)
""")


@pytest.fixture(scope="module")
def sbp() -> Iterator[SandboxProcess]:
    with SandboxProcess() as sandbox:
        yield sandbox


def test_sighup_terminates_tracked_pods_and_still_kills(sbp: SandboxProcess) -> None:
    env = {**os.environ, "ATLAS_NB_SANDBOX": sbp.url, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    ids = set(proc.stdout.readline().strip().split(","))
    assert len(ids) == 2 and ids <= sbp.live_ids()
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGHUP, err  # it still dies of the signal
    assert not ids & sbp.live_ids()
    rows = [e for e in Ledger(config.data_dir() / FILENAME).entries() if e.compute_id in ids]
    assert {(e.state, e.reason) for e in rows} == {("terminated", "sighup")}
