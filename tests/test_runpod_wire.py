"""RunPod wire translation (pure functions) checked against RunPod's REST v2 OpenAPI document."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import atlas_nb
from atlas_nb import ComputeRequest, ValidationError
from atlas_nb.models import COMPUTE_STATUSES, JOB_STATUSES
from atlas_nb.providers.base import matches
from atlas_nb.providers.runpod import wire

_CANDIDATES = [  # the copy vendored with the sandbox, else the shared one
    Path(atlas_nb.__file__).parent / "sandbox" / "specs" / "runpod" / "rest-v2-openapi.json",
    Path("/work/shared/specs/runpod/rest-v2-openapi.json"),
]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    for path in _CANDIDATES:
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    pytest.skip("RunPod REST v2 OpenAPI document not found (vendored or shared)")


def _validator(spec: dict[str, Any], schema: str) -> jsonschema.Draft202012Validator:
    # Refs in the spec are "#/components/schemas/X": make the whole document the root.
    root = {**spec, "$ref": f"#/components/schemas/{schema}"}
    return jsonschema.Draft202012Validator(root)


def _assert_valid(spec: dict[str, Any], schema: str, value: Any) -> None:
    errors = sorted(_validator(spec, schema).iter_errors(value), key=str)
    assert not errors, f"{schema} invalid: {[e.message for e in errors]}"


def _example(spec: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    content = spec["paths"][path][method]["responses"][status]["content"]["application/json"]
    return copy.deepcopy(next(iter(content["examples"].values()))["value"])


# -- status maps ----------------------------------------------------------------------------
def test_pod_status_map_covers_the_spec_enum(spec: dict[str, Any]) -> None:
    enum = spec["components"]["schemas"]["PodStatus"]["enum"]
    assert set(enum) == set(wire.POD_STATUS), "POD_STATUS must map exactly the spec's PodStatus"
    assert set(wire.POD_STATUS.values()) <= set(COMPUTE_STATUSES)
    assert wire.POD_STATUS["EXITED"] == "stopped" and wire.POD_STATUS["ERROR"] == "failed"


def test_job_status_map_covers_the_documented_states() -> None:
    documented = {"IN_QUEUE", "IN_PROGRESS", "RUNNING", "COMPLETED", "FAILED", "CANCELLED",
                  "TIMED_OUT"}
    assert set(wire.JOB_STATUS) == documented
    assert set(wire.JOB_STATUS.values()) == set(JOB_STATUSES)


def test_unknown_statuses_never_raise() -> None:
    assert wire.compute_from_wire({"id": "p1", "status": "HIBERNATING"}).status == "unknown"
    assert wire.job_from_wire({"id": "j1", "status": "WEIRD"}, "ep").status == "in_queue"


# -- create bodies --------------------------------------------------------------------------
def _body(**fields: Any) -> dict[str, Any]:
    return wire.create_body(ComputeRequest(**fields), name="atlas-test", marker="m-1")


def test_gpu_create_body_is_a_valid_create_pod_request(spec: dict[str, Any]) -> None:
    body = _body(gpu="rtx_4090", gpu_count=2, image="me/srv:1", ports=[(8000, "http"), "22/tcp"],
                 env={"A": "1"}, region_hints=["US-TX-3"], container_disk_gb=40,
                 volume_gb=20, cloud_type="community")
    _assert_valid(spec, "CreatePodRequest", body)
    assert body == {
        "name": "atlas-test",
        "image": "me/srv:1",
        "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 2},
        "cloud": "COMMUNITY",
        "dataCenterIds": ["US-TX-3"],
        "disk": 40,
        "mounts": {"persistent": {"size": 20, "path": "/workspace"}},
        "ports": ["8000/http", "22/tcp"],
        "env": {"A": "1", "ATLAS_REQUEST_ID": "m-1"},
    }


def test_cloud_any_is_omitted_and_secure_is_sent(spec: dict[str, Any]) -> None:
    assert "cloud" not in _body(gpu="h100", image="i:1")
    secure = _body(gpu="h100", image="i:1", cloud_type="secure")
    assert secure["cloud"] == "SECURE"
    _assert_valid(spec, "CreatePodRequest", secure)


def test_cpu_pod_body_uses_the_cpu_config(spec: dict[str, Any]) -> None:
    body = _body(gpu=None, cpus=4, image="i:1", network_volume_id="vol_1")
    _assert_valid(spec, "CreatePodRequest", body)
    assert body["cpu"] == {"id": wire.DEFAULT_CPU_FLAVOR, "vcpuCount": 4}
    assert "gpu" not in body
    assert body["mounts"] == {"network": [{"volumeId": "vol_1", "path": "/runpod-volume"}]}


def test_template_only_body_is_valid(spec: dict[str, Any]) -> None:
    body = _body(gpu="a4000", template_id="tpl_1")
    assert "image" not in body and body["templateId"] == "tpl_1"
    _assert_valid(spec, "CreatePodRequest", body)


def test_the_validator_does_reject_a_bad_body(spec: dict[str, Any]) -> None:
    # Guard against a validator that accepts anything: the v1 flat shape must fail.
    v1_shape = {"name": "x", "imageName": "i:1", "gpuTypeIds": ["NVIDIA H100 80GB HBM3"]}
    assert list(_validator(spec, "CreatePodRequest").iter_errors(v1_shape))


def test_provider_opts_merge_last_and_deep(spec: dict[str, Any]) -> None:
    body = _body(gpu="h100", image="i:1", provider_opts={"gpu": {"minCudaVersion": "12.1"},
                                                          "startSsh": True, "disk": 80})
    assert body["gpu"] == {"id": "NVIDIA H100 80GB HBM3", "count": 1, "minCudaVersion": "12.1"}
    assert body["disk"] == 80 and body["startSsh"] is True
    _assert_valid(spec, "CreatePodRequest", body)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"gpu": None, "cpus": 3}, "power of two"),
        ({"gpu": None, "volume_gb": 20}, "CPU pods cannot have volume_gb"),
        ({"gpu": "h100", "volume_gb": 5}, "at least 10 GB"),
        ({"gpu": "h100", "volume_gb": 20, "network_volume_id": "v"}, "not both"),
        ({"gpu": "h100", "ports": [(53, "udp")]}, "udp"),
        ({"gpu": "h100", "memory_gb": 64}, "memory_gb"),
        ({"gpu": "h100", "cpus": 8}, "drop cpus"),
    ],
)
def test_requests_runpod_cannot_express_are_rejected(fields: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        _body(image="i:1", **fields)


def test_gpu_runpod_lacks_is_unsupported() -> None:
    with pytest.raises(atlas_nb.Unsupported, match="runpod does not offer a10"):
        _body(gpu="a10", image="i:1")


def test_spot_input_uses_graphql_shapes() -> None:
    req = ComputeRequest(gpu="rtx_4090", gpu_count=2, image="i:1", spot=True,
                         ports=[(8000, "http"), (22, "tcp")], env={"A": "1"},
                         region_hints=["EU-RO-1"], container_disk_gb=30, volume_gb=10)
    data = wire.spot_input(req, name="n", marker="m", bid_per_gpu=0.123456)
    assert data == {
        "bidPerGpu": 0.1235, "gpuCount": 2, "gpuTypeId": "NVIDIA GeForce RTX 4090",
        "name": "n", "cloudType": "ALL", "ports": "8000/http,22/tcp",
        "env": [{"key": "A", "value": "1"}, {"key": "ATLAS_REQUEST_ID", "value": "m"},
                {"key": "ATLAS_SPOT_BID", "value": "0.1235"}],
        "minVcpuCount": 1, "minMemoryInGb": 1, "supportPublicIp": True,
        "imageName": "i:1", "containerDiskInGb": 30, "volumeInGb": 10,
        "volumeMountPath": "/workspace", "dataCenterId": "EU-RO-1",
    }
    with pytest.raises(ValidationError, match="need a GPU"):
        wire.spot_input(ComputeRequest(gpu=None, image="i:1", spot=True), name="n", marker="m",
                        bid_per_gpu=1.0)


# -- responses ------------------------------------------------------------------------------
def test_spec_pod_example_becomes_a_compute(spec: dict[str, Any]) -> None:
    pod = _example(spec, "/v2/pods/{id}", "get", "200")
    _assert_valid(spec, "Pod", pod)
    c = wire.compute_from_wire(pod)
    assert (c.id, c.provider, c.status, c.name) == ("7h9k2m4n6p", "runpod", "running",
                                                    "pytorch-training")
    assert c.gpu_type == "rtx_4090" and c.gpu_count == 1
    assert c.cost_per_hour == 0.44 and isinstance(c.cost_per_hour, float)
    assert c.region == "US-KS-2" and c.public_ip == "195.26.233.3"
    assert c.image == "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404"
    assert c.created_at is not None and c.created_at.year == 2026
    by_port = {p.internal: p for p in c.ports}
    assert by_port[8888].protocol == "http"
    assert by_port[8888].url == "https://7h9k2m4n6p-8888.proxy.runpod.net"
    assert (by_port[22].protocol, by_port[22].external) == ("tcp", 34446)
    assert by_port[22].url == "tcp://195.26.233.3:34446"
    assert c.ready


def test_raw_never_carries_the_pod_env(spec: dict[str, Any]) -> None:
    pod = _example(spec, "/v2/pods/{id}", "get", "200")
    pod["env"] = {"ATLAS_PRESHARED_KEY": "tok-secret-123456", "MODEL_NAME": "llama-3"}
    c = wire.compute_from_wire(pod)
    text = json.dumps(c.raw)
    assert "env" not in c.raw and "tok-secret" not in text and "MODEL_NAME" not in text
    assert c.raw["id"] == "7h9k2m4n6p"  # the rest of the payload is kept


def test_tcp_ports_have_no_url_until_running() -> None:
    pod = {"id": "p1", "status": "STARTING", "ports": ["8000/http", "22/tcp"], "runtime": None,
           "cost": "0.74"}
    c = wire.compute_from_wire(pod)
    assert c.status == "provisioning" and not c.ready
    ports = {p.internal: p for p in c.ports}
    assert ports[8000].url == "https://p1-8000.proxy.runpod.net"
    assert ports[22].url is None and ports[22].external is None
    assert c.cost_per_hour == 0.74 and c.public_ip is None


@pytest.mark.parametrize(("cost", "expected"),
                         [(None, 0.0), ("", 0.0), ("abc", 0.0), (1, 1.0), ("nan", 0.0)])
def test_cost_per_hour_is_always_a_float(cost: Any, expected: float) -> None:
    c = wire.compute_from_wire({"id": "p", "status": "EXITED", "cost": cost})
    assert isinstance(c.cost_per_hour, float) and c.cost_per_hour == expected


def test_cpu_pod_has_no_gpu() -> None:
    c = wire.compute_from_wire({"id": "p", "status": "RUNNING", "cpu": {"id": "cpu5c"}})
    assert (c.gpu_type, c.gpu_count) == (None, 0)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=10,
)
_pod_keys = st.sampled_from(["id", "name", "status", "ports", "runtime", "cost", "gpu",
                             "createdAt", "dataCenterId", "image", "env"])


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_pod_keys, _json, max_size=8))
def test_any_pod_shape_translates_without_raising(pod: dict[str, Any]) -> None:
    c = wire.compute_from_wire(pod)
    assert c.status in COMPUTE_STATUSES and isinstance(c.cost_per_hour, float)
    assert "env" not in c.raw


def test_catalog_gives_one_entry_per_cloud_with_spot_prices(spec: dict[str, Any]) -> None:
    catalog = _example(spec, "/v2/catalog/gpus", "get", "200")
    gql = [{"id": "NVIDIA GeForce RTX 4090", "displayName": "RTX 4090", "memoryInGb": 24,
            "secureSpotPrice": 0.29, "communitySpotPrice": 0.0,
            "lowestPrice": {"minimumBidPrice": 0.2, "uninterruptablePrice": 0.31,
                            "stockStatus": "High"}}]
    secure, community = wire.gpu_types_from_wire(catalog, gql)
    assert (secure.cloud_type, secure.price_per_hour, secure.spot_price_per_hour) == (
        "secure", 0.44, 0.29)
    # no community spot price of its own: the lowest bid stands in
    assert (community.cloud_type, community.price_per_hour, community.spot_price_per_hour) == (
        "community", 0.31, 0.2)
    for g in (secure, community):
        assert (g.provider, g.id, g.canonical, g.memory_gb) == (
            "runpod", "NVIDIA GeForce RTX 4090", "rtx_4090", 24.0)
        assert g.stock == "high" and g.regions == ("US-KS-2",)


def test_catalog_gpu_unknown_to_atlas_has_no_canonical() -> None:
    catalog = {"gpus": [{"id": "NVIDIA Future X", "name": "X", "memory": 99, "secure": True,
                         "community": False, "price": {"secure": 9.0, "community": 0}}]}
    (only,) = wire.gpu_types_from_wire(catalog, [])
    assert only.canonical is None and only.spot_price_per_hour is None and only.stock is None


def test_spot_bid_prefers_the_minimum_bid() -> None:
    types = [{"id": "g", "lowestPrice": {"minimumBidPrice": 0.5}, "communitySpotPrice": 0.4},
             {"id": "h", "lowestPrice": None, "secureSpotPrice": 0.7, "communitySpotPrice": 0}]
    assert wire.spot_bid(types, "g") == 0.5
    assert wire.spot_bid(types, "h") == 0.7
    assert wire.spot_bid(types, "nope") is None


def test_job_translation() -> None:
    job = wire.job_from_wire({"id": "j1", "status": "FAILED", "error": {"msg": "boom"},
                              "delayTime": 12, "executionTime": 34.0}, "ep1")
    assert (job.id, job.endpoint, job.provider, job.status) == ("j1", "ep1", "runpod", "failed")
    assert job.error == '{"msg": "boom"}'
    assert (job.delay_time_ms, job.execution_time_ms) == (12, 34)
    assert wire.job_from_wire({"status": "RUNNING"}, "ep", "j2").id == "j2"
    assert wire.job_from_wire({"status": "RUNNING"}, "ep").status == "in_progress"


def test_stream_chunks_are_unwrapped() -> None:
    assert wire.stream_chunks([{"output": "a"}, {"output": {"t": 1}}, "raw"]) == [
        "a", {"t": 1}, "raw"]
    assert wire.stream_chunks(None) == []


def test_graphql_errors_are_failures() -> None:
    with pytest.raises(wire.GraphQLFailure, match="no capacity"):
        wire.graphql_data({"data": None, "errors": [{"message": "no capacity"}]})
    assert wire.graphql_data({"data": {"x": 1}}) == {"x": 1}


def test_list_filters() -> None:
    h100 = wire.compute_from_wire({"id": "a", "name": "atlas-a", "status": "RUNNING",
                                   "gpu": {"id": "NVIDIA H100 80GB HBM3"},
                                   "dataCenterId": "US-TX-3"})
    assert h100.gpu_type == "h100_sxm"
    assert matches(h100, status="running", name="atlas-", gpu="h100", region="US-TX-3")
    assert matches(h100, status=None, name=None, gpu="h100_sxm", region=None)
    assert not matches(h100, status=None, name=None, gpu="h100_pcie", region=None)
    assert not matches(h100, status="stopped", name=None, gpu=None, region=None)
    assert not matches(h100, status=None, name="other", gpu=None, region=None)
    assert not matches(h100, status=None, name=None, gpu=None, region="EU-RO-1")


def test_is_our_create_needs_the_marker_when_env_is_there() -> None:
    pod = {"name": "n", "status": "RUNNING", "env": {"ATLAS_REQUEST_ID": "m1"}}
    assert wire.is_our_create(pod, name="n", marker="m1", name_is_ours=False)
    assert not wire.is_our_create(pod, name="n", marker="m2", name_is_ours=True)
    assert not wire.is_our_create({**pod, "status": "TERMINATED"}, name="n", marker="m1",
                                  name_is_ours=True)
    bare = {"name": "n", "status": "RUNNING"}
    assert wire.is_our_create(bare, name="n", marker="m", name_is_ours=True)
    assert not wire.is_our_create(bare, name="n", marker="m", name_is_ours=False)


# -- regressions found by fuzzing -------------------------------------------------------------
@pytest.mark.parametrize("count", [float("inf"), float("nan"), -2, True, "2", 2.0])
def test_odd_gpu_counts_read_as_one(count: Any) -> None:
    c = wire.compute_from_wire({"id": "p", "gpu": {"id": "NVIDIA H100 80GB HBM3", "count": count}})
    assert c.gpu_count == (2 if count == 2.0 and type(count) is float else 1)


@pytest.mark.parametrize("status", [["COMPLETED"], {"a": 1}, 3, None, "completed"])
def test_odd_job_statuses_never_raise(status: Any) -> None:
    job = wire.job_from_wire({"id": "j", "status": status, "executionTime": float("inf")}, "ep")
    assert job.status == ("completed" if status == "completed" else "in_queue")
    assert job.execution_time_ms is None


_status_values = st.one_of(st.text(max_size=12), st.sampled_from(list(wire.JOB_STATUS)), _json)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "status", "output", "error", "delayTime",
                                        "executionTime", "token"]), _status_values, max_size=7))
def test_any_job_shape_translates_without_raising(body: dict[str, Any]) -> None:
    job = wire.job_from_wire(body, "ep", "fallback-id")
    assert job.status in JOB_STATUSES and job.id and "token" not in job.raw


def test_nested_secrets_are_stripped_and_clean_parts_shared() -> None:
    pod = {"id": "p", "status": "RUNNING", "env": {"K": "v"},
           "ssh": {"proxy": {"host": "ssh.runpod.io", "token": "t0k"}},
           "runtime": {"ports": [{"private": 22, "public": 4022, "type": "tcp", "ip": "1.2.3.4"}]}}
    raw = wire.compute_from_wire(pod).raw
    assert "env" not in raw and raw["ssh"] == {"proxy": {"host": "ssh.runpod.io"}}
    assert raw["runtime"] is pod["runtime"]  # nothing secret in it: shared, not copied
    assert pod["env"] == {"K": "v"} and "token" in pod["ssh"]["proxy"]  # input untouched


@pytest.mark.parametrize(("value", "expected"), [
    ("pod_abc-1", "pod_abc-1"), ("a/b", "a%2Fb"), ("x y", "x%20y"), ("..", "%2E%2E"),
    (".", "%2E"), ("sync-1f-u1", "sync-1f-u1"), ("%2F", "%252F"), ("?q", "%3Fq"),
])
def test_ids_become_single_path_segments(value: str, expected: str) -> None:
    assert wire.segment(value) == expected
