"""Panels built off-kernel: click their buttons, then assert on widget state and on the
sandbox (over loopback) or the mock provider."""

from __future__ import annotations

import ast
import inspect
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from widget_states import state_text, widgets_in

import atlas_nb as atlas
from atlas_nb.fly import LogBatch, LogsStopped
from atlas_nb.models import LogEntry
from atlas_nb.notebook import frames
from atlas_nb.notebook.catalog_cache import CACHE
from atlas_nb.notebook.widgets import _background
from atlas_nb.notebook.widgets.catalog_panel import CatalogPanel
from atlas_nb.notebook.widgets.dashboard import Dashboard, duration
from atlas_nb.notebook.widgets.job_panel import JobPanel
from atlas_nb.notebook.widgets.log_tail import LogTail, level_option
from atlas_nb.notebook.widgets.spawn_panel import SpawnPanel, gpu_options

VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(autouse=True)
def _clean() -> Any:
    CACHE.clear()
    yield
    _background.stop_all()


def _live_ids(box: Any) -> set[str]:
    return {p["id"] for p in box.runpod.live_pods()}


# -- SpawnPanel ---------------------------------------------------------------------------
def test_spawn_panel_prices_gpus_from_the_catalog(box: Any) -> None:
    panel = SpawnPanel(provider="runpod", background=False)
    labels = dict((v, k) for k, v in panel.gpu.options)
    assert "rtx_4090" in labels and "$" in labels["rtx_4090"] and "/h" in labels["rtx_4090"]
    assert panel.gpu.value == "cpu"
    assert gpu_options([]) == [("cpu (no GPU)", "cpu")]


def test_spawn_panel_spawns_in_the_background_and_masks_the_token(box: Any, orch: Any) -> None:
    panel = SpawnPanel(provider="runpod", gpu="rtx_4090", image="img:1", auth="bearer",
                       background=True)
    assert panel.join(10)
    panel.spawn_button.click()
    assert panel.join(30), "spawn did not finish"
    c = panel.compute
    assert c is not None and c.status == "running" and panel.error is None
    assert panel.progress.value == 3 and c.url in panel.urls.value
    assert c.id in _live_ids(box)
    assert [t.id for t in orch.tracked()] == [c.id]
    token = c.auth.token
    assert token not in state_text(panel.widget)  # masked: not even in the synced state
    assert "••••" in panel.secret.value
    panel.reveal.value = True
    assert token in panel.secret.value and panel.reveal.description == "Hide"
    panel.reveal.value = False
    assert token not in state_text(panel.widget)
    assert token not in panel.text() + panel.html()
    panel.close()
    assert not any(w.alive for w in panel._workers)


def test_spawn_panel_signed_url_is_revealed_with_the_secret(orch: Any) -> None:
    panel = SpawnPanel(provider="mock", image="img:1", ports="8000/http", auth="signed_url",
                       background=False)
    panel.spawn()
    assert panel.compute is not None and panel.compute.status == "running"
    assert "signed URL" not in panel.secret.value
    panel.reveal.value = True
    assert "signed URL" in panel.secret.value and "atlas_sig=" in panel.secret.value
    from atlas_nb.auth import verify_url

    secret = panel.compute.auth.token
    assert secret in panel.secret.value
    verify_url(panel._signed_url, secret=secret)  # a URL the pod-side verifier accepts


def test_spawn_panel_untracked_and_bad_input(orch: Any) -> None:
    panel = SpawnPanel(provider="mock", image="", tracked=False, background=False)
    panel.spawn_button.click()
    assert "image: required" in panel.status.value and panel.compute is None
    panel.image.value = "img:1"
    panel.ports.value = "http/8000"
    panel.spawn_button.click()
    assert "cannot read &#x27;http/8000&#x27;" in panel.status.value
    panel.ports.value = "8000/http"
    panel.spawn_button.click()
    assert panel.compute is not None and orch.tracked() == []


