"""Log streamers: one thread per app, no zombies, first batch kept, isolation, backoff, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from atlas_nb import NotFound, ProviderError, Unauthorized
from atlas_nb.fly import LogBatch, LogsStopped, LogStreams, TokenChain
from atlas_nb.fly.tokens import EnvLayer, FlyctlConfigLayer, ManualLayer, StoreLayer, TokenStore

APP = "my-app"
WAIT = 10.0  # generous upper bound for cross-thread handoffs; never a timing assertion


def item(i: int, *, ts: str | None = None, region: str = "iad", instance: str = "m1"
         ) -> dict[str, Any]:
    return {"id": f"id-{i}", "type": "logs", "attributes": {
        "timestamp": ts or f"2024-06-01T12:00:{i % 60:02d}Z", "message": f"line {i}",
        "level": "info", "instance": instance, "region": region, "meta": {}}}


def page(*items: dict[str, Any], token: str = "") -> tuple[int, dict[str, Any]]:
    return 200, {"data": list(items), "meta": {"next_token": token}}


class Script:
    """A logs API that plays scripted answers, then idles with empty pages."""

    def __init__(self, *answers: tuple[int, Any], gate_after: int | None = None) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.drained = threading.Event()
        self.lock = threading.Lock()
        self.gate_after = gate_after  # requests past this many wait for gate.set()
        self.gate = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.gate_after is not None and len(self.requests) >= self.gate_after:
            assert self.gate.wait(WAIT)
        with self.lock:
            self.requests.append(request)
            answer = self.answers.pop(0) if self.answers else None
        if answer is None:
            self.drained.set()
            time.sleep(0.005)  # idle: keep an unthrottled test poller from spinning hot
            answer = page()
        status, body = answer
        return httpx.Response(status, json=body)

    @property
    def tokens(self) -> list[str | None]:
        with self.lock:
            return [r.url.params.get("next_token") for r in self.requests]


class Recorder:
    """Collects every event a subscriber gets."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.stopped = threading.Event()
        self.got = threading.Condition()

    def __call__(self, event: Any) -> None:
        with self.got:
            self.events.append(event)
            if isinstance(event, LogsStopped):
                self.stopped.set()
            self.got.notify_all()

    @property
    def ids(self) -> list[str]:
        return [e.id for ev in self.events if isinstance(ev, LogBatch) for e in ev]

    def wait_for(self, n: int) -> list[str]:
        with self.got:
            self.got.wait_for(lambda: len(self.ids) >= n, timeout=WAIT)
        return self.ids


@pytest.fixture
def waits() -> list[float]:
    return []


def hub_for(script: Script, waits: list[float], **kw: Any) -> LogStreams:
    return LogStreams(http=httpx.MockTransport(script), base_url="https://api.fly.test",
                      token="fo1_test", pause=waits.append, **kw)


@pytest.fixture
def cleanup() -> Iterator[list[LogStreams]]:
    hubs: list[LogStreams] = []
    yield hubs
    for hub in hubs:
        hub.close()


def streamer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("atlas-fly-logs-")]


def test_first_batch_goes_to_the_first_subscriber(waits: list[float],
                                                  cleanup: list[LogStreams]) -> None:
    script = Script(page(item(1), item(2), token="10"))
    hub = hub_for(script, waits)
    cleanup.append(hub)
    rec = Recorder()
    with hub.subscribe(APP, rec):
        assert rec.wait_for(2) == ["id-1", "id-2"]
    assert script.requests[0].url.params.get("next_token") is None


