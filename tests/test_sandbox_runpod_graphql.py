"""RunPod GraphQL in the sandbox: GPU types with spot prices, spot pods, pod mutations, errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from atlas_nb.sandbox import sandbox_key
from atlas_nb.sandbox.runpod.graphql import NO_CAPACITY
from atlas_nb.sandbox.server import Sandbox

AUTH = {"Authorization": f"Bearer {sandbox_key('runpod')}"}
A4000 = "NVIDIA RTX A4000"
RTX4090 = "NVIDIA GeForce RTX 4090"


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with Sandbox(
        clouds=["runpod"],
        start_server=False,
        validate=True,
        provision_delay_s=0,
        start_delay_s=0,
        attach=False,
    ) as sb:
        yield sb


@pytest.fixture
def sb(box: Sandbox) -> Iterator[Sandbox]:
    box.clear_violations()
    yield box


@pytest.fixture
def http(sb: Sandbox) -> Iterator[httpx.Client]:
    with sb.client(headers=AUTH) as client:
        yield client


def gql(http: httpx.Client, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    r = http.post("/runpod/graphql/graphql", json={"query": query, "variables": variables or {}})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


SPOT = """
mutation Spot($input: PodRentInterruptableInput!) {
  podRentInterruptable(input: $input) {
    id name desiredStatus costPerHr imageName machineId podType
  }
}
"""


def test_documented_lowest_price_query(http: httpx.Client) -> None:
    body = gql(
        http,
        '{ gpuTypes(input: {id: "NVIDIA RTX A4000"}) { id displayName '
        "lowestPrice(input: {gpuCount: 1, secureCloud: true}) "
        "{ stockStatus uninterruptablePrice availableGpuCounts minimumBidPrice } } }",
    )
    # the values of RunPod's own documentation example, plus our spot price
    assert body == {
        "data": {
            "gpuTypes": [
                {
                    "id": A4000,
                    "displayName": "RTX A4000",
                    "lowestPrice": {
                        "stockStatus": "High",
                        "uninterruptablePrice": 0.35,
                        "availableGpuCounts": [1, 2, 4],
                        "minimumBidPrice": 0.2,
                    },
                }
            ]
        }
    }


def test_gpu_types_carry_on_demand_and_spot_prices(http: httpx.Client) -> None:
    body = gql(
        http,
        "{ gpuTypes { id memoryInGb secureCloud communityCloud securePrice communityPrice "
        "secureSpotPrice communitySpotPrice maxGpuCount "
        "community: lowestPrice(input: {gpuCount: 2, secureCloud: false}) "
        "{ uninterruptablePrice minimumBidPrice } "
        "any: lowestPrice(input: {gpuCount: 1}) { uninterruptablePrice stockStatus } } }",
    )
    types = {t["id"]: t for t in body["data"]["gpuTypes"]}
    assert len(types) > 40
    rtx = types[RTX4090]
    assert (rtx["securePrice"], rtx["communityPrice"]) == (0.44, 0.31)
    assert (rtx["secureSpotPrice"], rtx["communitySpotPrice"]) == (0.29, 0.2)
    assert rtx["community"] == {"uninterruptablePrice": 0.31, "minimumBidPrice": 0.2}
    assert rtx["any"] == {"uninterruptablePrice": 0.31, "stockStatus": "High"}
    h200 = types["NVIDIA H200"]  # secure-only
    assert h200["communityCloud"] is False and h200["communityPrice"] is None
    assert h200["community"] == {"uninterruptablePrice": None, "minimumBidPrice": None}
    picked = gql(http, '{ gpuTypes(input: {ids: ["NVIDIA L4", "NVIDIA L40S"]}) { id } }')
    assert {t["id"] for t in picked["data"]["gpuTypes"]} == {"NVIDIA L4", "NVIDIA L40S"}


def test_spot_pod_is_a_pod_of_the_shared_store(sb: Sandbox, http: httpx.Client) -> None:
    created = gql(
        http,
        SPOT,
        {
            "input": {
                "bidPerGpu": 0.25,
                "gpuCount": 2,
                "gpuTypeId": RTX4090,
                "name": "atlas-spot",
                "imageName": "ghcr.io/me/srv:1",
                "cloudType": "COMMUNITY",
                "ports": "8000/http,22/tcp",
                "env": [{"key": "ATLAS_PRESHARED_KEY", "value": "t0k"}],
                "volumeInGb": 20,
                "volumeMountPath": "/workspace",
                "containerDiskInGb": 10,
                "minVcpuCount": 1,
                "minMemoryInGb": 1,
            }
        },
    )["data"]["podRentInterruptable"]
    assert created["desiredStatus"] == "RUNNING" and created["podType"] == "INTERRUPTABLE"
    assert created["costPerHr"] == 0.5  # the bid, per GPU, times the count
    pod = http.get(f"/runpod/rest/v2/pods/{created['id']}").json()
    assert pod["interruptible"] is True and pod["cloud"] == "COMMUNITY"
    assert pod["ports"] == ["8000/http", "22/tcp"]
    assert pod["mounts"] == {"persistent": {"size": 20, "path": "/workspace"}}
    assert sb.runpod.pod_env(created["id"]) == {"ATLAS_PRESHARED_KEY": "t0k"}
    sb.runpod.preempt(created["id"])
    assert http.get(f"/runpod/rest/v2/pods/{created['id']}").json()["status"] == "EXITED"
    assert sb.violations == []


def test_bid_below_minimum_and_no_capacity_are_graphql_errors(
    sb: Sandbox, http: httpx.Client
) -> None:
    low = gql(http, SPOT, {"input": {"bidPerGpu": 0.01, "gpuTypeId": RTX4090, "imageName": "i"}})
    assert low["data"] == {"podRentInterruptable": None}
    assert "below the minimum bid price of $0.200" in low["errors"][0]["message"]
    unknown = gql(
        http, SPOT, {"input": {"bidPerGpu": 9, "gpuTypeId": "NVIDIA Nope", "imageName": "i"}}
    )
    assert unknown["errors"][0]["message"] == NO_CAPACITY
    no_spot = gql(
        http,
        SPOT,
        {
            "input": {
                "bidPerGpu": 9,
                "gpuTypeId": "NVIDIA A100-SXM4-80GB",
                "cloudType": "SECURE",
                "imageName": "i",
            }
        },
    )
    assert no_spot["errors"][0]["message"] == NO_CAPACITY  # no secure spot market for it
    before = len(sb.runpod.pods)
    gql(
        http,
        SPOT,
        {"input": {"bidPerGpu": 9, "gpuTypeId": RTX4090, "gpuCount": 64, "imageName": "i"}},
    )
    assert len(sb.runpod.pods) == before


def test_on_demand_stop_resume_terminate(sb: Sandbox, http: httpx.Client) -> None:
    pod = gql(
        http,
        'mutation { podFindAndDeployOnDemand(input: {gpuTypeId: "NVIDIA L4", name: "od", '
        'imageName: "i", cloudType: SECURE, containerDiskInGb: 10, minVcpuCount: 1, '
        "minMemoryInGb: 1}) { id costPerHr podType } }",
    )["data"]["podFindAndDeployOnDemand"]
    assert pod["costPerHr"] == 0.43 and pod["podType"] == "RESERVED"
    pid = pod["id"]
    stopped = gql(
        http, f'mutation {{ podStop(input: {{podId: "{pid}"}}) {{ id desiredStatus costPerHr }} }}'
    )
    assert stopped["data"]["podStop"] == {"id": pid, "desiredStatus": "EXITED", "costPerHr": 0.0}
    again = gql(http, f'mutation {{ podStop(input: {{podId: "{pid}"}}) {{ id }} }}')
    assert "cannot stop a pod that is EXITED" in again["errors"][0]["message"]
    resumed = gql(
        http,
        f'mutation {{ podResume(input: {{podId: "{pid}", gpuCount: 1}}) {{ desiredStatus }} }}',
    )
    assert resumed["data"]["podResume"]["desiredStatus"] == "RUNNING"
    found = gql(
        http,
        f'{{ pod(input: {{podId: "{pid}"}}) '
        "{ id machine { gpuDisplayName } runtime { uptimeInSeconds } } }",
    )
    assert found["data"]["pod"]["machine"] == {"gpuDisplayName": "L4"}
    mine = gql(http, "{ myself { pods { id } } }")["data"]["myself"]["pods"]
    assert pid in [p["id"] for p in mine]
    terminated = gql(http, f'mutation {{ podTerminate(input: {{podId: "{pid}"}}) }}')
    assert terminated == {"data": {"podTerminate": None}}
    assert http.get(f"/runpod/rest/v2/pods/{pid}").status_code == 404
    assert gql(http, f'{{ pod(input: {{podId: "{pid}"}}) {{ id }} }}') == {"data": {"pod": None}}
    assert sb.violations == []


def test_auth_and_malformed_requests(sb: Sandbox) -> None:
    with sb.client() as anon:
        assert (
            anon.post("/runpod/graphql/graphql", json={"query": "{ myself { id } }"}).status_code
            == 401
        )
        bad = anon.post(
            "/runpod/graphql/graphql",
            json={"query": "{ myself { id } }"},
            headers={"Authorization": "Bearer wrong"},
        )
        assert bad.status_code == 401 and bad.json()["errors"]
        in_url = anon.post(
            f"/runpod/graphql/graphql?api_key={sandbox_key('runpod')}",
            json={"query": "{ myself { id } }"},
        )
        assert in_url.status_code == 200  # RunPod accepts it ...
        assert any("API key sent in the URL" in v for v in sb.violations)  # ... we flag it
    with sb.client(headers=AUTH) as http:
        syntax = http.post("/runpod/graphql/graphql", json={"query": "{ gpuTypes { "})
        assert syntax.status_code == 200 and "Syntax Error" in syntax.json()["errors"][0]["message"]
        unknown = http.post("/runpod/graphql/graphql", json={"query": "{ nope }"})
        assert "Cannot query field 'nope'" in unknown.json()["errors"][0]["message"]
        assert http.post("/runpod/graphql/graphql", content=b"not json").status_code == 400
        assert http.get("/runpod/graphql/graphql").status_code == 405
