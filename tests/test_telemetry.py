"""telemetry.py: attach/detach, the "*" wildcard, and handlers that raise."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

import atlas_nb
from atlas_nb import telemetry
from atlas_nb._http import HttpClient

Seen = list[tuple[str, dict[str, Any]]]


def recorder(seen: Seen) -> telemetry.Handler:
    def handle(event: str, data: Mapping[str, Any]) -> None:
        seen.append((event, dict(data)))
    return handle


def boom(event: str, data: Mapping[str, Any]) -> None:
    raise RuntimeError(f"handler bug on {event}")


def test_attach_emit_detach() -> None:
    seen: Seen = []
    telemetry.attach("t1", "compute.spawn", recorder(seen))
    assert telemetry.handlers()["t1"] == "compute.spawn"
    telemetry.emit("compute.spawn", {"id": "a"})
    telemetry.emit("compute.terminate", {"id": "a"})  # another event: not delivered
    assert seen == [("compute.spawn", {"id": "a"})]
    assert telemetry.detach("t1") is True
    assert "t1" not in telemetry.handlers()
    telemetry.emit("compute.spawn", {"id": "b"})
    assert len(seen) == 1
    assert telemetry.detach("t1") is False  # already gone


def test_wildcard_sees_every_event() -> None:
    seen: Seen = []
    telemetry.attach("all", "*", recorder(seen))
    telemetry.emit("http.request", {"n": 1})
    telemetry.emit("job.run", {"n": 2})
    telemetry.emit("anything.at.all", {"n": 3})
    assert [e for e, _ in seen] == ["http.request", "job.run", "anything.at.all"]


def test_same_id_replaces_the_handler() -> None:
    first: Seen = []
    second: Seen = []
    telemetry.attach("dup", "x", recorder(first))
    telemetry.attach("dup", "x", recorder(second))
    telemetry.emit("x", {})
    assert first == [] and second == [("x", {})]
    assert list(telemetry.handlers()).count("dup") == 1


def test_several_handlers_each_get_the_event() -> None:
    a: Seen = []
    b: Seen = []
    telemetry.attach("a", "x", recorder(a))
    telemetry.attach("b", "*", recorder(b))
    telemetry.emit("x", {"k": 1})
    assert a == b == [("x", {"k": 1})]


def test_raising_handler_is_logged_and_others_still_run(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    seen: Seen = []
    telemetry.attach("bad", "*", boom)
    telemetry.attach("good", "*", recorder(seen))
    with caplog.at_level(logging.ERROR, logger="atlas_nb.telemetry"):
        telemetry.emit("x", {"k": 1})  # does not raise
    assert seen == [("x", {"k": 1})]
    assert any("telemetry handler failed for x" in r.getMessage() for r in caplog.records)


def test_raising_handler_does_not_break_a_request() -> None:
    telemetry.attach("bad", "http.request", boom)
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"pods": []}))
    client = HttpClient(provider="runpod", api="rest", base_url="https://x.test", http=transport)
    assert client.request("GET", "/pods") == {"pods": []}


def test_raising_handler_does_not_break_a_facade_call() -> None:
    telemetry.attach("bad", "*", boom)
    c = atlas_nb.spawn_compute(provider="mock", image="img:1")
    assert c.status == "running"
    atlas_nb.terminate(c.id, provider="mock")
    assert atlas_nb.get_compute(c.id, provider="mock").status == "terminated"


def test_lifecycle_events_carry_provider_and_id() -> None:
    seen: Seen = []
    telemetry.attach("life", "*", recorder(seen))
    c = atlas_nb.spawn_compute(provider="mock", gpu="h100", image="img:1")
    atlas_nb.terminate(c.id, provider="mock")
    names = [e for e, _ in seen]
    assert names == ["compute.spawn", "compute.terminate"]
    for _, data in seen:
        assert data["provider"] == "mock" and data["id"] == c.id
    assert seen[0][1]["gpu"] == "h100"


def test_attach_and_emit_from_many_threads() -> None:
    steady: dict[str, int] = {}
    lock = threading.Lock()

    def count(event: str, data: Mapping[str, Any]) -> None:
        with lock:
            steady[event] = steady.get(event, 0) + 1

    def worker(n: int) -> None:
        for i in range(50):
            telemetry.attach(f"w{n}", "*", lambda e, d: None)
            telemetry.emit(f"ev{n}", {"i": i})
            telemetry.detach(f"w{n}")

    telemetry.attach("steady", "*", count)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the steady handler saw every event exactly once, whatever else came and went
    assert steady == {f"ev{n}": 50 for n in range(8)}
    assert not any(h.startswith("w") for h in telemetry.handlers())