def test_one_streamer_per_app_even_under_concurrent_subscribes(waits: list[float],
                                                               cleanup: list[LogStreams]) -> None:
    script = Script(page(item(1), token="5"))
    hub = hub_for(script, waits)
    cleanup.append(hub)
    recs = [Recorder() for _ in range(8)]
    subs: list[Any] = []
    barrier = threading.Barrier(len(recs))

    def join(rec: Recorder) -> None:
        barrier.wait()
        subs.append(hub.subscribe(APP, rec))

    threads = [threading.Thread(target=join, args=(r,)) for r in recs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert hub.running() == [APP]
    assert len([t for t in streamer_threads() if t.name == f"atlas-fly-logs-{APP}"]) == 1
    for rec in recs:  # each one gets id-1 exactly once (live or from the backfill)
        assert rec.wait_for(1) == ["id-1"]
    other = hub.subscribe("other-app", Recorder())
    assert hub.running() == [APP, "other-app"]
    for sub in [*subs, other]:
        sub.close()


def test_stops_when_the_last_subscriber_leaves_no_zombie(waits: list[float],
                                                         cleanup: list[LogStreams]) -> None:
    script = Script(page(item(1)))
    hub = hub_for(script, waits)
    cleanup.append(hub)
    a, b = hub.subscribe(APP, Recorder()), hub.subscribe(APP, Recorder())
    assert script.drained.wait(WAIT)
    (thread,) = [t for t in streamer_threads() if t.name == f"atlas-fly-logs-{APP}"]
    a.close()
    assert thread.is_alive() and hub.running() == [APP]  # b still listens
    b.close()
    assert not thread.is_alive()  # joined: nothing restarts it
    assert hub.running() == []
    polled = len(script.requests)
    time.sleep(0.05)
    assert len(script.requests) == polled  # no zombie polls
    assert not a.active and not b.active
    b.close()  # idempotent


def test_resubscribe_after_stop_starts_a_new_streamer(waits: list[float],
                                                      cleanup: list[LogStreams]) -> None:
    script = Script(page(item(1)), (404, {"error": "gone"}), page(item(2)))
    hub = hub_for(script, waits)
    cleanup.append(hub)
    rec = Recorder()
    sub = hub.subscribe(APP, rec)
    assert rec.stopped.wait(WAIT)
    assert sub.stopped is not None and sub.stopped.reason == "not_found"
    assert hub.running() == []
    rec2 = Recorder()
    with hub.subscribe(APP, rec2):
        assert rec2.wait_for(1) == ["id-2"]


def test_a_raising_callback_is_isolated(waits: list[float], cleanup: list[LogStreams],
                                        caplog: pytest.LogCaptureFixture) -> None:
    script = Script(page(item(1)), page(item(2)), page(item(3)))
    hub = hub_for(script, waits)
    cleanup.append(hub)
    good = Recorder()

    def bad(event: Any) -> None:
        raise RuntimeError("subscriber bug")

    with hub.subscribe(APP, bad), hub.subscribe(APP, good):
        assert good.wait_for(3) == ["id-1", "id-2", "id-3"]
    assert any("subscriber raised" in r.getMessage() for r in caplog.records)


def test_backoff_on_empty_pages_and_reset_after_data(waits: list[float],
                                                     cleanup: list[LogStreams]) -> None:
    script = Script(*[page()] * 8, page(item(1)), page(), page())
    hub = hub_for(script, waits)
    cleanup.append(hub)
    with hub.subscribe(APP, Recorder()):
        assert script.drained.wait(WAIT)
    assert waits[:10] == [0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.0, 4.0, 0.064, 0.128]


def test_cursor_keeps_the_previous_token_when_the_answer_has_none(
        waits: list[float], cleanup: list[LogStreams]) -> None:
    script = Script(page(item(1), token="100"), page(token=""), page(item(2), token=""),
                    page(item(3), token="200"))
    hub = hub_for(script, waits)
    cleanup.append(hub)
    with hub.subscribe(APP, Recorder()):
        assert script.drained.wait(WAIT)
    assert script.tokens[:5] == [None, "100", "100", "100", "200"]


def test_dedupe_by_id_keeps_late_and_equal_timestamp_lines(waits: list[float],
                                                           cleanup: list[LogStreams]) -> None:
    same = "2024-06-01T12:00:00Z"
    script = Script(
        page(item(1, ts=same), item(2, ts=same), token="1"),
        page(item(2, ts=same), item(3, ts=same), token="2"),  # overlaps the boundary
        page(item(4, ts="2024-06-01T11:59:00Z"), item(3, ts=same), token="3"),  # a late line
    )
    hub = hub_for(script, waits)
    cleanup.append(hub)
    rec = Recorder()
    with hub.subscribe(APP, rec):
        assert script.drained.wait(WAIT)
        assert rec.wait_for(4) == ["id-1", "id-2", "id-3", "id-4"]


def test_401_once_is_recovered_by_reauth(waits: list[float], cleanup: list[LogStreams],
                                         tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    chain = TokenChain([ManualLayer(store), EnvLayer({}), StoreLayer(store), FlyctlConfigLayer()])
    chain.set_manual(APP, "fo1_first")
    script = Script((401, {"error": "expired"}), page(item(1)))
    hub = LogStreams(http=httpx.MockTransport(script), base_url="https://api.fly.test",
                     tokens=chain, pause=waits.append)
    cleanup.append(hub)
    rec = Recorder()
    with hub.subscribe(APP, rec):
        assert rec.wait_for(1) == ["id-1"]
    assert not rec.stopped.is_set()


def test_401_twice_stops_with_an_unauthorized_event(waits: list[float],
                                                    cleanup: list[LogStreams]) -> None:
    script = Script(page(item(1)), (401, {"error": "revoked"}), (401, {"error": "revoked"}),
                    gate_after=1)
    hub = hub_for(script, waits)
    cleanup.append(hub)
    a, b = Recorder(), Recorder()
    sa, sb = hub.subscribe(APP, a), hub.subscribe(APP, b)
    script.gate.set()  # both are subscribed before the 401s
    for rec in (a, b):
        assert rec.stopped.wait(WAIT)
        stop = rec.events[-1]
        assert isinstance(stop, LogsStopped) and stop.reason == "unauthorized"
        assert isinstance(stop.error, Unauthorized)
        assert "unauthorized" in stop.message
    assert not sa.active and not sb.active and sa.wait(0)
    assert hub.running() == []
    assert len(script.requests) == 3  # one page, then a 401 and exactly one retry


def test_404_stops_with_a_clear_event(waits: list[float], cleanup: list[LogStreams]) -> None:
    script = Script((404, {"error": "Could not find App"}))
    hub = hub_for(script, waits)
    cleanup.append(hub)
    rec = Recorder()
    hub.subscribe(APP, rec)
    assert rec.stopped.wait(WAIT)
    stop = rec.events[-1]
    assert stop.reason == "not_found" and isinstance(stop.error, NotFound)
    assert "my-app" in str(stop.error)


def test_gives_up_after_n_consecutive_errors(waits: list[float],
                                             cleanup: list[LogStreams]) -> None:
    boom = (500, {"error": "boom"})
    script = Script(boom, boom, page(item(1)), boom, boom, boom)
    hub = hub_for(script, waits, max_errors=3)
    cleanup.append(hub)
    rec = Recorder()
    hub.subscribe(APP, rec)
    assert rec.stopped.wait(WAIT)
    stop = rec.events[-1]
    assert stop.reason == "errors" and isinstance(stop.error, ProviderError)
    assert rec.ids == ["id-1"]
    assert len(script.requests) == 6  # the success in the middle reset the count
    assert waits[:2] == [0.064, 0.128]  # errors back off too


def test_backfill_for_late_subscribers_from_a_bounded_ring(waits: list[float],
                                                           cleanup: list[LogStreams]) -> None:
    script = Script(page(*[item(i) for i in range(1, 9)]))
    hub = hub_for(script, waits, buffer_size=5)
    cleanup.append(hub)
    first = Recorder()
    with hub.subscribe(APP, first):
        first.wait_for(8)
        late, none = Recorder(), Recorder()
        with hub.subscribe(APP, late), hub.subscribe(APP, none, backfill=False):
            assert late.ids == ["id-4", "id-5", "id-6", "id-7", "id-8"]
            assert late.events[0].backfill is True
            assert none.ids == []


def test_region_and_instance_filters(waits: list[float], cleanup: list[LogStreams]) -> None:
    script = Script(page(item(1, region="iad", instance="a"), item(2, region="ord", instance="b"),
                         item(3, region="iad", instance="b")))
    hub = hub_for(script, waits)
    cleanup.append(hub)
    everything, iad, inst_b = Recorder(), Recorder(), Recorder()
    with hub.subscribe(APP, everything), hub.subscribe(APP, iad, region="iad"), \
            hub.subscribe(APP, inst_b, instance="b"):
        everything.wait_for(3)
        assert iad.wait_for(2) == ["id-1", "id-3"]
        assert inst_b.wait_for(2) == ["id-2", "id-3"]


def test_close_notifies_subscribers(waits: list[float]) -> None:
    hub = hub_for(Script(), waits)
    rec = Recorder()
    sub = hub.subscribe(APP, rec)
    hub.close()
    assert rec.stopped.is_set() and rec.events[-1].reason == "closed"
    assert rec.events[-1].error is None and not sub.active
    assert hub.running() == [] and not streamer_threads()


def test_no_token_fails_in_the_caller(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    chain = TokenChain([ManualLayer(store), EnvLayer({}), StoreLayer(store)])
    hub = LogStreams(http=httpx.MockTransport(Script()), base_url="https://x.test", tokens=chain)
    with pytest.raises(Unauthorized, match="FLY_API_TOKEN"):
        hub.subscribe(APP, Recorder())
    assert hub.running() == []


def test_bad_arguments(waits: list[float]) -> None:
    from atlas_nb import ValidationError

    hub = hub_for(Script(), waits)
    with pytest.raises(ValidationError, match="callable"):
        hub.subscribe(APP, "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="app must be"):
        hub.subscribe("", Recorder())
    with pytest.raises(ValidationError):
        LogStreams(max_errors=0)


def test_poll_telemetry(waits: list[float], cleanup: list[LogStreams],
                        events: list[Any]) -> None:
    script = Script(page(item(1), item(2)), (500, {"error": "x"}))
    hub = hub_for(script, waits)
    cleanup.append(hub)
    with hub.subscribe(APP, Recorder()):
        assert script.drained.wait(WAIT)
    polls = [d for e, d in events if e == "fly.logs.poll"]
    assert polls[0]["status"] == "ok" and polls[0]["new"] == 2 and polls[0]["entries"] == 2
    assert polls[1]["status"] == "provider"
    assert all("fo1_test" not in str(d) for _e, d in events)


# -- tail_logs -------------------------------------------------------------------------------
def test_tail_yields_entries_and_stops_at_max_entries(waits: list[float],
                                                      cleanup: list[LogStreams]) -> None:
    script = Script(page(item(1), item(2)), page(item(3)))
    hub = hub_for(script, waits)
    cleanup.append(hub)
    with hub.tail(APP, max_entries=3) as tail:
        assert [e.id for e in tail] == ["id-1", "id-2", "id-3"]
    assert hub.running() == []


def test_tail_timeout_ends_iteration(waits: list[float], cleanup: list[LogStreams]) -> None:
    hub = hub_for(Script(page(item(1))), waits)
    cleanup.append(hub)
    assert [e.id for e in hub.tail(APP, timeout_s=0.3)] == ["id-1"]
    assert hub.running() == []


def test_tail_raises_the_stop_error_after_the_queued_entries(waits: list[float],
                                                             cleanup: list[LogStreams]) -> None:
    hub = hub_for(Script(page(item(1)), (404, {"error": "gone"})), waits)
    cleanup.append(hub)
    got = []
    with pytest.raises(NotFound):
        for entry in hub.tail(APP):
            got.append(entry.id)
    assert got == ["id-1"]


def test_tail_queue_is_bounded(waits: list[float], cleanup: list[LogStreams]) -> None:
    script = Script(page(*[item(i) for i in range(1, 11)]), (404, {"error": "end"}))
    hub = hub_for(script, waits)
    cleanup.append(hub)
    tail = hub.tail(APP, maxsize=4)
    assert tail.subscription.wait(WAIT)  # the 404 ended the stream; nothing consumed yet
    got = []
    with pytest.raises(NotFound):
        for entry in tail:
            got.append(entry.id)
    assert got == ["id-7", "id-8", "id-9", "id-10"]
    assert tail.dropped == 6


def test_subscribe_polls_once_before_returning(waits: list[float],
                                               cleanup: list[LogStreams]) -> None:
    script = Script(page(item(1), token="7"), gate_after=1)  # later polls wait for the test
    hub = hub_for(script, waits)
    cleanup.append(hub)
    rec = Recorder()
    sub = hub.subscribe(APP, rec)
    assert len(script.requests) == 1 and rec.ids == ["id-1"]  # already, synchronously
    script.gate.set()
    sub.close()


def test_a_failed_first_poll_is_an_event_not_an_exception(waits: list[float]) -> None:
    hub = hub_for(Script((404, {"error": "Could not find App"})), waits)
    rec = Recorder()
    sub = hub.subscribe(APP, rec)  # returns: the stream simply ended, with a clear event
    assert rec.stopped.is_set() and rec.events[-1].reason == "not_found"
    assert not sub.active and hub.running() == [] and not streamer_threads()


def test_no_import_cycle_among_the_fly_modules() -> None:
    """Every import between atlas_nb.fly modules, TYPE_CHECKING ones included, is acyclic."""
    import ast

    import atlas_nb.fly

    root = Path(atlas_nb.fly.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(("atlas_nb.fly", *parts)).removesuffix(".__init__")
        modules[name] = path

    def imports(name: str, path: Path) -> set[str]:
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])]) \
                    if node.level else (node.module or "")
                candidates = [target, *(f"{target}.{a.name}" for a in node.names)]
                found |= {c for c in candidates if c in modules and c != name}
        return found

    graph = {name: imports(name, path) for name, path in modules.items()}
    # A package's __init__ re-exporting its own submodules is not a cycle worth flagging:
    # submodules never import their package's __init__ for anything but a re-export.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert "atlas_nb.fly.logs.streams" in graph  # the walk saw the packages


def test_a_log_source_is_the_same_as_its_keywords(waits: list[float],
                                                  cleanup: list[LogStreams]) -> None:
    from atlas_nb.fly import LogSource

    script = Script(page(item(1, region="iad", instance="a"), item(2, region="ord", instance="b")))
    hub = hub_for(script, waits)
    cleanup.append(hub)
    by_source, by_keyword = Recorder(), Recorder()
    source = LogSource(APP, region="iad", token="fo1_test")
    with hub.subscribe(source, by_source), hub.subscribe(APP, by_keyword, region="iad",
                                                         token="fo1_test"):
        assert by_source.wait_for(1) == by_keyword.wait_for(1) == ["id-1"]
        assert hub.running() == [APP]  # the same connection: one streamer
    assert "fo1_test" not in repr(source)
    assert LogSource.of(source, instance="a") == LogSource(APP, "iad", "a", token="fo1_test")
    with pytest.raises(TypeError, match="colour"):
        LogSource.of(APP, colour="red")