# -- CatalogPanel -------------------------------------------------------------------------
def _catalog() -> list[Any]:
    return [
        atlas.GpuType(provider="runpod", id="a", canonical="h100_sxm", memory_gb=80,
                      price_per_hour=2.69, spot_price_per_hour=1.5, stock="high"),
        atlas.GpuType(provider="vast", id="b", canonical="h100_pcie", memory_gb=80,
                      price_per_hour=1.9, spot_price_per_hour=0.8, stock="low"),
        atlas.GpuType(provider="mock", id="c", canonical="h100", memory_gb=80,
                      price_per_hour=2.99, spot_price_per_hour=1.99),
        atlas.GpuType(provider="runpod", id="d", canonical="rtx_4090", memory_gb=24,
                      price_per_hour=0.69, spot_price_per_hour=0.35, gpu_count=2),
    ]


def test_catalog_panel_filters_sorts_and_prefills_the_spawn_panel() -> None:
    spawn = SpawnPanel(provider="mock", catalog=_catalog(), background=False)
    panel = CatalogPanel(frames.gpus(_catalog()), spawn_panel=spawn, background=False)
    assert panel.view["price_per_hour"].tolist() == [0.69, 1.9, 2.69, 2.99]
    panel.gpu.value = "h100_sxm"
    assert panel.view["id"].tolist() == ["a"]
    panel.gpu.value = "any"
    panel.max_price.value = 2.0
    assert panel.view["id"].tolist() == ["d", "b"]
    assert panel.table.value.index("rtx_4090") < panel.table.value.index("h100_pcie")
    panel.max_price.value = 0
    panel.sort.value = "memory"
    assert panel.view["memory_gb"].tolist()[0] == 80
    panel.sort.value = "price"
    panel.spot.value = True
    panel.provider.value = "runpod"
    assert panel.view["id"].tolist() == ["d", "a"]
    assert panel.use_button.disabled
    panel.pick.value = 0
    assert not panel.use_button.disabled
    panel.use_button.click()
    assert (spawn.provider.value, spawn.gpu.value, spawn.gpu_count.value, spawn.spot.value) == \
        ("runpod", "rtx_4090", 2, True)
    assert "prefilled" in spawn.status.value


def test_catalog_panel_loads_from_the_sandbox_in_the_background(box: Any) -> None:
    picked: list[dict[str, Any]] = []
    panel = CatalogPanel(providers="runpod", on_pick=picked.append)
    assert panel.join(20) and panel.error is None
    assert len(panel.view) > 5 and set(panel.view["provider"]) == {"runpod"}
    first = panel.view["price_per_hour"].iloc[0]
    assert first == panel.view["price_per_hour"].min()
    panel.use(0)
    assert picked[0]["provider"] == "runpod"
    panel.close()


# -- JobPanel -----------------------------------------------------------------------------
def test_job_panel_streams_into_the_table(box: Any) -> None:
    panel = JobPanel(provider="runpod", endpoint="stream",
                     input={"text": "alpha beta gamma delta", "delay_s": 0.01})
    panel.submit_button.click()
    assert panel.join(30)
    assert panel.frame["chunk"].tolist() == ["alpha", "beta", "gamma", "delta"]
    assert "delta" in panel.table.value and panel.job.status == "completed"
    assert panel.submit_button.disabled is False and panel.cancel_button.disabled is True
    assert "completed" in panel.status.value


def test_job_panel_cancel_cancels_the_remote_job(box: Any) -> None:
    panel = JobPanel(provider="runpod", endpoint="slow", input={"seconds": 30}, stream=False,
                     refresh_interval=0.05)
    panel.submit_button.click()
    job = panel.job
    assert job is not None and not panel.cancel_button.disabled
    panel.cancel_button.click()
    assert panel.join(10)
    assert box.runpod.job("slow", job.id)["status"] == "CANCELLED"
    assert panel.job.status == "cancelled" and "cancelled" in panel.status.value


def test_job_panel_redraws_are_throttled(box: Any) -> None:
    panel = JobPanel(provider="runpod", endpoint="stream", max_redraws_per_s=2.0,
                     input={"text": " ".join(f"w{i}" for i in range(40)), "delay_s": 0.0})
    panel.submit()
    assert panel.join(30)
    assert len(panel.rows) == 40
    assert panel.redraws <= 5  # a few throttled redraws plus the final one, not 40


