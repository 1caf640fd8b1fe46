"""The RunPod provider against an in-memory RunPod (``httpx.MockTransport``) shaped like the spec.

The fake validates every create body and every pod it returns against RunPod's REST v2
OpenAPI document, so a drift in either direction fails here.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

import atlas_nb as atlas
from atlas_nb import sandbox, telemetry
from atlas_nb.facade import spawn_many
from atlas_nb.providers import resolve
from atlas_nb.providers.runpod import CREATE_ATTEMPTS, RunPod, wire

KEY = "rp-test-key-0123456789"
BASE = "http://runpod.test"
_SPEC_PATHS = [  # the copy vendored with the sandbox, else the shared one
    Path(atlas.__file__).parent / "sandbox" / "specs" / "runpod" / "rest-v2-openapi.json",
    Path("/work/shared/specs/runpod/rest-v2-openapi.json"),
]

Fault = Callable[[httpx.Request], httpx.Response | None] | None


def _load_spec() -> dict[str, Any] | None:
    for path in _SPEC_PATHS:
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    return None


def _problem(status: int, detail: str, title: str = "Error") -> httpx.Response:
    return httpx.Response(status, json={"title": title, "status": status, "detail": detail},
                          headers={"content-type": "application/problem+json"})


class FakeRunPod:
    """REST v2 pods + catalog, GraphQL spot pods/prices and the serverless runtime, in memory."""

    def __init__(self) -> None:
        spec = _load_spec()
        if spec is None:
            pytest.skip("RunPod REST v2 OpenAPI document not found")
        self._create_schema = jsonschema.Draft202012Validator(
            {**spec, "$ref": "#/components/schemas/CreatePodRequest"})
        self._pod_schema = jsonschema.Draft202012Validator(
            {**spec, "$ref": "#/components/schemas/Pod"})
        self.pods: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.faults: dict[tuple[str, str], list[Fault]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.status_script: list[str] = ["COMPLETED"]
        self.runsync_status = "COMPLETED"
        self.stream_script: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    # -- plumbing ------------------------------------------------------------------------
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def provider(self, sleeps: list[float] | None = None,
                 sleep: Callable[[float], None] | None = None) -> RunPod:
        """A RunPod on this fake; sleeps are recorded (not slept) unless ``sleep`` is given."""
        if sleep is None:
            sleep = sleeps.append if sleeps is not None else (lambda s: None)
        return RunPod(api_key=KEY, base_url=BASE, http=self.transport(), sleep=sleep)

    def fault(self, method: str, path: str, *fns: Fault) -> None:
        """Answer the next requests to ``method path`` with ``fns`` (``None``: serve normally)."""
        self.faults.setdefault((method, path), []).extend(fns)

    def sent(self, method: str, pattern: str) -> list[httpx.Request]:
        return [r for r in self.requests
                if r.method == method and re.fullmatch(pattern, r.url.path)]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert KEY not in str(request.url), "the API key must never be in a URL"
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return _problem(401, "invalid api key", "Unauthorized")
        queue = self.faults.get((request.method, request.url.path))
        if queue:
            fault = queue.pop(0)
            answer = fault(request) if fault is not None else None
            if answer is not None:
                return answer
        return self.route(request)

    def route(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        body = json.loads(request.content) if request.content else None
        if path == "/graphql":
            return self.graphql(body)
        if path == "/v2/catalog/gpus":
            return httpx.Response(200, json=CATALOG)
        if path == "/v2/pods":
            if method == "POST":
                return self.create(body)
            return httpx.Response(200, json={"pods": [self.checked(p) for p in self.pods.values()]})
        m = re.fullmatch(r"/v2/pods/([^/]+)(/action)?", path)
        if m:
            return self.pod_op(method, m.group(1), body if m.group(2) else None)
        m = re.fullmatch(r"/v2/([^/]+)/(run|runsync|status|cancel|stream)(?:/([^/]+))?", path)
        if m:
            return self.serverless(m.group(1), m.group(2), m.group(3), body)
        return _problem(404, f"no route {method} {path}")

    # -- pods ----------------------------------------------------------------------------
    def checked(self, pod: dict[str, Any]) -> dict[str, Any]:
        errors = [e.message for e in self._pod_schema.iter_errors(pod)]
        assert not errors, f"the fake serves an invalid Pod: {errors}"
        return pod

    def create(self, body: Any) -> httpx.Response:
        errors = [e.message for e in self._create_schema.iter_errors(body)]
        if errors:
            return httpx.Response(422, json={"title": "Unprocessable Entity", "status": 422,
                                             "detail": "invalid body", "errors": errors})
        pod = self.add_pod(name=body["name"], image=body.get("image", "tpl-image"),
                           ports=body.get("ports", []), env=body.get("env", {}),
                           gpu=body.get("gpu"), cloud=body.get("cloud", "SECURE"))
        return httpx.Response(201, json=self.checked(pod))

    def add_pod(self, *, name: str, image: str, ports: list[str], env: dict[str, str],
                gpu: dict[str, Any] | None, cloud: str = "SECURE",
                status: str = "PROVISIONING") -> dict[str, Any]:
        pid = f"pod{next(self._ids):04d}"
        pod: dict[str, Any] = {
            "id": pid, "name": name, "image": image, "args": "", "disk": 20, "ports": ports,
            "env": env, "registry": None, "status": status, "actions": ["stop", "terminate"],
            "mounts": {}, "cloud": cloud, "dataCenterId": "US-TX-3", "cudaVersion": "12.8",
            "ssh": {"proxy": None, "direct": None}, "template": None, "cost": 0.44,
            "locked": False, "runtime": None, "createdAt": "2026-06-01T12:00:00Z",
            "startedAt": None, "globalNetworking": {"enabled": False},
        }
        if gpu:
            pod["gpu"] = {"id": gpu["id"], "count": gpu.get("count", 1)}
        self.pods[pid] = pod
        if status == "RUNNING":
            self.run(pid)
        return pod

    def run(self, pid: str) -> None:
        pod = self.pods[pid]
        pod["status"] = "RUNNING"
        pod["runtime"] = {"uptime": 1, "ports": [
            {"private": int(s.split("/")[0]), "public": 40000 + int(s.split("/")[0]),
             "type": s.split("/")[1], "ip": "203.0.113.9"} for s in pod["ports"]]}

    def pod_op(self, method: str, pid: str, body: Any) -> httpx.Response:
        pod = self.pods.get(pid)
        if pod is None or (pod["status"] == "TERMINATED" and method == "DELETE"):
            return _problem(404, "pod not found", "Not Found")
        if method == "GET":
            return httpx.Response(200, json=self.checked(pod))
        if method == "DELETE":
            pod.update(status="TERMINATED", runtime=None, cost=0.0)
            return httpx.Response(204)
        action = body["action"]
        moves = {"stop": ({"RUNNING", "STARTING", "PROVISIONING"}, "EXITED"),
                 "start": ({"EXITED"}, "RUNNING")}
        allowed, target = moves[action]
        if pod["status"] not in allowed:
            return _problem(409, "Action not valid for current pod status", "Conflict")
        if target == "RUNNING":
            self.run(pid)
        else:
            pod.update(status=target, runtime=None)
        return httpx.Response(200, json=self.checked(pod))

    # -- graphql -------------------------------------------------------------------------
    def graphql(self, body: dict[str, Any]) -> httpx.Response:
        query = body["query"]
        if "podRentInterruptable" in query:
            data = body["variables"]["input"]
            env = {e["key"]: e["value"] for e in data["env"]}
            pod = self.add_pod(name=data["name"], image=data.get("imageName", ""),
                               ports=[p for p in data["ports"].split(",") if p], env=env,
                               gpu={"id": data["gpuTypeId"], "count": data["gpuCount"]})
            pod["spotBid"] = data["bidPerGpu"]
            return httpx.Response(200, json={"data": {"podRentInterruptable": {"id": pod["id"]}}})
        if "gpuTypes" in query:
            return httpx.Response(200, json={"data": {"gpuTypes": GQL_GPUS}})
        return httpx.Response(200, json={"errors": [{"message": "unknown query"}]})

    # -- serverless ----------------------------------------------------------------------
    def serverless(self, ep: str, op: str, job_id: str | None, body: Any) -> httpx.Response:
        if op in ("run", "runsync"):
            jid = f"job-{next(self._ids)}"
            status = self.runsync_status if op == "runsync" else "IN_QUEUE"
            self.jobs[jid] = {"id": jid, "ep": ep, "input": body["input"], "status": status}
            answer = {"id": jid, "status": status}
            if status == "COMPLETED":
                answer |= {"output": {"echo": body["input"]}, "delayTime": 3, "executionTime": 9}
            return httpx.Response(200, json=answer)
        job = self.jobs.get(job_id or "")
        if job is None or job["ep"] != ep:
            return httpx.Response(404, json={"error": "job not found"})
        if op == "cancel":
            job["status"] = "CANCELLED"
            return httpx.Response(200, json={"id": job["id"], "status": "CANCELLED"})
        if op == "status":
            if job["status"] != "CANCELLED" and self.status_script:
                job["status"] = self.status_script.pop(0)
            answer = {"id": job["id"], "status": job["status"], "delayTime": 3}
            if job["status"] == "COMPLETED":
                answer["output"] = {"echo": job["input"]}
            if job["status"] == "FAILED":
                answer["error"] = "CUDA out of memory"
            return httpx.Response(200, json=answer)
        step = self.stream_script.pop(0) if self.stream_script else {"status": "COMPLETED",
                                                                     "stream": []}
        return httpx.Response(200, json=step)


CATALOG = {"gpus": [
    {"id": "NVIDIA GeForce RTX 4090", "name": "RTX 4090", "pool": "ADA_24",
     "manufacturer": "NVIDIA", "memory": 24, "secure": True, "community": True,
     "price": {"secure": 0.69, "community": 0.34}, "maxCount": {"secure": 8, "community": 4},
     "availability": "HIGH", "dataCenters": [{"id": "US-TX-3", "name": "US Texas 3",
                                                 "availability": "HIGH"}]},
    {"id": "NVIDIA H100 80GB HBM3", "name": "H100 SXM", "pool": "HOPPER_141",
     "manufacturer": "NVIDIA", "memory": 80, "secure": True, "community": False,
     "price": {"secure": 2.69, "community": 0}, "maxCount": {"secure": 8, "community": 0}},
]}
GQL_GPUS = [
    {"id": "NVIDIA GeForce RTX 4090", "displayName": "RTX 4090", "memoryInGb": 24,
     "secureSpotPrice": 0.35, "communitySpotPrice": 0.2,
     "lowestPrice": {"minimumBidPrice": 0.2, "uninterruptablePrice": 0.34, "stockStatus": "High"}},
    {"id": "NVIDIA H100 80GB HBM3", "displayName": "H100 SXM", "memoryInGb": 80,
     "secureSpotPrice": 1.75, "communitySpotPrice": None,
     "lowestPrice": {"minimumBidPrice": 1.5, "uninterruptablePrice": 2.69, "stockStatus": "Low"}},
]


@pytest.fixture
def fake() -> FakeRunPod:
    return FakeRunPod()


@pytest.fixture
def rp(fake: FakeRunPod, sleeps: list[float]) -> RunPod:
    return fake.provider(sleeps)


def _lost(fake: FakeRunPod) -> Fault:
    """The create lands, then the connection drops before the answer arrives."""
    def fault(request: httpx.Request) -> httpx.Response:
        fake.route(request)
        raise httpx.RemoteProtocolError("server disconnected without sending a response")
    return fault


def _created_then(status: int, fake: FakeRunPod) -> Fault:
    def fault(request: httpx.Request) -> httpx.Response:
        fake.route(request)
        return _problem(status, "upstream hiccup")
    return fault


def _refused(status: int, **headers: str) -> Fault:
    return lambda request: httpx.Response(status, json={"title": "x", "status": status,
                                                        "detail": "refused"}, headers=headers)


# -- capabilities, keys -----------------------------------------------------------------------
def test_capabilities_are_what_the_code_backs(rp: RunPod) -> None:
    assert atlas.capabilities(rp) == {"spot", "serverless", "network_volumes", "http_proxy",
                                      "raw_tcp", "stop_start", "webhooks"}
    assert "symmetric_ports" not in rp.capabilities() and "logs" not in rp.capabilities()


def test_key_only_in_the_authorization_header(fake: FakeRunPod, rp: RunPod) -> None:
    events: list[dict[str, Any]] = []
    telemetry.attach("rp-test", "*", lambda ev, data: events.append(dict(data)))
    try:
        c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", image="i:1", spot=True)
        atlas.list_gpu_types(provider=rp)
        atlas.get_compute(c.id, provider=rp)
    finally:
        telemetry.detach("rp-test")
    assert {r.url.path for r in fake.requests} >= {"/graphql", "/v2/pods/pod0001",
                                                   "/v2/catalog/gpus"}
    for r in fake.requests:
        assert r.headers["authorization"] == f"Bearer {KEY}"
        assert KEY not in str(r.url) and "api_key" not in str(r.url)
    assert events and KEY not in json.dumps(events, default=str)
    assert KEY not in repr(rp)


def test_wrong_key_is_unauthorized_without_echoing_it(fake: FakeRunPod) -> None:
    rp = RunPod(api_key="wrong-key-abcdef", base_url=BASE, http=fake.transport())
    with pytest.raises(atlas.Unauthorized) as info:
        rp.get_compute("pod0001")
    assert "wrong-key-abcdef" not in str(info.value) and info.value.hint


# -- spawn ------------------------------------------------------------------------------------
def test_spawn_sends_a_v2_create_and_returns_the_compute(fake: FakeRunPod, rp: RunPod) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", image="me/srv:1",
                            ports=[(8000, "http"), (22, "tcp")], env={"MODEL": "x"})
    (create,) = fake.sent("POST", "/v2/pods")
    body = json.loads(create.content)
    assert body["name"].startswith("atlas-") and len(body["name"]) > len("atlas-") + 8
    assert body["gpu"] == {"id": "NVIDIA GeForce RTX 4090", "count": 1}
    assert body["env"]["MODEL"] == "x" and body["env"][wire.REQUEST_ID_ENV]
    assert (c.id, c.provider, c.status, c.name) == ("pod0001", "runpod", "provisioning",
                                                    body["name"])
    assert isinstance(c.cost_per_hour, float) and c.gpu_type == "rtx_4090"
    http, tcp = c.ports
    assert http.url == "https://pod0001-8000.proxy.runpod.net" and tcp.url is None


def test_each_spawn_gets_its_own_name_and_marker(fake: FakeRunPod, rp: RunPod) -> None:
    for _ in range(3):
        rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1"))
    bodies = [json.loads(r.content) for r in fake.sent("POST", "/v2/pods")]
    assert len({b["name"] for b in bodies}) == 3
    assert len({b["env"][wire.REQUEST_ID_ENV] for b in bodies}) == 3


def test_bearer_token_reaches_env_but_not_raw(fake: FakeRunPod, rp: RunPod) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="h100", image="i:1", auth="bearer",
                            env={"HF_TOKEN": "hf_secret_value"})
    assert c.auth is not None
    assert fake.pods[c.id]["env"]["ATLAS_PRESHARED_KEY"] == c.auth.token
    fake.run(c.id)
    for seen in (c, atlas.get_compute(c.id, provider=rp), *atlas.list_compute(provider=rp)):
        text = json.dumps(seen.raw) + repr(seen)
        assert c.auth.token not in text and "hf_secret_value" not in text


def test_running_pod_has_urls_for_every_port(fake: FakeRunPod, rp: RunPod) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="h100", image="i:1", ports=["8000/http", "22/tcp"])
    fake.run(c.id)
    ready = atlas.wait_ready(c.id, provider=rp, timeout_s=5, sleep=lambda s: None)
    assert ready.ready and ready.public_ip == "203.0.113.9"
    assert [p.url for p in ready.ports] == ["https://pod0001-8000.proxy.runpod.net",
                                            "tcp://203.0.113.9:40022"]


def test_bad_request_is_caught_before_sending(fake: FakeRunPod, rp: RunPod) -> None:
    with pytest.raises(atlas.ValidationError, match="udp"):
        atlas.spawn_compute(provider=rp, gpu="h100", image="i:1", ports=[(53, "udp")])
    with pytest.raises(atlas.Unsupported, match="a10"):
        atlas.spawn_compute(provider=rp, gpu="a10", image="i:1")
    assert fake.requests == []


def test_on_demand_price_cap_is_checked_against_the_catalog(fake: FakeRunPod, rp: RunPod) -> None:
    with pytest.raises(atlas.ValidationError, match=r"\$5.38/h.*max_price_per_hour=5"):
        atlas.spawn_compute(provider=rp, gpu="h100", gpu_count=2, image="i:1",
                            max_price_per_hour=5.0)
    assert fake.sent("POST", "/v2/pods") == []
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", image="i:1", cloud_type="community",
                            max_price_per_hour=0.5)
    assert c.id in fake.pods


# -- no duplicate pods ------------------------------------------------------------------------
def test_lost_create_answer_is_found_not_replayed(fake: FakeRunPod, rp: RunPod) -> None:
    fake.fault("POST", "/v2/pods", _lost(fake))
    c = rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1"))
    assert len(fake.sent("POST", "/v2/pods")) == 1
    assert list(fake.pods) == [c.id]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_after_the_pod_was_made_is_found(fake: FakeRunPod, rp: RunPod, status: int) -> None:
    fake.fault("POST", "/v2/pods", _created_then(status, fake))
    c = rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1", name="mine"))
    assert len(fake.sent("POST", "/v2/pods")) == 1 and list(fake.pods) == [c.id]


def test_5xx_without_a_pod_is_retried_after_a_lookup(
    fake: FakeRunPod, rp: RunPod, sleeps: list[float]
) -> None:
    fake.fault("POST", "/v2/pods", _refused(503), _refused(500))
    c = rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1"))
    assert len(fake.sent("POST", "/v2/pods")) == 3 and list(fake.pods) == [c.id]
    assert len(fake.sent("GET", "/v2/pods")) == 2  # one lookup before each retry
    assert sleeps == [0.5, 1.0]


def test_a_same_named_pod_without_our_marker_is_not_taken(fake: FakeRunPod, rp: RunPod) -> None:
    other = fake.add_pod(name="shared-name", image="i:1", ports=[],
                         env={wire.REQUEST_ID_ENV: "someone-else"}, gpu=None)
    fake.fault("POST", "/v2/pods", _refused(503))
    c = rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1", name="shared-name"))
    assert c.id != other["id"] and len(fake.pods) == 2


def test_rate_limited_create_waits_and_retries_without_lookup(
    fake: FakeRunPod, rp: RunPod, sleeps: list[float]
) -> None:
    fake.fault("POST", "/v2/pods", _refused(429, **{"Retry-After": "7"}))
    rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1"))
    assert sleeps == [7.0] and fake.sent("GET", "/v2/pods") == [] and len(fake.pods) == 1


def test_4xx_is_final(fake: FakeRunPod, rp: RunPod) -> None:
    fake.fault("POST", "/v2/pods", _refused(400))
    with pytest.raises(atlas.ValidationError, match="refused"):
        rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1"))
    assert len(fake.sent("POST", "/v2/pods")) == 1 and fake.sent("GET", "/v2/pods") == []


def test_gives_up_after_bounded_attempts(fake: FakeRunPod, rp: RunPod) -> None:
    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    fake.fault("POST", "/v2/pods", *[drop] * CREATE_ATTEMPTS)
    with pytest.raises(atlas.TransportError) as info:
        rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1"))
    assert len(fake.sent("POST", "/v2/pods")) == CREATE_ATTEMPTS and fake.pods == {}
    assert info.value.hint and "safe to try again" in info.value.hint


# -- spot ------------------------------------------------------------------------------------
def _rent_inputs(fake: FakeRunPod) -> list[dict[str, Any]]:
    bodies = [json.loads(r.content) for r in fake.sent("POST", "/graphql")]
    return [b["variables"]["input"] for b in bodies if "podRentInterruptable" in b["query"]]


def test_spot_bid_comes_from_the_cap_per_gpu(fake: FakeRunPod, rp: RunPod) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", gpu_count=2, image="i:1", spot=True,
                            max_price_per_hour=0.9, ports=[(8000, "http")])
    (data,) = _rent_inputs(fake)
    assert data["bidPerGpu"] == 0.45 and data["gpuCount"] == 2
    assert data["gpuTypeId"] == "NVIDIA GeForce RTX 4090" and data["ports"] == "8000/http"
    assert {"key": wire.REQUEST_ID_ENV, "value": fake.pods[c.id]["env"][wire.REQUEST_ID_ENV]} in (
        data["env"])
    assert c.id in fake.pods and fake.sent("GET", f"/v2/pods/{c.id}")  # read back over REST


def test_spot_bid_defaults_to_the_catalog_minimum(fake: FakeRunPod, rp: RunPod) -> None:
    atlas.spawn_compute(provider=rp, gpu="h100_sxm", image="i:1", spot=True)
    (data,) = _rent_inputs(fake)
    assert data["bidPerGpu"] == 1.5


def test_graphql_errors_become_provider_errors(fake: FakeRunPod, rp: RunPod) -> None:
    fake.fault("POST", "/graphql", None,  # the catalog query passes
               lambda r: httpx.Response(200, json={"errors": [{"message": "no spot capacity"}]}))
    with pytest.raises(atlas.ProviderError, match="no spot capacity"):
        atlas.spawn_compute(provider=rp, gpu="h100", image="i:1", spot=True)


def test_lost_spot_answer_is_found_not_replayed(fake: FakeRunPod, rp: RunPod) -> None:
    fake.fault("POST", "/graphql", _lost(fake))
    c = atlas.spawn_compute(provider=rp, gpu="h100", image="i:1", spot=True,
                            max_price_per_hour=2.0)
    assert len(_rent_inputs(fake)) == 1 and list(fake.pods) == [c.id]


# -- get / list / stop / start / terminate ------------------------------------------------------
def test_unknown_id_is_not_found(rp: RunPod) -> None:
    with pytest.raises(atlas.NotFound):
        atlas.get_compute("nope", provider=rp)


def test_list_filters_client_side(fake: FakeRunPod, rp: RunPod) -> None:
    a = fake.add_pod(name="atlas-a", image="i", ports=[], env={}, status="RUNNING",
                     gpu={"id": "NVIDIA H100 80GB HBM3"})
    b = fake.add_pod(name="atlas-b", image="i", ports=[], env={},
                     gpu={"id": "NVIDIA GeForce RTX 4090"})
    fake.add_pod(name="other", image="i", ports=[], env={}, gpu=None)

    def ids(**kw: Any) -> set[str]:
        return {c.id for c in atlas.list_compute(provider=rp, **kw)}

    assert len(ids()) == 3
    assert ids(name="atlas-") == {a["id"], b["id"]}
    assert ids(status="running") == {a["id"]}
    assert ids(gpu="h100") == {a["id"]} and ids(gpu="4090") == {b["id"]}
    assert ids(region="US-TX-3") == ids() and ids(region="EU-RO-1") == set()
    with pytest.raises(atlas.ValidationError, match="unknown status"):
        atlas.list_compute(provider=rp, status="RUNNING")


def test_stop_start_use_the_action_endpoint(fake: FakeRunPod, rp: RunPod) -> None:
    pod = fake.add_pod(name="p", image="i", ports=["8000/http"], env={}, status="RUNNING",
                       gpu=None)
    assert atlas.stop(pod["id"], provider=rp).status == "stopped"
    assert atlas.stop(pod["id"], provider=rp).status == "stopped"  # 409, but already there
    assert atlas.start(pod["id"], provider=rp).status == "running"
    bodies = [json.loads(r.content) for r in fake.sent("POST", r"/v2/pods/[^/]+/action")]
    assert bodies == [{"action": "stop"}, {"action": "stop"}, {"action": "start"}]


def test_start_on_a_terminated_pod_is_a_conflict(fake: FakeRunPod, rp: RunPod) -> None:
    pod = fake.add_pod(name="p", image="i", ports=[], env={}, gpu=None, status="TERMINATED")
    with pytest.raises(atlas.ProviderError, match="while it is terminated") as info:
        atlas.start(pod["id"], provider=rp)
    assert info.value.status == 409


def test_terminate_is_idempotent(fake: FakeRunPod, rp: RunPod) -> None:
    pod = fake.add_pod(name="p", image="i", ports=[], env={}, gpu=None, status="RUNNING")
    assert atlas.terminate(pod["id"], provider=rp) is None
    assert atlas.terminate(pod["id"], provider=rp) is None
    assert atlas.terminate("never-existed", provider=rp) is None
    assert atlas.get_compute(pod["id"], provider=rp).status == "terminated"


def test_catalog_has_on_demand_and_spot_prices(fake: FakeRunPod, rp: RunPod) -> None:
    types = atlas.list_gpu_types(provider=rp)
    by_key = {(g.canonical, g.cloud_type): g for g in types}
    assert set(by_key) == {("rtx_4090", "secure"), ("rtx_4090", "community"),
                           ("h100_sxm", "secure")}
    assert by_key["rtx_4090", "community"].price_per_hour == 0.34
    assert by_key["rtx_4090", "community"].spot_price_per_hour == 0.2
    assert by_key["h100_sxm", "secure"].spot_price_per_hour == 1.75
    assert by_key["h100_sxm", "secure"].stock == "low"  # no REST availability: GraphQL's
    (catalog_get,) = fake.sent("GET", "/v2/catalog/gpus")
    assert dict(catalog_get.url.params) == {"include": "AVAILABILITY", "product": "POD"}


# -- jobs ------------------------------------------------------------------------------------
def test_async_job_and_get_job_by_job_or_id(fake: FakeRunPod, rp: RunPod) -> None:
    fake.status_script = ["IN_PROGRESS", "COMPLETED"]
    job = atlas.run_job(provider=rp, endpoint="ep1", input={"p": 1},
                        webhook="https://hook.example/x")
    (run,) = fake.sent("POST", "/v2/ep1/run")
    assert json.loads(run.content) == {"input": {"p": 1}, "webhook": "https://hook.example/x"}
    assert (job.status, job.endpoint, job.provider) == ("in_queue", "ep1", "runpod")
    assert atlas.get_job(job, provider=rp).status == "in_progress"
    done = atlas.get_job(job.id, endpoint="ep1", provider=rp)
    assert done.status == "completed" and done.output == {"echo": {"p": 1}}
    with pytest.raises(atlas.ValidationError, match="endpoint"):
        atlas.get_job(job.id, provider=rp)
    with pytest.raises(atlas.NotFound):
        atlas.get_job("missing", endpoint="ep1", provider=rp)


def test_sync_job_returns_the_runsync_answer(fake: FakeRunPod, rp: RunPod) -> None:
    job = atlas.run_job(provider=rp, endpoint="ep1", input="hi", mode="sync", timeout_ms=5000)
    assert job.status == "completed" and job.output == {"echo": "hi"}
    assert (job.delay_time_ms, job.execution_time_ms) == (3, 9)
    (runsync,) = fake.sent("POST", "/v2/ep1/runsync")
    assert runsync.url.params["wait"] == "5000"


def test_sync_job_polls_status_after_runsync(
    fake: FakeRunPod, rp: RunPod, sleeps: list[float]
) -> None:
    fake.runsync_status = "IN_PROGRESS"
    fake.status_script = ["IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]
    job = atlas.run_job(provider=rp, endpoint="ep1", input="hi", mode="sync", timeout_ms=60_000)
    assert job.status == "completed" and len(fake.sent("GET", r"/v2/ep1/status/.+")) == 3
    assert sleeps == sorted(sleeps) and sleeps[0] > 0  # backing off, never spinning


def test_sync_job_times_out_at_the_deadline(fake: FakeRunPod) -> None:
    import time

    rp = fake.provider(sleep=time.sleep)
    fake.status_script = ["IN_PROGRESS"] * 1000
    with pytest.raises(atlas.Timeout, match="not finished after 300 ms") as info:
        atlas.run_job(provider=rp, endpoint="ep1", input="hi", mode="sync", timeout_ms=300)
    assert info.value.hint
    # under a second, /runsync cannot honour the deadline: /run + polling instead
    assert fake.sent("POST", "/v2/ep1/runsync") == [] and len(fake.sent("POST", "/v2/ep1/run")) == 1
    assert 1 <= len(fake.sent("GET", r"/v2/ep1/status/.+")) < 50


def test_ctrl_c_during_a_sync_run_cancels_the_job(fake: FakeRunPod) -> None:
    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    rp = fake.provider(sleep=interrupt)
    fake.runsync_status = "IN_QUEUE"
    with pytest.raises(KeyboardInterrupt):
        atlas.run_job(provider=rp, endpoint="ep1", input="hi", mode="sync", timeout_ms=60_000)
    (cancel,) = fake.sent("POST", r"/v2/ep1/cancel/.+")
    (job,) = fake.jobs.values()
    assert cancel.url.path.endswith(job["id"]) and job["status"] == "CANCELLED"


def test_cancel_job(fake: FakeRunPod, rp: RunPod) -> None:
    job = atlas.run_job(provider=rp, endpoint="ep1", input=1)
    assert atlas.cancel_job(job, provider=rp).status == "cancelled"
    assert atlas.get_job(job, provider=rp).status == "cancelled"


def _stream(fake: FakeRunPod, rp: RunPod, steps: list[dict[str, Any]]) -> Iterator[Any]:
    fake.stream_script = steps
    job = atlas.run_job(provider=rp, endpoint="ep1", input=1)
    return atlas.stream_job(job, provider=rp)


def test_stream_unwraps_chunks_and_ends_after_draining(
    fake: FakeRunPod, rp: RunPod, sleeps: list[float]
) -> None:
    chunks = list(_stream(fake, rp, [
        {"status": "IN_QUEUE", "stream": []},
        {"status": "IN_PROGRESS", "stream": []},
        {"status": "IN_PROGRESS", "stream": [{"output": "a"}, {"output": "b"}]},
        {"status": "COMPLETED", "stream": [{"output": {"t": 3}}]},
        {"status": "COMPLETED", "stream": [{"output": "late"}]},
        {"status": "COMPLETED", "stream": []},
        {"status": "COMPLETED", "stream": [{"output": "never read"}]},
    ]))
    assert chunks == ["a", "b", {"t": 3}, "late"]
    assert len(fake.sent("GET", r"/v2/ep1/stream/.+")) == 6
    assert sleeps[0] < sleeps[1] and all(s > 0 for s in sleeps)  # backoff while empty


def test_stream_by_id_needs_the_endpoint(fake: FakeRunPod, rp: RunPod) -> None:
    fake.stream_script = [{"status": "COMPLETED", "stream": [{"output": 1}]}]
    job = atlas.run_job(provider=rp, endpoint="ep1", input=1)
    assert list(atlas.stream_job(job.id, endpoint="ep1", provider=rp)) == [1]
    with pytest.raises(atlas.ValidationError):
        atlas.stream_job(job.id, provider=rp)


@pytest.mark.parametrize(
    ("status", "error", "match"),
    [("FAILED", atlas.ProviderError, "failed: CUDA out of memory"),
     ("TIMED_OUT", atlas.Timeout, "timed out"),
     ("CANCELLED", atlas.ProviderError, "was cancelled")],
)
def test_stream_raises_the_jobs_error(
    fake: FakeRunPod, rp: RunPod, status: str, error: type[Exception], match: str
) -> None:
    fake.status_script = ["FAILED"]  # the error text comes from /status
    got: list[Any] = []
    with pytest.raises(error, match=match):
        for chunk in _stream(fake, rp, [{"status": "IN_PROGRESS", "stream": [{"output": 1}]},
                                        {"status": status, "stream": [{"output": 2}]}]):
            got.append(chunk)
    assert got == [1, 2]


def test_ctrl_c_during_a_stream_cancels_the_job(fake: FakeRunPod) -> None:
    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    rp = fake.provider(sleep=interrupt)
    with pytest.raises(KeyboardInterrupt):
        list(_stream(fake, rp, [{"status": "IN_PROGRESS", "stream": []}]))
    assert len(fake.sent("POST", r"/v2/ep1/cancel/.+")) == 1


# -- parallel spawns ----------------------------------------------------------------------------
def test_spawn_many_keeps_order_and_names(fake: FakeRunPod, rp: RunPod) -> None:
    computes = spawn_many(count=5, provider=rp, gpu="h100", image="i:1", name="batch")
    assert [c.name for c in computes] == [f"batch-{i}" for i in range(1, 6)]
    assert len({c.id for c in computes}) == 5 and set(fake.pods) == {c.id for c in computes}
    assert spawn_many(count=0, provider=rp, gpu="h100", image="i:1") == []


@pytest.mark.parametrize(("args", "fields", "needle"), [
    ({}, {"gpu": "h100", "image": "i:1"}, "either requests"),
    ({"requests": [{"image": "i:1"}], "count": 2}, {}, "either requests"),
    ({"count": -1}, {"image": "i:1"}, "count=-1"),
    ({"count": 2, "max_workers": 0}, {"image": "i:1"}, "max_workers=0"),
    ({"requests": [{"image": "i:1"}]}, {"gpu": "h100"}, "inside each request"),
    ({"requests": [{"image": "i:1", "gpu": "h100"}, {"gpu": "h100"}]}, {}, "image"),
])
def test_spawn_many_validates_everything_before_sending(
    fake: FakeRunPod, rp: RunPod, args: dict[str, Any], fields: dict[str, Any], needle: str
) -> None:
    with pytest.raises(atlas.ValidationError, match=needle):
        spawn_many(provider=rp, **args, **fields)
    assert fake.requests == []


def test_spawn_many_undoes_a_failed_batch(fake: FakeRunPod, rp: RunPod) -> None:
    fake.fault("POST", "/v2/pods", None, None, _refused(400), None)
    with pytest.raises(atlas.ValidationError, match="refused"):
        spawn_many(count=4, provider=rp, gpu="h100", image="i:1", max_workers=1)
    assert len(fake.pods) == 3 and {p["status"] for p in fake.pods.values()} == {"TERMINATED"}


def test_spawn_many_undoes_and_reraises_an_interrupt(fake: FakeRunPod, rp: RunPod) -> None:
    def interrupt(request: httpx.Request) -> httpx.Response:
        raise KeyboardInterrupt

    fake.fault("POST", "/v2/pods", None, interrupt)
    with pytest.raises(KeyboardInterrupt):
        spawn_many(count=3, provider=rp, gpu="h100", image="i:1", max_workers=1)
    assert fake.pods and {p["status"] for p in fake.pods.values()} == {"TERMINATED"}


# -- the hot path stays correct ----------------------------------------------------------------
def test_the_facade_reuses_one_runpod_that_follows_config(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = resolve("runpod")
    assert resolve("runpod") is shared and isinstance(shared, RunPod)
    assert resolve("runpod", api_key="k") is not shared  # per-call options: a fresh one
    monkeypatch.setenv("RUNPOD_API_KEY", "env-key-123456")
    assert shared.api_key() == "env-key-123456"
    assert shared.client("rest").base_url == "https://api.runpod.io"
    sandbox.attach("http://sandbox.test")
    assert shared.api_key() == sandbox.sandbox_key("runpod")
    assert shared.client("serverless").base_url == "http://sandbox.test/runpod/serverless"


def test_cookies_are_never_kept_between_calls(fake: FakeRunPod, rp: RunPod) -> None:
    fake.fault("GET", "/v2/pods", lambda r: httpx.Response(
        200, json={"pods": []}, headers={"set-cookie": "session=abc123; Path=/"}))
    rp.list_compute()
    rp.list_compute()
    assert all("cookie" not in r.headers for r in fake.requests)
