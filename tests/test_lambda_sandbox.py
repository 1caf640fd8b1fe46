"""The sandbox's Lambda cloud over loopback: the v1 API as the spec describes it, and the
Lambda provider against it. Time is a ``ManualClock`` shared by the sandbox, the provider's
launch gate and its ``sleep``, so lifecycles and the 12 s launch limit run without waiting.
Every request and response is validated against the spec; the only violations allowed are
the 429s the spec does not declare."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb import sandbox
from atlas_nb.providers.lambda_labs import LambdaLabs
from atlas_nb.providers.lambda_labs.launch_gate import LaunchGate
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.lambda_labs import LambdaCloud
from atlas_nb.sandbox.server import Sandbox

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

CLOCK = ManualClock()
KEY = sandbox.sandbox_key("lambda_labs")
API = "/lambda_labs/rest/api/v1"
LAUNCH = f"{API}/instance-operations/launch"
BOOT_S, TERMINATE_S, RETENTION_S = 5.0, 3.0, 60.0
SPEC_REGIONS: set[str] = set()
INTENDED: set[str] = set()
"""Request-side violations of requests a test broke the spec with on purpose."""


class ManualLambda(LambdaLabs):
    """The provider on the sandbox's manual clock: its gate reads it, its sleeps advance it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(sleep=CLOCK.advance, gate=GATE, **kwargs)


GATE = LaunchGate(CLOCK.time)


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    box = Sandbox(clouds=["lambda_labs"], validate=True, clock=CLOCK,
                  provision_delay_s=BOOT_S, start_delay_s=BOOT_S,
                  options={"lambda_labs": {"terminate_delay_s": TERMINATE_S,
                                           "terminated_retention_s": RETENTION_S}})
    with box:
        assert box.url.startswith("http://127.0.0.1:")
        from atlas_nb.sandbox.schemas import load_spec

        spec = load_spec("lambda/lambda-cloud-api-openapi-1.8.3.json")
        SPEC_REGIONS.update(spec["components"]["schemas"]["PublicRegionCode"]["enum"])
        yield box
        unexpected = [v for v in box.violations
                      if v not in INTENDED and "Unknown response http status: 429" not in v]
        assert unexpected == [], "\n".join(unexpected)


@pytest.fixture
def cloud(sb: Sandbox) -> LambdaCloud:
    lam: LambdaCloud = sb.lambda_labs
    return lam


@pytest.fixture
def http(sb: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sb.url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


@pytest.fixture(autouse=True)
def _fresh_slot(sb: Sandbox) -> Iterator[None]:
    CLOCK.advance(60)  # every test starts with the launch limit spent
    yield
    sb.faults.clear()
    sb.lambda_labs.account_inactive = False


@pytest.fixture
def bad_requests(sb: Sandbox) -> Iterator[None]:
    """For a test that breaks the spec on purpose: the sandbox records the request (and only
    the request: its answer must still match the spec)."""
    before = len(sb.violations)
    yield
    new = sb.violations[before:]
    assert all(": request: " in v for v in new), "\n".join(new)
    INTENDED.update(new)


def _launch_body(**over: Any) -> dict[str, Any]:
    return {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10",
            "ssh_key_names": ["k"], "name": "raw", **over}


def _launch(http: httpx.Client, **over: Any) -> str:
    r = http.post(LAUNCH, json=_launch_body(**over))
    assert r.status_code == 200, r.text
    [iid] = r.json()["data"]["instance_ids"]
    CLOCK.advance(12)
    return str(iid)


def _get(http: httpx.Client, iid: str) -> dict[str, Any]:
    r = http.get(f"{API}/instances/{iid}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def _error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] == code and err["message"]
    return err


# -- the API ------------------------------------------------------------------------------------
def test_instance_types_carry_catalog_prices_and_capacity(http: httpx.Client) -> None:
    data = http.get(f"{API}/instance-types").json()["data"]
    assert len(data) == 24
    h100 = data["gpu_1x_h100_sxm5"]["instance_type"]
    assert (h100["price_cents_per_hour"], h100["specs"]["gpus"]) == (429, 1)
    assert data["gpu_8x_b200_sxm6"]["instance_type"]["price_cents_per_hour"] == 5352
    assert data["gpu_1x_gh200"]["regions_with_capacity_available"] == []
    regions = {r["name"] for item in data.values()
               for r in item["regions_with_capacity_available"]}
    assert regions and regions <= SPEC_REGIONS
    assert data["gpu_1x_a10"]["regions_with_capacity_available"][0] == {
        "name": "us-east-1", "description": "Virginia, USA"}


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Token {KEY}", "Basic " + base64.b64encode(b"wrong:").decode()],
)
@pytest.mark.usefixtures("bad_requests")
def test_bad_keys_get_the_unauthorized_envelope(sb: Sandbox, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = httpx.get(f"{sb.url}{API}/instances", headers=headers)
    err = _error(r, 401, "global/invalid-api-key")
    assert err["suggestion"]


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {KEY}", "Basic " + base64.b64encode(f"{KEY}:".encode()).decode(),
     "Basic " + base64.b64encode(KEY.encode()).decode(), f"Basic {KEY}"],
)
def test_bearer_and_basic_keys_are_accepted(sb: Sandbox, authorization: str) -> None:
    r = httpx.get(f"{sb.url}{API}/instances", headers={"Authorization": authorization})
    assert r.status_code == 200 and isinstance(r.json()["data"], list)


