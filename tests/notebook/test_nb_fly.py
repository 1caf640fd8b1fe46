"""``%atlas deploy`` with a fake ``fly`` on PATH, and ``%atlas logs`` (panel and table)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from IPython.utils.capture import capture_output

from atlas_nb.errors import ProviderError, ValidationError
from atlas_nb.notebook.widgets.deploy_panel import DeployPanel

FAKE_FLY = """#!/bin/sh
echo "==> Verifying app config for $(basename "$PWD")"
printf 'Pushing image  10%%\\rPushing image 100%%\\n'
if [ -n "$FAKE_FLY_SLEEP" ]; then sleep "$FAKE_FLY_SLEEP"; fi
echo "args: $*"
exit ${FAKE_FLY_EXIT:-0}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with one app folder, and a fake ``fly`` first on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fly = bindir / "fly"
    fly.write_text(FAKE_FLY, encoding="utf-8")
    fly.chmod(fly.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    root = tmp_path / "shop"
    (root / "api").mkdir(parents=True)
    (root / "api" / "fly.toml").write_text('app = "shop-api"\n', encoding="utf-8")
    return root


def test_deploy_streams_the_output_and_returns_the_result(ip, project: Path) -> None:
    with capture_output() as cap:
        out = ip.run_line_magic("atlas", f"deploy api --project {project} -o result")
    assert out is None
    lines = cap.stdout.splitlines()
    assert lines[0] == "==> Verifying app config for api"
    assert "Pushing image 100%" in lines and "args: deploy --remote-only" in lines
    result = ip.user_ns["result"]
    assert result.ok and result.exit_code == 0 and lines[-1] == str(result)


def test_a_failed_deploy_fails_the_cell_and_keeps_the_result(ip, project: Path,
                                                              monkeypatch: Any) -> None:
    monkeypatch.setenv("FAKE_FLY_EXIT", "3")
    with capture_output(), pytest.raises(ProviderError, match="exit code 3"):
        ip.run_line_magic("atlas", f"deploy api --project {project} -o failed")
    assert ip.user_ns["failed"].status == "failed"


def test_deploy_refuses_a_folder_outside_the_project(ip, project: Path) -> None:
    with pytest.raises(ValidationError):
        ip.run_line_magic("atlas", f"deploy ../.. --project {project}")


def test_deploy_in_the_background_has_a_panel_with_cancel(ip, project: Path,
                                                         monkeypatch: Any) -> None:
    monkeypatch.setenv("FAKE_FLY_SLEEP", "30")
    panel = ip.run_line_magic("atlas", f"deploy api --project {project} --background -o dep")
    assert isinstance(panel, DeployPanel)
    deadline = time.monotonic() + 10
    while len(panel.lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "Pushing image 100%" in panel.lines
    panel.cancel_button.click()
    result = ip.user_ns["dep"].wait(15)
    assert result is not None and result.status == "cancelled"
    deadline = time.monotonic() + 5
    while panel.result is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert panel.cancel_button.disabled and "cancelled" in panel.status.value
    bundle = panel._repr_mimebundle_()
    assert "Pushing image" in bundle["text/plain"] and "<pre>" in bundle["text/html"]
    panel.close()


# -- logs against the sandbox's Fly logs API -------------------------------------------------
QUIET = {"fly": {"logs": {"rate": 0, "backlog": 0, "burst_every_s": 1e9}}}


@pytest.fixture(scope="module")
def fly_sandbox() -> Any:
    """One sandbox for the module whose Fly logs API emits only what a test says."""
    from atlas_nb import sandbox

    with sandbox.start(provision_delay_s=0, start_delay_s=0, options=QUIET) as sb:
        yield sb


@pytest.fixture
def fly_logs(fly_sandbox: Any, request: pytest.FixtureRequest) -> Any:
    """The sandbox, with a fresh app ``shop-api-<n>`` for this test (``.app``)."""
    fly_sandbox.app = f"shop-api-{len(request.node.name)}-{id(request)}"
    fly_sandbox.fly.logs.add_app(fly_sandbox.app, [("m-1", "iad"), ("m-2", "ams")])
    return fly_sandbox


def test_logs_no_follow_returns_a_filtered_table(ip, fly_logs: Any) -> None:
    logs, app = fly_logs.fly.logs, fly_logs.app
    logs.emit(app, "GET /health 200", level="info", instance="m-1", region="iad")
    logs.emit(app, "upstream timeout", level="error", instance="m-2", region="ams")
    logs.emit(app, "slow request", level="warn", instance="m-1", region="iad")
    df = ip.run_line_magic("atlas", f"logs {app} --no-follow --wait 1 --level warn -o lines")
    assert list(df.columns) == ["timestamp", "level", "region", "instance", "message"]
    assert df["message"].tolist() == ["upstream timeout", "slow request"]
    assert ip.user_ns["lines"] is df
    only = ip.run_line_magic("atlas", f"logs {app} --no-follow --wait 1 --grep HEALTH")
    assert only["message"].tolist() == ["GET /health 200"]


def test_logs_panel_follows_the_app_live(ip, fly_logs: Any) -> None:
    from atlas_nb.notebook.widgets.log_tail import LogTail

    app = fly_logs.app
    tail = ip.run_line_magic("atlas", f"logs {app} --lines 50")
    assert isinstance(tail, LogTail)
    fly_logs.fly.logs.emit(app, "hello from the sandbox", level="info",
                           instance="m-1", region="iad")
    deadline = time.monotonic() + 15
    while tail.received < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    fly_logs.fly.logs.burst(app, 120)  # after the first page: the cursor pages them all
    while tail.received < 121 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tail.received >= 121
    assert len(tail.buffer) == 50 and tail.dropped >= 71  # the ring buffer stays bounded
    deadline = time.monotonic() + 5
    while tail.redraws == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tail.view.outputs and app in tail.view.outputs[0]["text"]
    tail.close()
    assert not any(w.alive for w in tail._workers)
