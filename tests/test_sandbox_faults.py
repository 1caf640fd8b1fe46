"""Fault injection: determinism, latency, errors, 429, dropped and lost responses, statistics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from atlas_nb.sandbox import sandbox_key
from atlas_nb.sandbox.faults import FaultRule, Faults, Target
from atlas_nb.sandbox.server import Sandbox

AUTH = {"Authorization": f"Bearer {sandbox_key('runpod')}"}
POD = {"name": "faulty", "image": "i", "gpu": {"id": "NVIDIA L4"}}


@pytest.fixture(scope="module")
def served() -> Iterator[Sandbox]:
    with Sandbox(
        clouds=["runpod"], validate=True, provision_delay_s=0, start_delay_s=0, attach=False
    ) as sb:
        yield sb


@pytest.fixture
def sb(served: Sandbox) -> Iterator[Sandbox]:
    served.faults.clear()
    served.clear_violations()
    served.reset_stats()
    yield served
    served.faults.clear()


@pytest.fixture(params=["socket", "in-process"])
def rest(request: pytest.FixtureRequest, sb: Sandbox) -> Iterator[httpx.Client]:
    base = f"{sb.url}/runpod/rest"
    if request.param == "socket":
        client = httpx.Client(base_url=base, headers=AUTH)
    else:
        client = sb.client(base_url=base, headers=AUTH)
    with client:
        yield client


def _names(sb: Sandbox, name: str) -> int:
    return sum(1 for p in sb.runpod.live_pods() if p["name"] == name)


def test_lost_response_applies_the_create_but_the_client_gets_a_transport_error(
    sb: Sandbox, rest: httpx.Client
) -> None:
    name = f"lost-{id(rest)}"
    rule = sb.faults("POST /v2/pods", lost_response_rate=1.0, count=1)
    with pytest.raises(httpx.TransportError):
        rest.post("/v2/pods", json={**POD, "name": name})
    assert _names(sb, name) == 1  # the pod exists: only the answer was lost
    assert rule.injected == {"lost": 1}
    assert rest.post("/v2/pods", json={**POD, "name": name}).status_code == 201  # count=1: over
    assert sb.stats()["faults"] == {"lost": 1}
    assert sb.violations == []  # the lost answer was still a valid one


def test_drop_never_reaches_the_cloud(sb: Sandbox, rest: httpx.Client) -> None:
    name = f"dropped-{id(rest)}"
    sb.faults("runpod:POST /v2/pods", drop_rate=1.0)
    with pytest.raises(httpx.TransportError):
        rest.post("/v2/pods", json={**POD, "name": name})
    assert _names(sb, name) == 0
    assert rest.get("/v2/pods").status_code == 200  # other routes are untouched


def _wait_for(predicate: Any, what: str) -> None:
    """Poll until ``predicate()`` (a generous deadline: this waits for work, times nothing)."""
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_late_commit_drops_the_client_then_applies_the_create(
    sb: Sandbox, rest: httpx.Client
) -> None:
    name = f"late-{id(rest)}"
    rule = sb.faults("runpod:POST /v2/pods", sequence=["late:200"])
    with pytest.raises(httpx.TransportError):
        rest.post("/v2/pods", json={**POD, "name": name})
    assert rule.injected == {"late:200": 1}
    _wait_for(lambda: _names(sb, name) == 1, "the late commit never landed")
    assert sb.stats()["faults"] == {"late:200": 1}
    assert sb.violations == []  # the replayed request was checked like any other


def test_late_commit_rate_and_its_json_round_trip(sb: Sandbox, rest: httpx.Client) -> None:
    name = f"late-rate-{id(rest)}"
    rule = sb.faults("runpod:POST /v2/pods", late_commit_rate=1.0, late_commit_ms=0, count=1)
    with pytest.raises(httpx.TransportError):
        rest.post("/v2/pods", json={**POD, "name": name})
    _wait_for(lambda: _names(sb, name) == 1, "the late commit never landed")
    assert rule.injected == {"late:0": 1}
    params = json.loads(json.dumps(rule.to_dict()))
    assert (params["late_commit_rate"], params["late_commit_ms"]) == (1.0, 0)
    assert Faults()(**params).to_dict() == rule.to_dict()
    scripted = Faults()("*", sequence=["late:1500", "pass"])
    assert scripted.to_dict()["sequence"] == ["late:1500", None]
    assert Faults()(**json.loads(json.dumps(scripted.to_dict()))).to_dict() == scripted.to_dict()


@pytest.mark.parametrize("bad", [{"sequence": ["late:-1"]}, {"sequence": ["late:soon"]},
                                 {"sequence": ["late:"]}, {"late_commit_ms": -5},
                                 {"late_commit_rate": 0.6, "drop_rate": 0.6}])
def test_bad_late_commit_options_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Faults()("*", **bad)


def test_late_commit_over_the_control_api(sb: Sandbox) -> None:
    with sb.control() as ctl, sb.client(base_url=f"{sb.url}/runpod/rest", headers=AUTH) as rest:
        remote = ctl.faults("runpod/rest:POST /v2/pods", sequence=["late:50"])
        assert remote.data["sequence"] == ["late:50"]
        with pytest.raises(httpx.TransportError):
            rest.post("/v2/pods", json={**POD, "name": "late-remote"})
    _wait_for(lambda: _names(sb, "late-remote") == 1, "the late commit never landed")


def test_429_carries_retry_after_and_problem_json(sb: Sandbox, rest: httpx.Client) -> None:
    sb.faults("GET /v2/pods", rate_limit_429=1.0, retry_after_s=7)
    r = rest.get("/v2/pods")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "7"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["title"] == "Too Many Requests"
    assert sb.violations == []


def test_a_429_can_leave_retry_after_out(sb: Sandbox, rest: httpx.Client) -> None:
    rule = sb.faults("GET /v2/pods", sequence=[429], retry_after_s=None)
    r = rest.get("/v2/pods")
    assert r.status_code == 429 and "retry-after" not in r.headers
    assert r.json()["title"] == "Too Many Requests"
    rate = sb.faults("GET /v2/catalog/gpus", rate_limit_429=1.0, retry_after_s=None)
    assert "retry-after" not in rest.get("/v2/catalog/gpus").headers
    for made in (rule, rate):  # plain data: a JSON round trip rebuilds the same rule
        params = json.loads(json.dumps(made.to_dict()))
        assert params["retry_after_s"] is None
        assert Faults()(**params).to_dict() == made.to_dict()
    with pytest.raises(ValueError, match=">= 0"):
        Faults()("*", retry_after_s=-1)


def test_error_statuses_use_each_apis_error_shape(sb: Sandbox) -> None:
    sb.faults("*", error_rate={503: 1.0})
    with sb.client(headers=AUTH) as http:
        rest = http.get("/runpod/rest/v2/pods")
        gql = http.post("/runpod/graphql/graphql", json={"query": "{ myself { id } }"})
        run = http.post("/runpod/serverless/v2/echo/run", json={"input": {}})
    assert rest.status_code == gql.status_code == run.status_code == 503
    assert rest.json()["status"] == 503
    assert gql.json() == {"errors": [{"message": "injected fault (sandbox fault injection)"}]}
    assert run.json() == {"error": "injected fault (sandbox fault injection)"}


def test_same_seed_same_sequence(sb: Sandbox) -> None:
    def sequence(seed: int) -> list[int]:
        sb.faults.clear()
        sb.faults("GET /v2/catalog/gpus", error_rate={500: 0.3, 503: 0.2}, seed=seed)
        with sb.client(base_url=f"{sb.url}/runpod/rest", headers=AUTH) as http:
            return [http.get("/v2/catalog/gpus").status_code for _ in range(30)]

    first, again, other = sequence(7), sequence(7), sequence(8)
    assert first == again
    assert first != other
    assert set(first) == {200, 500, 503}


def test_rule_draws_are_deterministic_without_a_server() -> None:
    target = Target("runpod", "rest", "POST", "/v2/pods")
    outcomes = []
    for _ in range(2):
        faults = Faults(seed=3)
        rule = faults("POST /v2/pods", drop_rate=0.2, lost_response_rate=0.2, rate_limit_429=0.2)
        outcomes.append([faults.decide(target).outcome for _ in range(50)])
        assert sum(rule.injected.values()) == sum(o is not None for o in outcomes[-1])
    assert outcomes[0] == outcomes[1]
    assert {"drop", "lost", 429, None} == set(outcomes[0])


@pytest.mark.parametrize(
    ("route", "hits"),
    [
        ("POST /v2/pods", {"rest POST /v2/pods"}),
        ("/v2/pods", {"rest POST /v2/pods", "rest GET /v2/pods"}),
        ("GET /v2/pods/*", {"rest GET /v2/pods/abc"}),
        (
            "runpod:*",
            {
                "rest POST /v2/pods",
                "rest GET /v2/pods",
                "rest GET /v2/pods/abc",
                "serverless POST /v2/echo/run",
            },
        ),
        ("runpod/serverless:POST /v2/*/run", {"serverless POST /v2/echo/run"}),
        ("lambda_labs:*", set()),
        (
            "*",
            {
                "rest POST /v2/pods",
                "rest GET /v2/pods",
                "rest GET /v2/pods/abc",
                "serverless POST /v2/echo/run",
            },
        ),
    ],
)
def test_route_patterns(route: str, hits: set[str]) -> None:
    rule = FaultRule(Faults(), route)
    targets = {
        "rest POST /v2/pods": Target("runpod", "rest", "POST", "/v2/pods"),
        "rest GET /v2/pods": Target("runpod", "rest", "GET", "/v2/pods"),
        "rest GET /v2/pods/abc": Target("runpod", "rest", "GET", "/v2/pods/abc"),
        "serverless POST /v2/echo/run": Target("runpod", "serverless", "POST", "/v2/echo/run"),
    }
    assert {name for name, t in targets.items() if rule.matches(t)} == hits


def test_bad_rule_options_are_refused() -> None:
    faults = Faults()
    with pytest.raises(ValueError, match="add up"):
        faults("*", drop_rate=0.6, lost_response_rate=0.6)
    with pytest.raises(ValueError, match="statuses"):
        faults("*", error_rate={200: 0.1})
    with pytest.raises(ValueError, match=">= 0"):
        faults("*", latency_ms=-1)
    assert faults.rules == []


def test_latency_delays_one_route_without_blocking_others(sb: Sandbox) -> None:
    sb.faults("GET /v2/catalog/gpus", latency_ms=400)
    slow_done = threading.Event()
    with httpx.Client(base_url=f"{sb.url}/runpod/rest", headers=AUTH) as http:

        def slow() -> float:
            started = time.perf_counter()
            http.get("/v2/catalog/gpus")
            slow_done.set()
            return time.perf_counter() - started

        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(slow)
            while sb.stats()["in_flight"] == 0:
                time.sleep(0.005)
            with httpx.Client(base_url=f"{sb.url}/runpod/rest", headers=AUTH) as other:
                assert other.get("/v2/pods").status_code == 200
            assert not slow_done.is_set()  # the fast request finished while the slow one waited
            assert future.result() >= 0.4


def test_stats_count_routes_and_peak_concurrency(sb: Sandbox) -> None:
    gate = threading.Event()
    seen: list[str] = []

    def blocking(job: dict[str, Any]) -> Any:
        seen.append(threading.current_thread().name)
        gate.wait(10)
        return "done"

    sb.runpod.add_endpoint("gate", blocking, workers=4)
    url = f"{sb.url}/runpod/serverless/v2/gate/runsync"

    def call() -> int:
        with httpx.Client(headers=AUTH) as own:  # one connection per caller
            return own.post(url, json={"input": {}}).status_code

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(call) for _ in range(4)]
        deadline = time.monotonic() + 10
        while sb.stats()["in_flight"] < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        gate.set()
        assert [f.result() for f in futures] == [200] * 4
    # A request is counted once the server has finished with it, which may be just after
    # its client has read the answer: wait for the last one to be counted.
    deadline = time.monotonic() + 10
    while sb.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.005)
    stats = sb.stats()
    assert stats["max_concurrent_requests"] == 4
    assert stats["max_concurrent_connections"] >= 4
    assert stats["routes"] == {"runpod/serverless POST /v2/{endpoint}/runsync": 4}
    assert stats["statuses"] == {200: 4}
    assert all(name.startswith("atlas-sandbox-runpod-gate-") for name in seen)