def test_account_inactive_is_403(http: httpx.Client, cloud: LambdaCloud) -> None:
    cloud.account_inactive = True
    _error(http.get(f"{API}/instances"), 403, "global/account-inactive")
    with pytest.raises(atlas.Forbidden):
        atlas.list_compute(provider=ManualLambda)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"ssh_key_names": []}, 400, "global/invalid-parameters"),
        ({"ssh_key_names": ["a", "b"]}, 400, "global/invalid-parameters"),
        ({"region_name": "mars-1"}, 400, "global/invalid-parameters"),
        ({"name": "n" * 65}, 400, "global/invalid-parameters"),
        ({"instance_type_name": "gpu_3x_nothing"}, 404, "global/object-does-not-exist"),
        ({"region_name": "us-south-1"}, 400, "instance-operations/launch/insufficient-capacity"),
        ({"instance_type_name": "gpu_1x_gh200"}, 400,
         "instance-operations/launch/insufficient-capacity"),
        ({"file_system_names": ["nope"]}, 404, "global/object-does-not-exist"),
    ],
)
@pytest.mark.usefixtures("bad_requests")
def test_launch_refusals(http: httpx.Client, cloud: LambdaCloud, body: dict[str, Any],
                         status: int, code: str) -> None:
    before = len(cloud.instances)
    _error(http.post(LAUNCH, json=_launch_body(**body)), status, code)
    assert len(cloud.instances) == before


@pytest.mark.usefixtures("bad_requests")
def test_launch_without_json_is_invalid_parameters(http: httpx.Client) -> None:
    r = http.post(LAUNCH, content=b"{nope", headers={"content-type": "application/json"})
    _error(r, 400, "global/invalid-parameters")


def test_launch_is_limited_to_one_per_interval(http: httpx.Client, cloud: LambdaCloud) -> None:
    assert cloud.launch_interval_s == 12.0
    first = http.post(LAUNCH, json=_launch_body())
    assert first.status_code == 200
    second = http.post(LAUNCH, json=_launch_body())
    assert (second.status_code, second.text) == (429, "error code: 1015")
    CLOCK.advance(11.5)
    assert http.post(LAUNCH, json=_launch_body()).status_code == 429  # refusals don't count
    CLOCK.advance(0.5)
    assert http.post(LAUNCH, json=_launch_body()).status_code == 200
    # other calls are not limited
    assert http.get(f"{API}/instances").status_code == 200


def test_lifecycle_booting_active_terminating_terminated(http: httpx.Client,
                                                         cloud: LambdaCloud) -> None:
    iid = _launch(http, name="life")  # _launch advanced the clock 12 s: past BOOT_S
    assert _get(http, iid)["status"] == "active"
    iid = _launch(http, name="life2")
    CLOCK.advance(-12)  # look again just after the launch
    booting = _get(http, iid)
    assert booting["status"] == "booting" and "ip" not in booting
    assert booting["actions"]["restart"]["available"] is False
    CLOCK.advance(BOOT_S)
    active = _get(http, iid)
    assert active["status"] == "active" and active["ip"] and active["jupyter_token"]
    assert all(a["available"] for a in active["actions"].values())
    r = http.post(f"{API}/instance-operations/terminate", json={"instance_ids": [iid]})
    [term] = r.json()["data"]["terminated_instances"]
    assert term["status"] == "terminating"
    again = http.post(f"{API}/instance-operations/terminate", json={"instance_ids": [iid]})
    assert again.status_code == 200  # still there while terminating
    assert iid in [i["id"] for i in http.get(f"{API}/instances").json()["data"]]
    CLOCK.advance(TERMINATE_S)
    assert _get(http, iid)["status"] == "terminated"
    assert iid not in [i["id"] for i in http.get(f"{API}/instances").json()["data"]]
    CLOCK.advance(RETENTION_S)
    _error(http.get(f"{API}/instances/{iid}"), 404, "global/object-does-not-exist")
    _error(http.post(f"{API}/instance-operations/terminate", json={"instance_ids": [iid]}),
           404, "global/object-does-not-exist")
    assert cloud.instances[iid]["status"] == "terminated"


