"""Fly logs end to end over real loopback sockets against the sandbox's ``S/fly/api``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import atlas_nb.sandbox
from atlas_nb import NotFound, Unauthorized
from atlas_nb.fly import (
    LogBatch,
    LogsClient,
    LogsStopped,
    TokenChain,
    fetch_logs,
    subscribe_logs,
    tail_logs,
)
from atlas_nb.fly.tokens import EnvLayer, ManualLayer, StoreLayer, TokenStore
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.server import Sandbox

WAIT = 10.0


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    """One quiet sandbox (no generated lines) for the module; each test uses its own app."""
    with atlas_nb.sandbox.start(clouds=["fly"], attach=False,
                                options={"fly": {"logs": {"generate": False}}}) as box:
        yield box


@pytest.fixture(autouse=True)
def attached(sb: Sandbox) -> None:
    atlas_nb.sandbox.attach(sb.url)  # undone after each test by conftest


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.stopped = threading.Event()

    def __call__(self, event: Any) -> None:
        self.events.append(event)
        if isinstance(event, LogsStopped):
            self.stopped.set()


def test_tail_over_loopback(sb: Sandbox) -> None:
    sb.fly.logs.add_app("tail-app", [("m-iad", "iad"), ("m-ord", "ord")])
    sb.fly.logs.emit("tail-app", "booting", level="info", instance="m-iad", region="iad")
    sb.fly.logs.emit("tail-app", "disk almost full", level="warn", instance="m-ord",
                     region="ord")
    sb.fly.logs.emit("tail-app", "crashed", level="error")
    entries = list(tail_logs("tail-app", max_entries=3, timeout_s=WAIT))
    assert [(e.message, e.level, e.instance, e.region) for e in entries] == [
        ("booting", "info", "m-iad", "iad"), ("disk almost full", "warn", "m-ord", "ord"),
        ("crashed", "error", "m-iad", "iad")]
    assert all(e.app == "tail-app" and isinstance(e.timestamp, datetime) for e in entries)
    assert len({e.id for e in entries}) == 3
    assert entries[0].raw["meta"] == {"instance": "m-iad", "region": "iad",
                                      "event": {"provider": "app"}}
    assert sb.violations == []


def collect(rec: Recorder, n: int) -> list[str]:
    """The ids ``rec`` got, once it has ``n`` of them (or after ``WAIT`` seconds)."""
    stop = threading.Event()
    got: list[str] = []
    for _ in range(int(WAIT / 0.02)):
        got = [e.id for ev in list(rec.events) if isinstance(ev, LogBatch) for e in ev]
        if len(got) >= n:
            break
        stop.wait(0.02)
    return got


def test_every_line_once_across_pages(sb: Sandbox) -> None:
    sb.fly.logs.add_app("paged")
    backlog = sb.fly.logs.burst("paged", 130)
    first = fetch_logs("paged")
    assert [e.id for e in first.entries] == backlog[-100:]  # no cursor: the latest page
    rec = Recorder()
    with subscribe_logs("paged", rec):
        assert collect(rec, 100) == backlog[-100:]
        live = sb.fly.logs.burst("paged", 250)  # 2.5 pages: the cursor must be followed
        got = collect(rec, 350)
    assert got == backlog[-100:] + live  # every line once, in order


def test_inclusive_cursor_overlap_is_deduplicated(sb: Sandbox) -> None:
    sb.fly.logs.add_app("overlap")
    sb.fly.logs.inclusive_cursor = True  # the server repeats the boundary line
    try:
        rec = Recorder()
        with subscribe_logs("overlap", rec):
            ids = sb.fly.logs.burst("overlap", 5)
            ids += [sb.fly.logs.emit("overlap", f"later {i}") for i in range(5)]
            got = collect(rec, 10)
        assert got == ids  # each line exactly once, in order
    finally:
        sb.fly.logs.inclusive_cursor = False


def test_late_lines_with_old_timestamps_are_delivered(sb: Sandbox) -> None:
    sb.fly.logs.add_app("late")
    sb.fly.logs.emit("late", "now")
    old = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    with tail_logs("late", max_entries=3, timeout_s=WAIT) as tail:
        first = next(tail)
        sb.fly.logs.emit("late", "from a slow machine", timestamp=old)
        sb.fly.logs.emit("late", "also now")
        rest = list(tail)
    assert [first.message, *(e.message for e in rest)] == [
        "now", "from a slow machine", "also now"]
    assert rest[0].timestamp == datetime(2020, 1, 1, tzinfo=UTC)


def test_server_side_filters(sb: Sandbox) -> None:
    sb.fly.logs.add_app("filtered", [("a1", "iad"), ("b2", "syd")])
    sb.fly.logs.burst("filtered", 6)
    syd = fetch_logs("filtered", region="syd")
    assert {e.region for e in syd.entries} == {"syd"} and len(syd.entries) == 3
    a1 = fetch_logs("filtered", instance="a1")
    assert {e.instance for e in a1.entries} == {"a1"} and len(a1.entries) == 3


def test_unknown_app_is_a_404(sb: Sandbox) -> None:
    with pytest.raises(NotFound, match="no-such-app"):
        fetch_logs("no-such-app")
    rec = Recorder()
    subscribe_logs("no-such-app", rec)
    assert rec.stopped.wait(WAIT)
    assert rec.events[-1].reason == "not_found"


def test_one_401_is_retried_two_stop_the_stream(sb: Sandbox) -> None:
    sb.fly.logs.add_app("authz")
    sb.fly.logs.emit("authz", "hello")
    sb.fly.logs.fail_auth(1)
    assert [e.message for e in fetch_logs("authz").entries] == ["hello"]  # the retry worked
    sb.fly.logs.fail_auth(2)
    rec = Recorder()
    sub = subscribe_logs("authz", rec)
    assert rec.stopped.wait(WAIT)
    stop = rec.events[-1]
    assert stop.reason == "unauthorized" and isinstance(stop.error, Unauthorized)
    assert not sub.active


def test_macaroons_go_as_flyv1_through_the_chain(sb: Sandbox, tmp_path: Path) -> None:
    sb.fly.logs.add_app("macaroon")
    sb.fly.logs.emit("macaroon", "hi")
    sb.fly.logs.accept_token("fm2_sandbox_macaroon")
    store = TokenStore(tmp_path)
    chain = TokenChain([ManualLayer(store), EnvLayer({}), StoreLayer(store)])
    chain.set_manual("macaroon", "fm2_sandbox_macaroon")
    page = LogsClient(tokens=chain).fetch("macaroon")
    assert [e.message for e in page.entries] == ["hi"]
    sb.clear_violations()
    bad = httpx.get(f"{sb.url}/fly/api/api/v1/apps/macaroon/logs",
                    headers={"Authorization": "Bearer fm2_sandbox_macaroon"})
    assert bad.status_code == 401 and bad.json() == {
        "error": "Authenticate: token validation error"}
    assert any("macaroon was sent as `Bearer`" in v for v in sb.violations)
    sb.clear_violations()


def test_wire_shape(sb: Sandbox) -> None:
    sb.fly.logs.add_app("wire")
    line_id = sb.fly.logs.emit("wire", "shape")
    key = atlas_nb.sandbox.sandbox_key("fly")
    url = f"{sb.url}/fly/api/api/v1/apps/wire/logs"
    body = httpx.get(url, headers={"Authorization": f"FlyV1 {key}"}).json()
    (item,) = body["data"]
    assert item["id"] == line_id and item["type"] == "logs"
    assert set(item["attributes"]) == {"timestamp", "message", "level", "instance", "region",
                                       "meta"}
    cursor = body["meta"]["next_token"]
    assert cursor.isdigit() and len(cursor) >= 19  # nanoseconds
    after = httpx.get(url, params={"next_token": cursor},
                      headers={"Authorization": f"Bearer {key}"}).json()
    assert after == {"data": [], "meta": {"next_token": ""}}
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, params={"next_token": "abc"},
                     headers={"Authorization": f"Bearer {key}"}).status_code == 400


def test_streamer_ends_with_its_subscriber(sb: Sandbox) -> None:
    sb.fly.logs.add_app("lifecycle")
    sb.fly.logs.emit("lifecycle", "x")
    before = sb.fly.logs.requests
    with tail_logs("lifecycle", max_entries=1, timeout_s=WAIT) as tail:
        assert next(tail).message == "x"
    alive = [t for t in threading.enumerate() if t.name == "atlas-fly-logs-lifecycle"]
    assert alive == []
    polled = sb.fly.logs.requests
    assert polled > before
    threading.Event().wait(0.3)
    assert sb.fly.logs.requests == polled  # nobody polls a stream nobody follows


def test_generated_lines_several_machines_levels_and_bursts() -> None:
    clock = ManualClock()
    with atlas_nb.sandbox.start(
        clouds=["fly"], clock=clock, seed=7,
        options={"fly": {"logs": {"rate": 2.0, "burst_every_s": 10, "burst_size": 30}}},
    ) as box:
        box.fly.logs.add_app("busy", [("m1", "iad"), ("m2", "ord"), ("m3", "ams")])
        start = len(box.fly.logs.lines("busy"))
        assert start == box.fly.logs.backlog  # a new app starts with a short backlog
        clock.advance(60)
        lines = box.fly.logs.lines("busy")[start:]
        attrs = [line["attributes"] for line in lines]
        assert {a["instance"] for a in attrs} == {"m1", "m2", "m3"}
        assert {a["region"] for a in attrs} == {"iad", "ord", "ams"}
        assert {"info", "warn"} <= {a["level"] for a in attrs}
        bursts = [a for a in attrs if a["message"].endswith("(burst)")]
        assert len(bursts) >= 30  # at least one burst of 30 within the minute
        first_burst = sorted(datetime.fromisoformat(a["timestamp"]) for a in bursts)[:30]
        assert (first_burst[-1] - first_burst[0]).total_seconds() < 1  # all at once
        page = fetch_logs("busy")
        assert len(page.entries) == 100
        assert box.violations == []


def test_generation_is_deterministic() -> None:
    def run() -> list[str]:
        clock = ManualClock()
        with atlas_nb.sandbox.start(clouds=["fly"], clock=clock, seed=3, attach=False) as box:
            box.fly.logs.add_app("same")
            clock.advance(30)
            return [f"{a['id']} {a['attributes']['message']}" for a in box.fly.logs.lines("same")]

    assert run() == run()


def test_machines_of_the_fly_cloud_are_the_instances(sb: Sandbox) -> None:
    key = atlas_nb.sandbox.sandbox_key("fly")
    headers = {"Authorization": f"Bearer {key}"}
    base = f"{sb.url}/fly/machines/v1"
    created = httpx.post(f"{base}/apps", json={"app_name": "with-machines",
                                               "name": "with-machines", "org_slug": "personal"},
                         headers=headers)
    assert created.status_code in (200, 201), created.text
    machine = httpx.post(f"{base}/apps/with-machines/machines", headers=headers, json={
        "region": "ord", "config": {"image": "nginx:latest",
                                    "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}}})
    assert machine.status_code == 200, machine.text
    machine_id = machine.json()["id"]
    line_id = sb.fly.logs.emit("with-machines", "from the machine")
    (entry,) = [e for e in fetch_logs("with-machines").entries if e.id == line_id]
    assert (entry.instance, entry.region) == (machine_id, "ord")


def test_lines_written_after_subscribe_returns_are_never_lost(sb: Sandbox) -> None:
    # The API's first page (no cursor) is only the latest 100 lines; subscribing makes that
    # first poll before returning, so a flood right after cannot push lines out of reach.
    sb.fly.logs.add_app("flood")
    rec = Recorder()
    with subscribe_logs("flood", rec):
        ids = sb.fly.logs.burst("flood", 250)
        assert collect(rec, 250) == ids


def test_an_empty_first_page_still_carries_a_cursor(sb: Sandbox) -> None:
    sb.fly.logs.add_app("empty")
    key = atlas_nb.sandbox.sandbox_key("fly")
    url = f"{sb.url}/fly/api/api/v1/apps/empty/logs"
    body = httpx.get(url, headers={"Authorization": f"Bearer {key}"}).json()
    assert body["data"] == [] and body["meta"]["next_token"].isdigit()
    line_id = sb.fly.logs.emit("empty", "first")
    after = httpx.get(url, params={"next_token": body["meta"]["next_token"]},
                      headers={"Authorization": f"Bearer {key}"}).json()
    assert [d["id"] for d in after["data"]] == [line_id]
