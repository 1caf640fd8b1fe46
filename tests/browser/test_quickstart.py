"""Scenario 1: ``notebooks/01_quickstart.ipynb`` in JupyterLab, as a newcomer runs it.

Run All: no cell errors and the dashboard shows a row for the pod the notebook spawned.
The notebook ends that pod itself (``%atlas terminate $pod``, so it also cleans up
when executed headless), which leaves nothing to click after a plain Run All. So the
Terminate button is then exercised the way the notebook invites it: restart with
cleared outputs, run every cell above "6. Terminate it", press the row's
**Terminate** and confirm, check the row and the sandbox, then run the remaining
cells (terminating again is idempotent): again without an error.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

pytestmark = pytest.mark.browser

NOTEBOOK = "notebooks/01_quickstart.ipynb"
NUMBERED = re.compile(r"\[\d+\]")


def live_ids(box: Any) -> set[str]:
    return {p["id"] for p in box.runpod.live_pods()}


def new_pod(box: Any, known: set[str]) -> str:
    """The one pod created since ``known`` (every pod ever made, terminated ones too)."""
    (pod_id,) = set(box.runpod.pods) - known
    return pod_id


def test_run_all_then_terminate_from_the_dashboard(open_notebook: Any, box: Any,
                                                   expect: Any) -> None:
    assert live_ids(box) == set()
    known = set(box.runpod.pods)
    nb = open_notebook(NOTEBOOK)

    # -- Run All ----------------------------------------------------------------------
    nb.run_all()
    assert nb.unrun_cells() == []
    assert nb.errors() == []
    first = new_pod(box, known)
    dash_cell = nb.cell("%atlas dashboard")
    dashboard = dash_cell.locator(".jp-OutputArea-output").filter(
        has_text="atlas_nb: tracked computes")
    expect(dashboard).to_be_visible()
    row = dashboard.locator(".widget-hbox").filter(has_text=first)
    expect(row).to_contain_text("terminated")  # by the notebook's own terminate cell
    assert live_ids(box) == set()

    # -- again, stopping at the dashboard to use its Terminate button ----------------------
    nb.restart_kernel("Restart Kernel and Clear Outputs of All Cells…")
    expect(dash_cell.locator(".jp-InputPrompt")).not_to_have_text(NUMBERED)
    terminate_cell = nb.cell("%atlas terminate $pod")
    nb.select(terminate_cell)
    nb.menu("Run", "Run All Above Selected Cell")
    expect(dash_cell.locator(".jp-InputPrompt")).to_have_text(NUMBERED, timeout=120_000)
    nb.wait_until_done()
    assert nb.errors() == []
    pod_id = new_pod(box, known | {first})
    assert live_ids(box) == {pod_id}
    row = dashboard.locator(".widget-hbox").filter(has_text=pod_id)
    expect(row).to_contain_text("running")
    nb.screenshot("dashboard", dash_cell, up_to=row.get_by_role("button", name="Terminate"))
    nb.screenshot("quickstart_before_terminate")

    row.get_by_role("button", name="Terminate").click()
    expect(row).to_contain_text(f"terminate {pod_id}?")
    row.get_by_role("button", name="Yes").click()
    expect(row).to_contain_text("terminated")
    expect(row.get_by_role("button")).to_have_count(0)  # an ended row has no actions
    deadline = time.monotonic() + 10
    while live_ids(box):
        assert time.monotonic() < deadline, box.runpod.live_pods()
        time.sleep(0.1)
    assert box.runpod.pods[pod_id]["status"] == "TERMINATED"
    nb.screenshot("dashboard_terminated", dash_cell)

    # -- the rest of the notebook ------------------------------------------------------
    nb.select(terminate_cell)
    nb.menu("Run", "Run Selected Cell and All Below")
    expect(nb.code_cells().last.locator(".jp-InputPrompt")).to_have_text(NUMBERED)
    nb.wait_until_done()
    assert nb.unrun_cells() == []
    assert nb.errors() == []
    assert live_ids(box) == set()
    nb.screenshot("quickstart")
