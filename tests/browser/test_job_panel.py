"""Scenario 3: the JobPanel streams a serverless job into its live table, and its Cancel
button cancels the job upstream (checked in the sandbox)."""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = pytest.mark.browser

ENDPOINT = "stream"
WORDS = 120  # job_panel.ipynb streams 120 words, 0.25 s apart


def jobs_on(box: Any, endpoint: str) -> dict[str, Any]:
    return dict(box.runpod.serverless.endpoints[endpoint].jobs)


def test_streamed_rows_appear_and_cancel_cancels_upstream(open_notebook: Any, box: Any,
                                                          expect: Any) -> None:
    before = set(jobs_on(box, ENDPOINT))
    nb = open_notebook("scenarios/job_panel.ipynb")
    nb.run_all()
    assert nb.errors() == []
    page = nb.page
    panel = page.locator(".widget-vbox").filter(has_text="Serverless job").last
    expect(panel.get_by_label("endpoint", exact=True)).to_have_value(ENDPOINT)
    cancel = panel.get_by_role("button", name="Cancel")
    expect(cancel).to_be_disabled()  # nothing to cancel yet

    panel.get_by_role("button", name="Submit").click()
    rows = panel.locator("table tbody tr")
    expect(rows.nth(2)).to_be_visible()  # three chunks have streamed in
    streamed = rows.all_inner_texts()
    assert "token000" in streamed[0] and "token001" in streamed[1], streamed

    (job_id,) = set(jobs_on(box, ENDPOINT)) - before
    expect(panel).to_contain_text(job_id)  # the panel names the job it follows
    assert box.runpod.job(ENDPOINT, job_id)["status"] == "IN_PROGRESS"
    expect(cancel).to_be_enabled()
    cancel.click()

    deadline = time.monotonic() + 10
    while box.runpod.job(ENDPOINT, job_id)["status"] != "CANCELLED":
        assert time.monotonic() < deadline, box.runpod.job(ENDPOINT, job_id)
        time.sleep(0.1)
    expect(panel).to_contain_text(f"job {job_id}: cancelled")
    expect(panel.get_by_role("button", name="Submit")).to_be_enabled()
    # The stream stopped with the job: far fewer rows than the job would have produced.
    shown = rows.count()
    page.wait_for_timeout(1000)
    assert rows.count() == shown < WORDS
    nb.screenshot("job_panel", nb.cell("--panel"))