@pytest.mark.usefixtures("bad_requests")
def test_restart_rename_and_unknown_ids(http: httpx.Client) -> None:
    iid = _launch(http, name="before")
    r = http.post(f"{API}/instance-operations/restart", json={"instance_ids": [iid]})
    [inst] = r.json()["data"]["restarted_instances"]
    assert inst["status"] == "booting"
    CLOCK.advance(BOOT_S)
    assert _get(http, iid)["status"] == "active"
    renamed = http.post(f"{API}/instances/{iid}", json={"name": "after"})
    assert renamed.json()["data"]["name"] == "after"
    _error(http.post(f"{API}/instances/{iid}", json={"name": "x" * 65}), 400,
           "global/invalid-parameters")
    missing = "0" * 32
    _error(http.get(f"{API}/instances/{missing}"), 404, "global/object-does-not-exist")
    _error(http.post(f"{API}/instance-operations/restart", json={"instance_ids": [missing]}),
           404, "global/object-does-not-exist")


def test_unhealthy_and_preempted(http: httpx.Client, cloud: LambdaCloud) -> None:
    sick, gone = _launch(http, name="sick"), _launch(http, name="gone")
    cloud.make_unhealthy(sick)
    cloud.preempt(gone)
    assert _get(http, sick)["status"] == "unhealthy"
    assert _get(http, gone)["status"] == "preempted"
    assert atlas.get_compute(sick, provider=ManualLambda).status == "failed"
    assert atlas.get_compute(gone, provider=ManualLambda).status == "terminated"


def test_user_data_is_kept_but_never_returned(http: httpx.Client, cloud: LambdaCloud) -> None:
    iid = _launch(http, user_data="#cloud-config\nruncmd:\n- [docker, run, -e, A=1, img]\n")
    assert cloud.pod_env(iid) == {"A": "1"}
    assert "user_data" not in json.dumps(http.get(f"{API}/instances").json())
    assert "user_data" not in _get(http, iid)


def test_capacity_is_settable(http: httpx.Client, cloud: LambdaCloud) -> None:
    cloud.set_capacity("gpu_1x_gh200", ["us-east-3"])
    try:
        item = http.get(f"{API}/instance-types").json()["data"]["gpu_1x_gh200"]
        assert item["regions_with_capacity_available"][0]["name"] == "us-east-3"
        _launch(http, instance_type_name="gpu_1x_gh200", region_name="us-east-3")
    finally:
        cloud.set_capacity("gpu_1x_gh200", [])
    with pytest.raises(ValueError, match="unknown regions"):
        cloud.set_capacity("gpu_1x_gh200", ["europe-south-1"])


def test_ssh_keys_quota_and_file_systems_options() -> None:
    box = Sandbox(start_server=False, clouds=["lambda_labs"], validate=True, attach=False,
                  options={"lambda_labs": {"ssh_keys": ["mine"], "quota": 1,
                                           "launch_interval_s": 0,
                                           "file_systems": {"data": "us-west-1"}}})
    with box, box.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        _error(client.post(LAUNCH, json=_launch_body(ssh_key_names=["theirs"])), 404,
               "global/object-does-not-exist")
        _error(client.post(LAUNCH, json=_launch_body(ssh_key_names=["mine"],
                                                     file_system_names=["data"])),
               400, "instance-operations/launch/file-system-in-wrong-region")
        ok = client.post(LAUNCH, json=_launch_body(ssh_key_names=["mine"], region_name="us-west-1",
                                                   file_system_names=["data"]))
        assert ok.status_code == 200
        [iid] = ok.json()["data"]["instance_ids"]
        assert client.get(f"{API}/instances/{iid}").json()["data"]["file_system_names"] == ["data"]
        _error(client.post(LAUNCH, json=_launch_body(ssh_key_names=["mine"])), 400,
               "global/quota-exceeded")
        assert box.violations == []


def test_injected_faults_use_lambdas_envelope(http: httpx.Client, sb: Sandbox) -> None:
    sb.faults("lambda_labs:GET /api/v1/instances", error_rate={503: 1.0}, count=1)
    _error(http.get(f"{API}/instances"), 503, "global/internal-error")