def test_job_panel_bad_input_shows_an_error() -> None:
    panel = JobPanel(provider="mock", endpoint="e", background=False)
    panel.editor.value = "{not: [valid"
    assert panel.submit() is None and "neither JSON nor YAML" in panel.status.value
    panel.editor.value = '{"a": 1}'
    panel.endpoint.value = ""
    assert panel.submit() is None and "endpoint missing" in panel.status.value


# -- Dashboard ----------------------------------------------------------------------------
def test_dashboard_rows_touch_and_no_destructive_buttons_by_default(box: Any, orch: Any) -> None:
    c = orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1")
    dash = Dashboard(source=orch, background=False)
    row = dash.rows[c.id]
    assert row.stop is None and row.terminate is None
    assert [b.description for b in row.box.children[-1:]] == ["Touch"]
    before = orch.tracked()[0].last_activity
    time.sleep(0.01)
    row.touch.click()
    assert orch.tracked()[0].last_activity > before
    assert "touched" in dash.status.value
    assert "session spend" in dash.spend.value and "/h" in dash.spend.value
    dash.ask(c.id, "terminate")  # even called directly, it refuses
    assert "allow_destructive_actions" in dash.status.value
    assert c.id in _live_ids(box)


def test_dashboard_terminate_confirms_then_terminates_upstream(box: Any, orch: Any) -> None:
    c = orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1")
    dash = Dashboard(source=orch, allow_destructive_actions=True, background=False)
    dash.refresh(poll_status=True)
    row = dash.rows[c.id]
    assert row.values.status == "running"
    row.terminate.click()
    assert row.confirm_yes in row.box.children and c.id in row.question.value
    row.confirm_no.click()
    assert row.terminate in row.box.children and c.id in _live_ids(box)
    row.terminate.click()
    row.confirm_yes.click()
    assert c.id not in _live_ids(box)
    assert orch.tracked() == []
    assert row.values.ended and row.values.status.startswith("terminated")
    assert row.box.children == tuple(row.cells)  # no buttons on an ended row


def test_dashboard_stop_keeps_it_tracked(box: Any, orch: Any) -> None:
    c = orch.spawn(provider="runpod", gpu="rtx_4090", image="img:1")
    dash = Dashboard(source=orch, allow_destructive_actions=True, background=False)
    dash.rows[c.id].stop.click()
    dash.rows[c.id].confirm_yes.click()
    assert box.runpod.pods[c.id]["status"] == "EXITED"
    assert [t.id for t in orch.tracked()] == [c.id]
    assert dash.rows[c.id].values.status == "stopped"
    orch.stop_tracked(c.id)


def test_dashboard_background_refresh_and_close(orch: Any) -> None:
    dash = Dashboard(source=orch, refresh_interval=0.02, status_interval=0.02)
    c = orch.spawn(provider="mock", image="img:1")
    deadline = time.monotonic() + 10
    while c.id not in dash.rows and time.monotonic() < deadline:
        time.sleep(0.02)
    assert c.id in dash.rows
    orch.stop_tracked(c.id)  # the event marks the row at once
    assert dash.rows[c.id].values.ended
    dash.close()
    assert not any(w.alive for w in dash._workers) and dash._subscription is None


def test_duration_format() -> None:
    assert [duration(s) for s in (None, 5, 65, 1200, 3725)] == ["—", "5s", "1m05s", "20m",
                                                                "1h02m"]


# -- LogTail ------------------------------------------------------------------------------
class FakeLogs:
    def __init__(self) -> None:
        self.callback: Any = None
        self.closed = False
        self.kwargs: dict[str, Any] = {}

    def __call__(self, app: str, callback: Any, **kwargs: Any) -> FakeLogs:
        self.app, self.callback, self.kwargs = app, callback, kwargs
        return self

    def close(self) -> None:
        self.closed = True


def _entry(i: int, level: str = "info", region: str = "iad", msg: str = "GET /") -> LogEntry:
    return LogEntry(timestamp=datetime(2026, 1, 1, tzinfo=UTC), message=f"{msg} #{i}",
                    level=level, region=region, instance="m1", app="demo", id=str(i))


