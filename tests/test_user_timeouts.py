"""The user's ``http=`` timeout caps every request (issue 13, item 9).

Against the sandbox over a real loopback socket, with a latency fault: ``http={"timeout": 1}``
and ``http=httpx.Client(timeout=1)`` make a slow call raise ``atlas_nb.Timeout`` after one
attempt (it is not retried: a retry would wait as long again), instead of the call
completing. Long polls ask the server for a window that fits inside the cap: Fly's
``/wait?timeout=`` (seconds) and RunPod's ``/runsync?wait=`` (milliseconds). The Fly logs API
has no server-held window (flyctl polls it plainly), so each poll is simply capped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb import sandbox
from atlas_nb.fly.logs import LogsClient
from atlas_nb.providers.fly import Fly
from atlas_nb.providers.runpod import RunPod
from atlas_nb.sandbox.server import Sandbox

Events = list[tuple[str, dict[str, Any]]]
LATENCY_MS = 3000
CAPS: dict[str, Any] = {"dict": lambda: {"timeout": 1}, "client": lambda: httpx.Client(timeout=1)}


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with sandbox.start(validate=False, provision_delay_s=0.05, start_delay_s=0.05,
                       options={"fly": {"apps": ["my-app"],
                                        "app_ips": {"my-app": ["shared_v4", "v6"]}}}) as box:
        yield box


@pytest.fixture(autouse=True)
def _attached(sb: Sandbox) -> Iterator[None]:
    sandbox.attach(sb.url)  # the conftest detaches after every test
    yield
    sb.faults.clear()


@pytest.fixture(params=sorted(CAPS))
def capped(request: pytest.FixtureRequest) -> Iterator[Any]:
    http = CAPS[request.param]()
    yield http
    if isinstance(http, httpx.Client):
        http.close()


def _query(events: Events, path_end: str) -> list[dict[str, list[str]]]:
    return [parse_qs(urlsplit(data["url"]).query) for name, data in events
            if name == "http.request" and urlsplit(data["url"]).path.endswith(path_end)]


def test_a_slow_get_raises_timeout_once(sb: Sandbox, capped: Any) -> None:
    pod = atlas.spawn_compute(provider="runpod", gpu="rtx_4090", image="img:1")
    rule = sb.faults("runpod/rest:GET /v2/pods/*", latency_ms=LATENCY_MS)
    started = time.monotonic()
    with pytest.raises(atlas.Timeout):
        atlas.get_compute(pod.id, provider="runpod", http=capped)
    print(f"raised after {time.monotonic() - started:.2f}s (latency {LATENCY_MS} ms)")
    assert rule.matched == 1, "a request cut off by the user's timeout is not replayed"
    atlas.terminate(pod.id, provider="runpod")


def test_without_a_cap_the_same_call_completes(sb: Sandbox) -> None:
    pod = atlas.spawn_compute(provider="runpod", gpu="rtx_4090", image="img:1")
    sb.faults("runpod/rest:GET /v2/pods/*", latency_ms=1500)
    assert atlas.get_compute(pod.id, provider="runpod", http={"timeout": 10}).id == pod.id
    atlas.terminate(pod.id, provider="runpod")


def test_a_slow_fly_logs_poll_raises_timeout(sb: Sandbox, capped: Any) -> None:
    rule = sb.faults("fly/api:GET /api/v1/apps/*/logs", latency_ms=LATENCY_MS)
    with pytest.raises(atlas.Timeout):
        LogsClient(http=capped).fetch("my-app")
    assert rule.matched == 1


def test_fly_wait_asks_for_a_window_inside_the_cap(sb: Sandbox, events: Events) -> None:
    sb.fly.start_delay_s = 1.5  # the first GET sees it starting: wait_ready long-polls
    fly = Fly("my-app", http={"timeout": 5})
    c = fly.spawn_compute(atlas.ComputeRequest(image="img:1", ports=[(8000, "http")]))
    ready = fly.wait_ready(c.id, timeout_s=60)
    assert ready.status == "running"
    waits = _query(events, "/wait")
    assert waits, "wait_ready long-polled /wait"
    assert all(int(q["timeout"][0]) < 5 for q in waits), waits
    fly.terminate(c.id)


def test_fly_wait_is_skipped_when_no_window_fits(sb: Sandbox, events: Events) -> None:
    sb.fly.start_delay_s = 1.0
    fly = Fly("my-app", http={"timeout": 1})
    c = fly.spawn_compute(atlas.ComputeRequest(image="img:1", ports=[(8000, "http")]))
    assert fly.wait_ready(c.id, timeout_s=60).status == "running"
    assert _query(events, "/wait") == [], "a 1 s cap leaves no room for a whole-second wait"
    fly.terminate(c.id)


def test_runsync_asks_for_a_window_inside_the_cap(sb: Sandbox, events: Events) -> None:
    job = atlas.run_job(provider=RunPod(http={"timeout": 5}), endpoint="slow",
                        input={"seconds": 0.2}, mode="sync", timeout_ms=30_000)
    assert job.status == "completed"
    (runsync,) = _query(events, "/runsync")
    assert 1000 <= int(runsync["wait"][0]) < 5000


def test_runsync_falls_back_to_run_when_no_window_fits(sb: Sandbox, events: Events) -> None:
    job = atlas.run_job(provider=RunPod(http={"timeout": 1.5}), endpoint="slow",
                        input={"seconds": 0.2}, mode="sync", timeout_ms=30_000)
    assert job.status == "completed"
    assert _query(events, "/runsync") == [] and len(_query(events, "/run")) == 1
