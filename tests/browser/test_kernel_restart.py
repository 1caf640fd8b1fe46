"""Scenario 4: restarting the kernel from JupyterLab's Kernel menu terminates the pod the
kernel was tracking, within 10 s (checked in the sandbox)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from atlas_nb.orchestrator.ledger import FILENAME, Ledger

pytestmark = pytest.mark.browser

DEADLINE_S = 10.0


def live_ids(box: Any) -> set[str]:
    return {p["id"] for p in box.runpod.live_pods()}


def test_restart_from_the_kernel_menu_terminates_the_tracked_pod(
        open_notebook: Any, box: Any, lab: Any) -> None:
    assert live_ids(box) == set()
    nb = open_notebook("scenarios/restart.ipynb")
    nb.run_all()
    assert nb.errors() == []
    (pod_id,) = live_ids(box)
    assert box.runpod.pods[pod_id]["status"] == "RUNNING"
    # The notebook shows the pod as tracked (%atlas ls --tracked).
    listing = nb.cell("%atlas ls --tracked").locator(".jp-OutputArea-output")
    assert pod_id in listing.inner_text()

    nb.restart_kernel()
    confirmed = time.monotonic()
    while pod_id in live_ids(box):
        assert time.monotonic() - confirmed < DEADLINE_S, box.runpod.pods[pod_id]
        time.sleep(0.1)
    assert box.runpod.pods[pod_id]["status"] == "TERMINATED"
    # Ended by the kernel's shutdown hook on restart (not by atexit or a later reap).
    ledger = Ledger(lab.data_dir / FILENAME)
    try:
        reasons = [e.reason for e in ledger.entries() if e.compute_id == pod_id]
    finally:
        ledger.close()
    assert reasons == ["kernel_restart"]
    nb.wait_kernel_ready()  # and JupyterLab got a fresh kernel
    nb.screenshot("kernel_restart")