def test_log_tail_filters_ring_buffer_and_pause() -> None:
    logs = FakeLogs()
    tail = LogTail("demo", subscribe=logs, max_lines=5, background=False, region="iad",
                   token="not-shown")
    assert logs.app == "demo" and logs.kwargs["region"] == "iad"
    logs.callback(LogBatch("demo", tuple(_entry(i) for i in range(10))))
    logs.callback(LogBatch("demo", (_entry(10, "error", "ams", "boom"),
                                    _entry(11, "warn", "iad", "slow"))))
    tail.render()
    assert len(tail.buffer) == 5 and tail.dropped == 7 and tail.received == 12
    text = tail.view.outputs[0]["text"]
    assert "#7" in text and "#11" in text and "#6" not in text
    tail.level.value = "warn"
    assert [e.id for e in tail.matching()] == ["10", "11"]
    assert "boom" in tail.view.outputs[0]["text"] and "#9" not in tail.view.outputs[0]["text"]
    tail.region.value = "ams"
    assert [e.id for e in tail.matching()] == ["10"]
    tail.region.value = "any"
    tail.grep.value = "SLOW"
    assert [e.id for e in tail.matching()] == ["11"]
    tail.grep.value = ""
    tail.pause.value = True
    frozen = tail.view.outputs
    logs.callback(LogBatch("demo", (_entry(12, "error"),)))
    tail.render()
    assert tail.view.outputs == frozen and "paused" in tail.status.value
    tail.pause.value = False
    assert "#12" in tail.view.outputs[0]["text"]
    logs.callback(LogsStopped("demo", "not_found"))
    tail.render()
    assert "not_found" in tail.status.value
    tail.close()
    assert logs.closed


def test_log_tail_background_redraws_are_bounded() -> None:
    logs = FakeLogs()
    tail = LogTail("demo", subscribe=logs, max_redraws_per_s=5)
    for i in range(200):
        logs.callback(LogBatch("demo", (_entry(i),)))
    deadline = time.monotonic() + 5
    while "#199" not in (tail.view.outputs[0]["text"] if tail.view.outputs else "") and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    assert "#199" in tail.view.outputs[0]["text"]
    assert tail.redraws < 20  # 200 batches, a handful of redraws
    tail.close()
    assert not any(w.alive for w in tail._workers)


def test_level_option() -> None:
    assert [level_option(x) for x in (None, "any", "DEBUG", "warning", "fatal")] == [
        "any", "any", "debug", "warn", "error"]


# -- fallbacks and thread rules -------------------------------------------------------------
def _panels(orch: Any) -> list[Any]:
    logs = FakeLogs()
    return [
        SpawnPanel(provider="mock", catalog=_catalog(), background=False),
        CatalogPanel(frames.gpus(_catalog()), background=False),
        JobPanel(provider="mock", endpoint="e", background=False),
        Dashboard(source=orch, background=False),
        LogTail("demo", subscribe=logs, background=False),
    ]


def test_every_panel_has_a_static_text_and_html_fallback(orch: Any) -> None:
    orch.spawn(provider="mock", image="img:1")
    for panel in _panels(orch):
        bundle = panel._repr_mimebundle_()
        assert VIEW in bundle, type(panel).__name__
        assert bundle["text/plain"] and "Box(" not in bundle["text/plain"]
        assert bundle["text/html"].startswith("<") and type(panel).__name__ != bundle["text/html"]
        tree = widgets_in(panel.widget)
        panel.close()
        assert all(x.comm is None for x in tree)  # the whole tree is closed, not only the root
        closed = panel._repr_mimebundle_()
        assert VIEW not in closed and closed["text/html"] == panel.html()


def test_no_panel_writes_to_an_output_widget_with_a_with_block(orch: Any) -> None:
    import ipywidgets as w

    for panel in _panels(orch):
        outputs = {name for name, value in vars(panel).items() if isinstance(value, w.Output)}
        tree = ast.parse(inspect.getsource(type(panel)))
        for node in ast.walk(tree):
            if isinstance(node, ast.With):
                for item in node.items:
                    expr = item.context_expr
                    assert not (isinstance(expr, ast.Attribute) and expr.attr in outputs), \
                        f"{type(panel).__name__} uses `with self.{expr.attr}:`"
        assert widgets_in(panel.widget)
        panel.close()