# -- the provider against it --------------------------------------------------------------------
def _spawn(**fields: Any) -> atlas.Compute:
    fields.setdefault("image", "atlas/test:1")
    fields.setdefault("provider_opts", {"ssh_key_names": ["sandbox-key"]})
    return atlas.spawn_compute(provider=ManualLambda, **fields)


def test_provider_round_trip(cloud: LambdaCloud) -> None:
    c = _spawn(gpu="a10", ports=[(8000, "http")], auth="bearer", name="rt")
    assert (c.status, c.region, c.gpu_type, c.cost_per_hour) == ("provisioning", "us-east-1",
                                                                 "a10", 1.29)
    assert c.auth is not None and cloud.pod_env(c.id)["ATLAS_PRESHARED_KEY"] == c.auth.token
    CLOCK.advance(BOOT_S)
    ready = atlas.wait_ready(c.id, provider=ManualLambda, timeout_s=5)
    ip = cloud.instances[c.id]["ip"]
    assert ready.url == f"http://{ip}:8000"
    assert c.auth.token not in json.dumps(ready.raw)
    atlas.terminate(c.id, provider=ManualLambda)
    atlas.terminate(c.id, provider=ManualLambda)
    CLOCK.advance(TERMINATE_S + RETENTION_S)
    atlas.terminate(c.id, provider=ManualLambda)
    with pytest.raises(atlas.NotFound):
        atlas.get_compute(c.id, provider=ManualLambda)


def test_provider_respects_the_launch_limit_without_429s(sb: Sandbox, cloud: LambdaCloud) -> None:
    before = sb.stats()["statuses"].get(429, 0)
    start = CLOCK.time()
    computes = [_spawn(gpu=None, name=f"burst-{i}") for i in range(3)]
    assert len({c.id for c in computes}) == 3
    assert sb.stats()["statuses"].get(429, 0) == before
    assert CLOCK.time() - start >= 2 * cloud.launch_interval_s  # the gate waited, twice


def test_provider_rides_out_a_429_without_a_duplicate(sb: Sandbox, cloud: LambdaCloud) -> None:
    class Eager(ManualLambda):
        """A second process: its own gate, unaware of the other's launches."""

        def __init__(self, **kwargs: Any) -> None:
            LambdaLabs.__init__(self, sleep=CLOCK.advance, gate=LaunchGate(CLOCK.time), **kwargs)

    _spawn(gpu=None, name="other-process")
    n, refused = len(cloud.instances), sb.stats()["statuses"].get(429, 0)
    start = CLOCK.time()
    c = atlas.spawn_compute(provider=Eager, gpu=None, image="i", name="eager",
                            provider_opts={"ssh_key_names": ["k"]})
    assert len(cloud.instances) == n + 1 and c.name == "eager"
    assert sb.stats()["statuses"].get(429, 0) == refused + 1  # refused once, then waited
    assert CLOCK.time() - start == cloud.launch_interval_s


def test_lost_launch_answer_makes_no_duplicate(sb: Sandbox, cloud: LambdaCloud) -> None:
    rule = sb.faults("lambda_labs:POST /api/v1/instance-operations/launch",
                     lost_response_rate=1.0, count=1)
    n = len(cloud.instances)
    c = _spawn(gpu="a10", name="lost-once")
    assert rule.injected["lost"] == 1
    assert len(cloud.instances) == n + 1 and c.id in cloud.instances


def test_provider_capacity_error_names_regions(cloud: LambdaCloud) -> None:
    with pytest.raises(atlas.ProviderError) as info:
        _spawn(gpu="h100", provider_opts={"ssh_key_names": ["k"], "region_name": "us-east-1"})
    assert "regions with capacity for gpu_1x_h100_sxm5 now: us-south-2, us-south-3" in str(
        info.value)
    with pytest.raises(atlas.ProviderError, match="no capacity for gpu_1x_gh200 in any region"):
        _spawn(gpu="gh200")


def test_provider_catalog_from_the_sandbox() -> None:
    catalog = {g.id: g for g in atlas.list_gpu_types(provider=ManualLambda)}
    assert len(catalog) == 22  # 24 types, 2 of them CPU-only
    assert catalog["gpu_8x_h100_sxm5"].price_per_hour == 31.92
    assert catalog["gpu_8x_h100_sxm5"].regions == ("us-west-3", "us-south-2", "us-south-3")
    assert catalog["gpu_1x_gh200"].stock == "none"
    assert catalog["gpu_8x_v100_n"].canonical == "v100"
