"""RunPod REST v2 in the sandbox: every route, its errors, the lifecycle and the catalog.

Runs in-process (``sb.client()``) with contract validation on: each test that
only sends well-formed requests ends with ``sb.violations == []``, i.e. every
request and response matched the vendored ``rest-v2-openapi.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from atlas_nb.sandbox import sandbox_key
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.server import Sandbox

GPU = "NVIDIA GeForce RTX 4090"
AUTH = {"Authorization": f"Bearer {sandbox_key('runpod')}"}


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    sb = Sandbox(
        clouds=["runpod"],
        start_server=False,
        validate=True,
        provision_delay_s=0,
        start_delay_s=0,
        attach=False,
    )
    with sb:
        yield sb


@pytest.fixture
def sb(box: Sandbox) -> Iterator[Sandbox]:
    box.clear_violations()
    box.faults.clear()
    yield box
    box.faults.clear()


@pytest.fixture
def rest(sb: Sandbox) -> Iterator[httpx.Client]:
    with sb.client(base_url=f"{sb.url}/runpod/rest", headers=AUTH) as client:
        yield client


def create(rest: httpx.Client, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "atlas-test",
        "image": "ghcr.io/me/srv:1",
        "gpu": {"id": GPU, "count": 1},
    }
    body.update(overrides)
    r = rest.post("/v2/pods", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_create_get_list_delete_round_trip(sb: Sandbox, rest: httpx.Client) -> None:
    pod = create(
        rest, ports=["8000/http", "22/tcp"], env={"ATLAS_PRESHARED_KEY": "s3cret"}, name="rt"
    )
    assert pod["status"] == "RUNNING"  # delays are 0 in this fixture
    assert pod["env"] == {
        "ATLAS_PRESHARED_KEY": "s3cret"
    }  # the real API returns env; providers strip it
    assert pod["cost"] == 0.44 and pod["gpu"] == {"id": GPU, "count": 1}
    runtime_ports = {p["private"]: p for p in pod["runtime"]["ports"]}  # type: ignore[index]
    http = runtime_ports[8000]  # behind the proxy: a private 100.65.x.x address (RunPod docs)
    assert http["type"] == "http" and http["ip"].startswith("100.65.")
    assert isinstance(http["public"], int)
    assert runtime_ports[22]["type"] == "tcp" and isinstance(runtime_ports[22]["public"], int)
    assert pod["ssh"]["direct"]["port"] == runtime_ports[22]["public"]  # type: ignore[index]

    got = rest.get(f"/v2/pods/{pod['id']}")
    assert got.status_code == 200 and got.json()["id"] == pod["id"]
    listed = rest.get("/v2/pods").json()
    assert pod["id"] in [p["id"] for p in listed["pods"]]

    assert rest.delete(f"/v2/pods/{pod['id']}").status_code == 204
    gone = rest.get(f"/v2/pods/{pod['id']}")
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"
    assert gone.json() == {
        "title": "Not Found",
        "status": 404,
        "detail": f"pod {pod['id']} not found",
    }
    assert pod["id"] not in [p["id"] for p in rest.get("/v2/pods").json()["pods"]]
    assert rest.delete(f"/v2/pods/{pod['id']}").status_code == 404
    assert sb.runpod.pods[str(pod["id"])]["status"] == "TERMINATED"
    assert sb.runpod.pod_env(str(pod["id"])) == {"ATLAS_PRESHARED_KEY": "s3cret"}
    assert sb.violations == []


def test_actions_follow_the_status_table_and_409_otherwise(sb: Sandbox, rest: httpx.Client) -> None:
    pod = create(rest)
    path = f"/v2/pods/{pod['id']}/action"
    assert pod["actions"] == ["stop", "restart", "terminate"]
    bad = rest.post(path, json={"action": "start"})
    assert bad.status_code == 409 and bad.json()["status"] == 409
    assert "cannot start a pod that is RUNNING" in bad.json()["detail"]

    stopped = rest.post(path, json={"action": "stop"}).json()
    assert stopped["status"] == "EXITED" and stopped["cost"] == 0.0 and stopped["runtime"] is None
    assert stopped["actions"] == ["start", "terminate"]
    assert rest.post(path, json={"action": "stop"}).status_code == 409
    started = rest.post(path, json={"action": "start"}).json()
    assert started["status"] == "RUNNING" and started["cost"] == 0.44
    assert rest.post(path, json={"action": "restart"}).json()["status"] == "RUNNING"
    terminated = rest.post(path, json={"action": "terminate"})
    assert terminated.status_code == 204 and terminated.content == b""
    assert rest.post(path, json={"action": "start"}).status_code == 404
    assert sb.violations == []


def test_lifecycle_follows_an_injected_clock() -> None:
    clock = ManualClock()
    sb = Sandbox(
        clouds=["runpod"],
        start_server=False,
        validate=True,
        clock=clock,
        provision_delay_s=10,
        start_delay_s=5,
        attach=False,
    )
    with sb, sb.client(base_url=f"{sb.url}/runpod/rest", headers=AUTH) as rest:
        pod = create(rest, ports=["8888/http"])
        assert (pod["status"], pod["runtime"], pod["startedAt"]) == ("PROVISIONING", None, None)
        assert pod["actions"] == ["stop", "terminate"]
        clock.advance(10)
        assert rest.get(f"/v2/pods/{pod['id']}").json()["status"] == "STARTING"
        clock.advance(5)
        running = rest.get(f"/v2/pods/{pod['id']}").json()
        assert running["status"] == "RUNNING"
        (http,) = running["runtime"]["ports"]
        assert (http["private"], http["type"]) == (8888, "http")
        assert http["ip"].startswith("100.65.")  # private, behind the proxy
        clock.advance(42)
        again = rest.get(f"/v2/pods/{pod['id']}").json()
        assert again["runtime"]["uptime"] == 42 and again["startedAt"] == running["startedAt"]
        # stop while starting, then start again: STARTING (no second provisioning), then RUNNING
        rest.post(f"/v2/pods/{pod['id']}/action", json={"action": "stop"})
        assert (
            rest.post(f"/v2/pods/{pod['id']}/action", json={"action": "start"}).json()["status"]
            == "STARTING"
        )
        clock.advance(5)
        assert rest.get(f"/v2/pods/{pod['id']}").json()["status"] == "RUNNING"
        sb.runpod.fail_pod(str(pod["id"]))
        errored = rest.get(f"/v2/pods/{pod['id']}").json()
        assert errored["status"] == "ERROR" and errored["actions"] == ["start", "terminate"]
        assert sb.violations == []


def test_delays_can_be_changed_on_a_running_sandbox() -> None:
    clock = ManualClock()
    sb = Sandbox(
        clouds=["runpod"],
        start_server=False,
        clock=clock,
        provision_delay_s=0,
        start_delay_s=0,
        attach=False,
    )
    with sb, sb.client(base_url=f"{sb.url}/runpod/rest", headers=AUTH) as rest:
        sb.runpod.provision_delay_s = 3
        assert create(rest)["status"] == "PROVISIONING"
        clock.advance(3)
        assert [p["status"] for p in sb.runpod.live_pods()] == ["RUNNING"]


def test_missing_or_wrong_key_is_401_problem_json(sb: Sandbox) -> None:
    with sb.client(base_url=f"{sb.url}/runpod/rest") as anon:
        missing = anon.get("/v2/pods")
        wrong = anon.get("/v2/pods", headers={"Authorization": "Bearer nope"})
    for r, detail in [(missing, "missing bearer token"), (wrong, "invalid bearer token")]:
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json() == {"title": "Unauthorized", "status": 401, "detail": detail}
        assert "ratelimit" not in r.headers  # only authenticated answers carry the quota
    assert any("bearerAuth" in v for v in sb.violations)  # the missing header breaks the contract


def test_rate_limit_headers_on_every_authenticated_answer(sb: Sandbox, rest: httpx.Client) -> None:
    first = rest.get("/v2/pods")
    second = rest.get("/v2/pods/nope")
    for r in (first, second):
        assert (
            r.headers["ratelimit-policy"]
            == '"minute";q=1000;w=60, "hour";q=30000;w=3600, "day";q=500000;w=86400'
        )
        assert r.headers["ratelimit"].startswith('"minute";r=')

    def remaining(r: httpx.Response) -> int:
        return int(r.headers["ratelimit"].split(";")[1].removeprefix("r="))

    assert remaining(second) == remaining(first) - 1 or remaining(second) > remaining(
        first
    )  # new window
    assert sb.violations == []


def test_enforced_rate_limit_answers_429_with_retry_after() -> None:
    sb = Sandbox(
        clouds=["runpod"],
        start_server=False,
        validate=True,
        attach=False,
        clock=ManualClock(60_000.0),
        options={"runpod": {"enforce_rate_limits": True}},
    )
    from atlas_nb.sandbox.ratelimit import Window

    sb.runpod.limiter.windows = (Window("minute", 2, 60),)
    with sb, sb.client(base_url=f"{sb.url}/runpod/rest", headers=AUTH) as rest:
        codes = [rest.get("/v2/pods").status_code for _ in range(3)]
        limited = rest.get("/v2/pods")
    assert codes == [200, 200, 429]
    assert limited.headers["retry-after"] == "60"
    assert limited.json()["title"] == "Too Many Requests"
    assert sb.violations == []


def test_schema_violations_get_422_with_errors_and_are_recorded(
    sb: Sandbox, rest: httpx.Client
) -> None:
    target = create(rest)
    before = len(sb.runpod.pods)
    extra = rest.post("/v2/pods", json={"name": "x", "image": "i", "gpu": {"id": GPU}, "bogus": 1})
    assert extra.status_code == 422
    assert extra.headers["content-type"] == "application/problem+json"
    assert extra.json()["errors"] == [
        "$: Unevaluated properties are not allowed ('bogus' was unexpected)"
    ]
    wrong_type = rest.post(
        "/v2/pods", json={"name": "x", "image": "i", "gpu": {"id": GPU, "count": "2"}}
    )
    assert wrong_type.status_code == 422
    assert "$.gpu.count: '2' is not of type 'integer'" in wrong_type.json()["errors"]
    spot = rest.post(
        "/v2/pods", json={"name": "x", "image": "i", "gpu": {"id": GPU}, "interruptible": True}
    )
    assert spot.status_code == 422  # v2 has no spot field: spot pods go through GraphQL
    bad_action = rest.post(f"/v2/pods/{target['id']}/action", json={"action": "reset"})
    assert bad_action.status_code == 422
    assert len(sb.runpod.pods) == before  # refused bodies create nothing
    assert sb.runpod.pods[str(target["id"])]["status"] == "RUNNING"
    text = "\n".join(sb.violations)
    assert "'bogus' was unexpected" in text
    assert "$.gpu.count: '2' is not of type 'integer'" in text
    assert "'interruptible' was unexpected" in text
    assert "'reset' is not one of" in text


def test_refused_bodies_get_400(sb: Sandbox, rest: httpx.Client) -> None:
    cases = [
        ({"name": "x", "image": "i"}, "exactly one of gpu or cpu"),
        (
            {"name": "x", "image": "i", "gpu": {"id": GPU}, "cpu": {"id": "cpu3c", "vcpuCount": 2}},
            "exactly one",
        ),
        ({"name": "x", "image": "i", "gpu": {"id": "NVIDIA Imaginary 9000"}}, "does not exist"),
        (
            {"name": "x", "image": "i", "gpu": {"id": GPU, "count": 8}, "cloud": "COMMUNITY"},
            "no capacity",
        ),
        (
            {"name": "x", "image": "i", "gpu": {"id": GPU}, "dataCenterIds": ["AP-JP-1"]},
            "no capacity",
        ),
        (
            {"name": "x", "image": "i", "gpu": {"id": GPU, "allowedCudaVersions": ["11.8"]}},
            "no capacity",
        ),
    ]
    for body, detail in cases:
        r = rest.post("/v2/pods", json=body)
        assert r.status_code == 400, body
        assert detail in r.json()["detail"]
    not_json = rest.post("/v2/pods", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["detail"]


def test_placement_honours_data_centers_and_stock(sb: Sandbox, rest: httpx.Client) -> None:
    pod = create(rest, dataCenterIds=["AP-JP-1", "EU-RO-1"], cloud="COMMUNITY")
    assert pod["dataCenterId"] == "EU-RO-1" and pod["cloud"] == "COMMUNITY" and pod["cost"] == 0.31
    two = create(rest, gpu={"id": GPU, "count": 2})
    assert two["cost"] == 0.88
    sb.runpod.set_availability("NVIDIA L4", "NONE")
    r = rest.post("/v2/pods", json={"name": "x", "image": "i", "gpu": {"id": "NVIDIA L4"}})
    assert r.status_code == 400 and "no capacity" in r.json()["detail"]
    sb.runpod.set_availability("NVIDIA L4", "HIGH")
    assert create(rest, gpu={"id": "NVIDIA L4"})["dataCenterId"] == "US-KS-2"
    assert sb.violations == []


def test_cpu_pods(sb: Sandbox, rest: httpx.Client) -> None:
    pod = rest.post(
        "/v2/pods", json={"name": "cpu", "image": "i", "cpu": {"id": "cpu3c", "vcpuCount": 4}}
    ).json()
    assert pod["cpu"] == {"id": "cpu3c", "vcpuCount": 4, "memory": 10} and "gpu" not in pod
    assert pod["cost"] == 0.16 and pod["cudaVersion"] is None
    odd = rest.post(
        "/v2/pods", json={"name": "cpu", "image": "i", "cpu": {"id": "cpu3c", "vcpuCount": 6}}
    )
    assert odd.status_code == 400
    assert sb.violations == []


def test_patch_updates_fields(sb: Sandbox, rest: httpx.Client) -> None:
    pod = create(rest)
    r = rest.patch(f"/v2/pods/{pod['id']}", json={"name": "renamed", "locked": True})
    assert r.status_code == 200 and r.json()["name"] == "renamed" and r.json()["locked"] is True
    locked = rest.post(f"/v2/pods/{pod['id']}/action", json={"action": "stop"})
    assert locked.status_code == 409 and "locked" in locked.json()["detail"]
    assert rest.patch(f"/v2/pods/{pod['id']}", json={"nope": 1}).status_code == 422
    assert rest.patch("/v2/pods/missing", json={"name": "n"}).status_code == 404
    assert [v for v in sb.violations if "nope" not in v] == []


def test_logs_stream_backfill_as_server_sent_events(sb: Sandbox, rest: httpx.Client) -> None:
    pod = create(rest)
    r = rest.get(f"/v2/pods/{pod['id']}/logs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [block for block in r.text.split("\n\n") if block]
    payloads = [json.loads(block.split("data: ", 1)[1]) for block in events]
    assert [p["line"] for p in payloads][:1] == ["Pulling image ghcr.io/me/srv:1"]
    assert {p["source"] for p in payloads} == {"system", "container"}
    only = rest.get(f"/v2/pods/{pod['id']}/logs", params={"source": "container", "tail": 1}).text
    assert only.count("data: ") == 1 and '"source": "container"' in only
    assert rest.get(f"/v2/pods/{pod['id']}/logs", params={"tail": 9999}).status_code == 422
    assert rest.get("/v2/pods/missing/logs").status_code == 404
    assert [v for v in sb.violations if "9999" not in v] == []


def test_catalog_lists_real_prices(sb: Sandbox, rest: httpx.Client) -> None:
    gpus = {g["id"]: g for g in rest.get("/v2/catalog/gpus").json()["gpus"]}
    assert len(gpus) > 40
    assert gpus[GPU] == {  # the spec's own example
        "id": GPU,
        "name": "RTX 4090",
        "pool": "ADA_24",
        "manufacturer": "NVIDIA",
        "memory": 24,
        "secure": True,
        "community": True,
        "price": {"secure": 0.44, "community": 0.31, "serverless": 1.1},
        "maxCount": {"secure": 8, "community": 4},
    }
    assert gpus["NVIDIA A100 80GB PCIe"]["price"]["secure"] == 1.39  # SkyPilot v8 row
    assert gpus["AMD Instinct MI300X OAM"]["manufacturer"] == "AMD"
    one = rest.get(f"/v2/catalog/gpus/{GPU}")
    assert one.status_code == 200 and one.json() == gpus[GPU]
    assert rest.get("/v2/catalog/gpus/NVIDIA Nope").status_code == 404
    cpus = rest.get("/v2/catalog/cpus").json()["cpus"]
    assert cpus[0]["price"] == {"securePerVcpu": 0.04, "serverlessPerVcpu": 0.03}
    assert rest.get("/v2/catalog/cpus/cpu3c").json()["id"] == "cpu3c"
    assert sb.violations == []


def test_catalog_availability_filters(sb: Sandbox, rest: httpx.Client) -> None:
    params = {"include": "AVAILABILITY", "product": "POD"}
    row = rest.get(f"/v2/catalog/gpus/{GPU}", params=params).json()
    assert row["availability"] == "HIGH" and row["dataCenters"][0]["id"] == "US-KS-2"
    assert [c["version"] for c in row["cudaVersions"]] == ["12.4", "12.6", "12.8"]
    too_many = rest.get(f"/v2/catalog/gpus/{GPU}", params={**params, "count": 16}).json()
    assert too_many["availability"] == "NONE" and "dataCenters" not in too_many
    community = rest.get(
        f"/v2/catalog/gpus/{GPU}", params={**params, "cloud": "COMMUNITY", "count": 8}
    )
    assert community.json()["availability"] == "NONE"
    france = rest.get("/v2/catalog/gpus", params={**params, "countryCodes": "FR"}).json()["gpus"]
    assert [g["id"] for g in france] == ["NVIDIA L4"]
    assert france[0]["dataCenters"] == [
        {"id": "EU-FR-1", "name": "Europe France 1", "availability": "HIGH"}
    ]
    cuda = rest.get(f"/v2/catalog/gpus/{GPU}", params={**params, "cudaVersions": "12.8"}).json()
    assert cuda["cudaVersions"] == [{"version": "12.8", "available": True}]
    assert sb.violations == []
    assert rest.get("/v2/catalog/gpus", params={"include": "AVAILABILITY"}).status_code == 400
    assert rest.get("/v2/catalog/gpus", params={"count": 2}).status_code == 400
    assert (
        rest.get(
            "/v2/catalog/gpus", params={**params, "cudaVersions": "12.8", "minCudaVersion": "12"}
        ).status_code
        == 400
    )
    assert (
        rest.get("/v2/catalog/gpus", params={**params, "countryCodes": "france"}).status_code == 422
    )


def test_unknown_route_and_method_are_problem_json(sb: Sandbox, rest: httpx.Client) -> None:
    missing = rest.post("/v2/pods/abc/stop")
    assert missing.status_code == 404 and missing.json()["title"] == "Not Found"
    wrong = rest.put("/v2/pods")
    assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]
    text = "\n".join(sb.violations)
    assert "POST /v2/pods/abc/stop is not an operation" in text
    assert "PUT is not allowed on /v2/pods" in text


def test_list_query_filters_are_not_in_the_spec(sb: Sandbox, rest: httpx.Client) -> None:
    create(rest, name="only-me")
    create(rest, name="someone-else")
    r = rest.get("/v2/pods", params={"name": "only-me"})
    assert r.status_code == 200
    assert {p["name"] for p in r.json()["pods"]} >= {
        "only-me",
        "someone-else",
    }  # ignored, like RunPod
    assert any("query parameter 'name' is not declared" in v for v in sb.violations)
