"""RunPod pods as the real cloud treats them (issue 14, items 9-13), in the provider and in
the sandbox alike: what a spot rental must carry, the container-disk default, resuming a spot
pod with its bid, ``public_ip`` from public TCP mappings only, and ``cloud_type="any"``.
Sources are cited in docs/wire-notes.md (RunPod section) and beside the code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb import ComputeRequest
from atlas_nb.providers.runpod import RunPod, wire
from atlas_nb.sandbox import sandbox_key, start
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.server import Sandbox

KEY = sandbox_key("runpod")
BOOT_S = 30.0
RTX_4090 = "NVIDIA GeForce RTX 4090"
H100 = "NVIDIA H100 80GB HBM3"


class Recorder(list[httpx.Request]):
    def sent(self, method: str, pattern: str) -> list[httpx.Request]:
        return [r for r in self if r.method == method and re.fullmatch(pattern, _rel(r))]

    def graphql(self, field: str) -> list[dict[str, Any]]:
        """The bodies of GraphQL requests whose query names ``field``."""
        bodies = [json.loads(r.content) for r in self.sent("POST", "/graphql")]
        return [b for b in bodies if field in b["query"]]


def _rel(request: httpx.Request) -> str:
    return re.sub(r"^/runpod/[^/]+", "", request.url.path)


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with start(clouds=["runpod"], start_server=False, validate=True, clock=ManualClock(),
               provision_delay_s=BOOT_S, start_delay_s=0) as box:
        yield box
        assert box.violations == [], "\n".join(box.violations)


@pytest.fixture
def sent() -> Recorder:
    return Recorder()


@pytest.fixture
def rp(sb: Sandbox, sent: Recorder) -> Iterator[RunPod]:
    with sb.client(event_hooks={"request": [sent.append]}) as client:
        yield RunPod(http=client, sleep=lambda s: None)


def boot(sb: Sandbox) -> None:
    assert isinstance(sb.clock, ManualClock)
    sb.clock.advance(BOOT_S)


def graphql(sb: Sandbox, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """One GraphQL call straight to the sandbox (not through the provider)."""
    with sb.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        r = client.post(f"{sb.url}/runpod/graphql/graphql",
                        json={"query": query, "variables": variables or {}})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def rent(sb: Sandbox, **fields: Any) -> dict[str, Any]:
    data = {"bidPerGpu": 0.5, "gpuCount": 1, "gpuTypeId": RTX_4090, "name": "x",
            "imageName": "i:1", "cloudType": "ALL", "containerDiskInGb": 10,
            "minVcpuCount": 1, "minMemoryInGb": 1} | fields
    data = {k: v for k, v in data.items() if v is not None}
    return graphql(sb, wire.RENT_SPOT_MUTATION, {"input": data})


# -- item 9: what a spot rental carries ------------------------------------------------------
def test_spot_input_always_carries_disk_vcpu_memory_and_mount_path() -> None:
    req = ComputeRequest(gpu="rtx_4090", image="i:1", spot=True, volume_gb=20,
                         ports=[(8000, "http")])
    data = wire.spot_input(req, name="n", marker="m", bid_per_gpu=0.3)
    assert data["containerDiskInGb"] == wire.DEFAULT_CONTAINER_DISK_GB == 10
    assert data["minVcpuCount"] >= 1 and data["minMemoryInGb"] >= 1
    assert (data["volumeInGb"], data["volumeMountPath"]) == (20, wire.VOLUME_PATH)
    assert "supportPublicIp" not in data  # no TCP port asked for: any host will do
    net = wire.spot_input(ComputeRequest(gpu="rtx_4090", image="i:1", spot=True,
                                         network_volume_id="vol_1"),
                          name="n", marker="m", bid_per_gpu=0.3)
    assert (net["networkVolumeId"], net["volumeMountPath"]) == ("vol_1", wire.NETWORK_VOLUME_PATH)
    plain = wire.spot_input(ComputeRequest(gpu="rtx_4090", image="i:1", spot=True),
                            name="n", marker="m", bid_per_gpu=0.3)
    assert "volumeMountPath" not in plain and "volumeInGb" not in plain


def test_spot_input_asks_for_a_public_ip_with_tcp_ports() -> None:
    req = ComputeRequest(gpu="rtx_4090", image="i:1", spot=True, ports=[(22, "tcp")])
    assert wire.spot_input(req, name="n", marker="m", bid_per_gpu=0.3)["supportPublicIp"] is True


def test_a_template_brings_its_own_disk() -> None:
    req = ComputeRequest(gpu="rtx_4090", template_id="tpl", spot=True)
    assert "containerDiskInGb" not in wire.spot_input(req, name="n", marker="m", bid_per_gpu=1)
    assert "disk" not in wire.create_body(ComputeRequest(gpu="h100", template_id="tpl"),
                                          name="n", marker="m")


def test_sandbox_refuses_a_rental_without_a_container_disk(sb: Sandbox) -> None:
    answer = rent(sb, containerDiskInGb=None)
    assert answer["data"]["podRentInterruptable"] is None
    assert "disk" in answer["errors"][0]["message"]
    assert sb.runpod.pods == {}


def test_sandbox_refuses_a_volume_without_a_mount_path(sb: Sandbox) -> None:
    answer = rent(sb, volumeInGb=20)
    assert "volumeMountPath" in answer["errors"][0]["message"] and sb.runpod.pods == {}
    ok = rent(sb, volumeInGb=20, volumeMountPath="/workspace")
    pod = sb.runpod.pods[ok["data"]["podRentInterruptable"]["id"]]
    assert pod["mounts"] == {"persistent": {"size": 20, "path": "/workspace"}}


def test_sandbox_reports_a_rental_without_vcpu_and_memory_minimums(sb: Sandbox) -> None:
    rent(sb, minVcpuCount=None, minMemoryInGb=None)
    assert any("minVcpuCount" in v for v in sb.violations)
    sb.clear_violations()


def test_tcp_ports_without_support_public_ip_get_no_public_address(sb: Sandbox) -> None:
    bare = rent(sb, ports="22/tcp")["data"]["podRentInterruptable"]["id"]
    public = rent(sb, ports="22/tcp", supportPublicIp=True)["data"]["podRentInterruptable"]["id"]
    boot(sb)
    bare_c = wire.compute_from_wire(sb.runpod.pods[bare])
    public_c = wire.compute_from_wire(sb.runpod.pods[public])
    assert bare_c.public_ip is None and bare_c.ports[0].url is None
    assert public_c.public_ip and public_c.ports[0].url


def test_spot_spawn_with_a_tcp_port_is_reachable(sb: Sandbox, rp: RunPod, sent: Recorder) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", image="i:1", spot=True,
                            max_price_per_hour=1.0, ports=[(22, "tcp")], volume_gb=20)
    (body,) = sent.graphql("podRentInterruptable")
    data = body["variables"]["input"]
    assert data["supportPublicIp"] is True and data["volumeMountPath"] == wire.VOLUME_PATH
    boot(sb)
    ready = atlas.wait_ready(c.id, provider=rp, timeout_s=5, sleep=lambda s: None)
    assert ready.public_ip and ready.ports[0].url and ready.ports[0].url.startswith("tcp://")


# -- item 10: on-demand creates get a container disk ------------------------------------------
def test_on_demand_create_sends_a_container_disk(sb: Sandbox, rp: RunPod, sent: Recorder) -> None:
    c = rp.spawn_compute(ComputeRequest(gpu="h100", image="i:1", cloud_type="secure"))
    (create,) = sent.sent("POST", "/v2/pods")
    assert json.loads(create.content)["disk"] == wire.DEFAULT_CONTAINER_DISK_GB
    assert sb.runpod.pods[c.id]["disk"] == wire.DEFAULT_CONTAINER_DISK_GB
    c2 = rp.spawn_compute(ComputeRequest(gpu="h100", image="i:1", cloud_type="secure",
                                         container_disk_gb=40))
    assert sb.runpod.pods[c2.id]["disk"] == 40


# -- item 11: resuming a spot pod -------------------------------------------------------------
def test_rest_start_of_a_spot_pod_is_refused_by_the_sandbox(sb: Sandbox) -> None:
    pod_id = rent(sb)["data"]["podRentInterruptable"]["id"]
    boot(sb)
    with sb.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        url = f"{sb.url}/runpod/rest/v2/pods/{pod_id}/action"
        assert client.post(url, json={"action": "stop"}).status_code == 200
        refused = client.post(url, json={"action": "start"})
    assert refused.status_code == 400
    assert "Cannot resume a spot pod as an on demand pod" in refused.json()["detail"]
    resumed = graphql(sb, "mutation Resume($input: PodResumeInput!) "
                          "{ podResume(input: $input) { id } }",
                      {"input": {"podId": pod_id, "gpuCount": 1}})
    assert "Cannot resume a spot pod" in resumed["errors"][0]["message"]


def test_stopped_spot_pod_resumes_with_its_creation_bid(sb: Sandbox, rp: RunPod,
                                                        sent: Recorder) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", gpu_count=2, image="i:1", spot=True,
                            max_price_per_hour=0.9)
    boot(sb)
    assert atlas.stop(c.id, provider=rp).status == "stopped"
    started = atlas.start(c.id, provider=rp)
    assert started.status in ("provisioning", "running")
    (resume,) = sent.graphql("podBidResume")
    assert resume["variables"]["input"] == {"podId": c.id, "bidPerGpu": 0.45, "gpuCount": 2}
    assert not [r for r in sent.sent("POST", r"/v2/pods/[^/]+/action")
                if json.loads(r.content) == {"action": "start"}]
    assert sb.runpod.store.get(c.id).bid_per_gpu == 0.45


def test_another_process_resumes_a_preempted_spot_pod_with_the_same_bid(
    sb: Sandbox, rp: RunPod
) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", image="i:1", spot=True,
                            max_price_per_hour=0.6)
    boot(sb)
    sb.runpod.preempt(c.id)  # outbid: EXITED
    other = Recorder()
    with sb.client(event_hooks={"request": [other.append]}) as client:
        fresh = RunPod(http=client, sleep=lambda s: None)  # knows nothing of the spawn
        assert fresh.start(c.id).status in ("provisioning", "running")
    (resume,) = other.graphql("podBidResume")
    assert resume["variables"]["input"]["bidPerGpu"] == 0.6


def test_start_of_a_running_spot_pod_is_a_no_op(sb: Sandbox, rp: RunPod, sent: Recorder) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", image="i:1", spot=True,
                            max_price_per_hour=0.6)
    boot(sb)
    assert atlas.start(c.id, provider=rp).status == "running"
    assert sent.graphql("podBidResume") == []


def test_resume_bid_prefers_our_marker_then_the_pods_rate() -> None:
    pod = {"podType": "INTERRUPTABLE", "gpuCount": 2, "costPerHr": 0.8,
           "env": [f"{wire.SPOT_BID_ENV}=0.35", "A=1"], "lowestBidPriceToResume": 0.2}
    assert wire.resume_bid(pod) == 0.35
    assert wire.resume_bid({**pod, "env": []}) == 0.4
    assert wire.resume_bid({**pod, "env": None, "costPerHr": 0}) == 0.2
    assert wire.resume_bid({"podType": "INTERRUPTABLE", "gpuCount": 1}) is None


# -- item 12: public_ip only from public TCP mappings -----------------------------------------
def test_http_ports_private_address_is_never_the_public_ip() -> None:
    pod = {"id": "p1", "status": "RUNNING", "ports": ["8888/http", "22/tcp"],
           "runtime": {"ports": [
               {"private": 8888, "public": 60141, "type": "http", "ip": "100.65.0.101"},
               {"private": 22, "public": 34446, "type": "tcp", "ip": "195.26.233.3"}]}}
    c = wire.compute_from_wire(pod)
    assert c.public_ip == "195.26.233.3"
    http = {p.internal: p for p in c.ports}[8888]
    assert http.external is None and http.url == "https://p1-8888.proxy.runpod.net"
    only_http = {**pod, "ports": ["8888/http"],
                 "runtime": {"ports": pod["runtime"]["ports"][:1]}}  # type: ignore[index]
    assert wire.compute_from_wire(only_http).public_ip is None
    private_tcp = {**pod, "runtime": {"ports": [
        {"private": 22, "public": 40000, "type": "tcp", "ip": "10.2.3.4"}]}}
    assert wire.compute_from_wire(private_tcp).public_ip is None


def test_sandbox_gives_http_ports_a_private_100_65_address(sb: Sandbox, rp: RunPod) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="h100", image="i:1", cloud_type="secure",
                            ports=[(8000, "http")])
    boot(sb)
    (live,) = sb.runpod.pods[c.id]["runtime"]["ports"]
    assert live["type"] == "http" and live["ip"].startswith("100.65.")
    assert atlas.get_compute(c.id, provider=rp).public_ip is None
    gql = graphql(sb, "query Pod($input: PodFilter!) { pod(input: $input) "
                      "{ runtime { ports { ip isIpPublic type } } } }",
                  {"input": {"podId": c.id}})
    (port,) = gql["data"]["pod"]["runtime"]["ports"]
    assert port == {"ip": live["ip"], "isIpPublic": False, "type": "http"}


# -- item 13: cloud_type="any" ----------------------------------------------------------------
def test_any_picks_the_cheaper_cloud_with_stock(sb: Sandbox, rp: RunPod, sent: Recorder) -> None:
    row = sb.runpod.catalog.gpus[RTX_4090]
    assert row["price"]["community"] < row["price"]["secure"]
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", image="i:1")
    (create,) = sent.sent("POST", "/v2/pods")
    assert json.loads(create.content)["cloud"] == "COMMUNITY"
    assert c.cloud_type == "community" and sb.runpod.pods[c.id]["cloud"] == "COMMUNITY"
    assert c.cost_per_hour == pytest.approx(row["price"]["community"])


def test_any_falls_back_to_secure_when_community_has_no_stock(sb: Sandbox, rp: RunPod,
                                                              sent: Recorder) -> None:
    sb.runpod.catalog.gpus[RTX_4090]["maxCount"]["community"] = 0  # no community host fits
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", image="i:1")
    assert c.cloud_type == "secure" and sb.runpod.pods[c.id]["cloud"] == "SECURE"


def test_a_named_cloud_is_sent_as_is_and_recorded(sb: Sandbox, rp: RunPod,
                                                  sent: Recorder) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", image="i:1", cloud_type="secure")
    assert c.cloud_type == "secure" and sent.sent("GET", r"/v2/catalog/gpus.*") == []


def test_any_price_cap_checks_the_cloud_it_picks(sb: Sandbox, rp: RunPod) -> None:
    row = sb.runpod.catalog.gpus[RTX_4090]
    cap = (row["price"]["community"] + row["price"]["secure"]) / 2
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", image="i:1", max_price_per_hour=cap)
    assert c.cloud_type == "community"


def test_pick_cloud_is_a_pure_choice() -> None:
    def entry(secure: float, community: float, stock: str) -> dict[str, Any]:
        return {"secure": True, "community": True, "availability": stock,
                "price": {"secure": secure, "community": community}}

    assert wire.pick_cloud({"SECURE": entry(0.7, 0.4, "HIGH"),
                            "COMMUNITY": entry(0.7, 0.4, "LOW")}) == "COMMUNITY"
    assert wire.pick_cloud({"SECURE": entry(0.7, 0.4, "HIGH"),
                            "COMMUNITY": entry(0.7, 0.4, "NONE")}) == "SECURE"
    assert wire.pick_cloud({"SECURE": entry(0.3, 0.4, "LOW"),
                            "COMMUNITY": entry(0.3, 0.4, "HIGH")}) == "SECURE"
    assert wire.pick_cloud({"SECURE": entry(0.7, 0.4, "NONE"),
                            "COMMUNITY": entry(0.7, 0.4, "NONE")}) == "COMMUNITY"
