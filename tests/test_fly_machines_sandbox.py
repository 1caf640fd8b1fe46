"""Fly Machines in the sandbox: every route, its errors, the lifecycle on a manual clock, ``wait``.

Runs in-process (``sb.client()``) with contract validation on: each test that only
sends well-formed requests ends with ``sb.violations == []``, i.e. every request and
response matched the vendored Fly spec (with the documented ``ERRATA``).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from atlas_nb.sandbox import fly as fly_cloud
from atlas_nb.sandbox import sandbox_key
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.contract import Contract
from atlas_nb.sandbox.schemas import component_errors
from atlas_nb.sandbox.server import Sandbox

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

KEY = sandbox_key("fly")
AUTH = {"Authorization": f"Bearer {KEY}"}
SPEC = "fly/machines-openapi3.json"
PROVISION, START, STOP, DESTROY = 2.0, 3.0, 4.0, 5.0


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    options = {"fly": {"apps": ["app-a"], "stop_delay_s": STOP, "destroy_delay_s": DESTROY,
                       "wait_poll_s": 0.005}}
    sb = Sandbox(clouds=["fly"], start_server=False, validate=True, clock=ManualClock(),
                 provision_delay_s=PROVISION, start_delay_s=START, options=options,
                 attach=False)
    with sb:
        yield sb


@pytest.fixture
def sb(box: Sandbox) -> Iterator[Sandbox]:
    box.clear_violations()
    box.faults.clear()
    yield box
    box.faults.clear()


@pytest.fixture
def clock(sb: Sandbox) -> ManualClock:
    assert isinstance(sb.clock, ManualClock)
    return sb.clock


@pytest.fixture
def api(sb: Sandbox) -> Iterator[httpx.Client]:
    with sb.client(base_url=f"{sb.url}/fly/machines/v1", headers=AUTH) as client:
        yield client


def create(api: httpx.Client, app: str = "app-a", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "m1", "config": {"image": "nginx:1", "env": {"K": "v"}}}
    body.update(overrides)
    r = api.post(f"/apps/{app}/machines", json=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def state(api: httpx.Client, machine: dict[str, Any], app: str = "app-a") -> str:
    r = api.get(f"/apps/{app}/machines/{machine['id']}")
    assert r.status_code == 200, r.text
    return str(r.json()["state"])


def assert_error(r: httpx.Response, status: int, text: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert component_errors(SPEC, "ErrorResponse", body) == []
    assert text in body["error"], body
    return body  # type: ignore[no-any-return]


# -- auth -----------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [f"Bearer {KEY}", f"FlyV1 {KEY}"])
def test_bearer_and_flyv1_are_accepted(sb: Sandbox, header: str) -> None:
    with sb.client(base_url=f"{sb.url}/fly/machines/v1") as c:
        assert c.get("/apps/app-a", headers={"Authorization": header}).status_code == 200
    assert sb.violations == []


@pytest.mark.parametrize(("headers", "message"), [
    ({}, "You must be authenticated"),
    ({"Authorization": "Bearer wrong-key"}, "Authenticate: token validation error"),
    ({"Authorization": "FlyV1 fm2_not-ours"}, "Authenticate: token validation error"),
    ({"Authorization": f"Basic {KEY}"}, "Authenticate: token validation error"),
])
def test_a_missing_or_wrong_token_is_401(sb: Sandbox, headers: dict[str, str],
                                         message: str) -> None:
    with sb.client(base_url=f"{sb.url}/fly/machines/v1") as c:
        assert_error(c.get("/apps/app-a", headers=headers), 401, message)
    assert sb.violations == []


# -- apps -----------------------------------------------------------------------------------
def test_apps_list_create_show_delete(sb: Sandbox, api: httpx.Client) -> None:
    assert_error(api.get("/apps"), 400, "org_slug is required")
    assert sb.violations == [
        "fly/machines GET /v1/apps: request: Missing required query parameter: org_slug"]
    sb.clear_violations()
    created = api.post("/apps", json={"name": "app-new", "org_slug": "personal"})
    assert (created.status_code, created.content) == (201, b"")
    assert_error(api.post("/apps", json={"name": "app-new", "org_slug": "personal"}), 422,
                 "already been taken")
    assert_error(api.post("/apps", json={"name": "x", "org_slug": "acme"}), 404, "acme")
    listing = api.get("/apps", params={"org_slug": "personal"}).json()
    assert {"app-a", "app-new"} <= {a["name"] for a in listing["apps"]}
    assert listing["total_apps"] == len(listing["apps"])
    machine = create(api, "app-new")
    app = api.get("/apps/app-new").json()
    assert (app["name"], app["machine_count"], app["organization"]["slug"]) == (
        "app-new", 1, "personal")
    deleted = api.delete("/apps/app-new")
    assert (deleted.status_code, deleted.content) == (202, b"")
    assert_error(api.get("/apps/app-new"), 404, "app not found")
    assert_error(api.get(f"/apps/app-new/machines/{machine['id']}"), 404, "app not found")
    assert sb.violations == []


# -- machines -------------------------------------------------------------------------------
def test_the_lifecycle_follows_the_clock(sb: Sandbox, api: httpx.Client,
                                         clock: ManualClock) -> None:
    m = create(api)
    assert m["state"] == "created" and m["config"]["env"] == {"K": "v"}
    assert m["config"]["guest"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}
    assert len(m["instance_id"]) == 26 and m["private_ip"].startswith("fdaa:")
    clock.advance(PROVISION)
    assert state(api, m) == "starting"
    clock.advance(START)
    assert state(api, m) == "started"

    assert api.post(f"/apps/app-a/machines/{m['id']}/stop", json={}).json() == {"ok": True}
    assert state(api, m) == "stopping"
    assert_error(api.post(f"/apps/app-a/machines/{m['id']}/start"), 412,
                 "current state 'stopping'")
    clock.advance(STOP)
    assert state(api, m) == "stopped"
    started = api.post(f"/apps/app-a/machines/{m['id']}/start")
    assert started.json() == {"previous_state": "stopped", "migrated": False, "new_host": ""}
    clock.advance(START)
    assert state(api, m) == "started"

    assert_error(api.delete(f"/apps/app-a/machines/{m['id']}"), 412, "force=true")
    r = api.delete(f"/apps/app-a/machines/{m['id']}", params={"force": "true"})
    assert r.json() == {"ok": True}
    assert state(api, m) == "destroying"
    clock.advance(DESTROY)
    assert state(api, m) == "destroyed"  # still readable by id, as on Fly
    assert_error(api.delete(f"/apps/app-a/machines/{m['id']}", params={"force": "true"}),
                 404, "machine not found")
    events = api.get(f"/apps/app-a/machines/{m['id']}").json()["events"]
    assert [e["type"] for e in events] == ["destroy", "start", "stop", "launch"]
    assert sb.violations == []


def test_list_filters(sb: Sandbox, api: httpx.Client, clock: ManualClock) -> None:
    api.post("/apps", json={"name": "app-list", "org_slug": "personal"})
    a = create(api, "app-list", name="a", region="ams")
    b = create(api, "app-list", name="b", skip_launch=True)
    gone = create(api, "app-list", name="c")
    api.delete(f"/apps/app-list/machines/{gone['id']}", params={"force": "true"})
    clock.advance(PROVISION + START + DESTROY)

    def names(**params: str) -> list[str]:
        r = api.get("/apps/app-list/machines", params=params)
        assert r.status_code == 200, r.text
        return sorted(m["name"] for m in r.json())

    assert names() == ["a", "b"]
    assert names(include_deleted="true") == ["a", "b", "c"]
    assert names(region="ams") == ["a"]
    assert names(state="created") == ["b"]
    assert names(state="started,created") == ["a", "b"]
    summary = api.get("/apps/app-list/machines", params={"summary": "true"}).json()
    assert all("config" not in m and "events" not in m for m in summary)
    assert state(api, a, "app-list") == "started" and state(api, b, "app-list") == "created"
    assert sb.violations == []


@pytest.mark.parametrize(("config", "status", "message"), [
    ({"guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 300}}, 400, "multiple of 256"),
    ({"guest": {"cpu_kind": "shared", "cpus": 3}}, 400, "invalid guest.cpus 3"),
    ({"guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 4096}}, 400, "between 256 and"),
    ({"guest": {"cpu_kind": "turbo"}}, 400, "cpu_kind"),
    ({"guest": {"cpu_kind": "shared", "gpu_kind": "l40s"}}, 400, "performance"),
    ({"guest": {"cpu_kind": "performance", "cpus": 8, "memory_mb": 32768,
                "gpu_kind": "h100"}}, 400, "gpu_kind"),
    ({"image": ""}, 400, "image is required"),
    ({"guest": {"cpus": "two"}}, 400, "$.config.guest.cpus"),
])
def test_machine_configs_fly_refuses(sb: Sandbox, api: httpx.Client, config: dict[str, Any],
                                     status: int, message: str) -> None:
    body = {"config": {"image": "nginx:1", **config}}
    assert_error(api.post("/apps/app-a/machines", json=body), status, message)


def test_gpus_only_where_fly_hosts_them(sb: Sandbox, api: httpx.Client) -> None:
    guest = {"cpu_kind": "performance", "cpus": 8, "memory_mb": 32768, "gpu_kind": "l40s",
             "gpus": 1}
    body = assert_error(
        api.post("/apps/app-a/machines", json={"region": "iad", "config": {
            "image": "img:1", "guest": guest}}), 412, "regions with l40s: ord")
    assert body["status"] == "insufficient_capacity"
    m = create(api, region="ord", config={"image": "img:1", "guest": guest})
    assert m["region"] == "ord" and m["config"]["guest"]["gpu_kind"] == "l40s"
    assert_error(api.post("/apps/app-a/machines", json={"region": "mars", "config": {
        "image": "img:1"}}), 400, "invalid region 'mars'")
    assert sb.violations == []


def test_unknown_machines_routes_and_bodies(sb: Sandbox, api: httpx.Client) -> None:
    assert_error(api.get("/apps/app-a/machines/00000000000000"), 404, "machine not found")
    assert_error(api.get("/apps/nope/machines"), 404, "app not found")
    bad = api.post("/apps/app-a/machines", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert_error(bad, 400, "not valid JSON")


# -- wait -----------------------------------------------------------------------------------
def held_by_server(sb: Sandbox) -> None:
    """Return once a request is in flight in the sandbox (the wait under test)."""
    deadline = time.monotonic() + 10
    while sb.stats()["in_flight"] < 1:
        assert time.monotonic() < deadline, "the wait request never reached the sandbox"
        time.sleep(0.005)


def test_wait_answers_at_once_when_the_state_is_reached(sb: Sandbox, api: httpx.Client,
                                                        clock: ManualClock) -> None:
    m = create(api)
    clock.advance(PROVISION + START)
    r = api.get(f"/apps/app-a/machines/{m['id']}/wait", params={"state": "started"})
    assert r.status_code == 200
    assert r.json()["ok"] is True and r.json()["state"] == "started"
    assert r.json()["version"] == m["instance_id"]
    settled = api.get(f"/apps/app-a/machines/{m['id']}/wait", params={"state": "settled"})
    assert settled.json()["state"] == "started"
    assert sb.violations == []


def test_wait_is_408_when_the_clock_passes_the_timeout(sb: Sandbox, api: httpx.Client,
                                                       clock: ManualClock) -> None:
    m = create(api, skip_launch=True)  # stays "created"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(api.get, f"/apps/app-a/machines/{m['id']}/wait",
                              params={"state": "started", "timeout": "600"})
        held_by_server(sb)
        # While that wait is held, the event loop still serves other requests.
        for _ in range(3):
            assert state(api, m) == "created"
        assert not pending.done()
        clock.advance(60.5)  # the server caps a wait at 60 s whatever timeout says
        r = pending.result(timeout=10)
    body = assert_error(r, 408, "deadline_exceeded")
    assert "did not reach state started within 60s" in body["error"]
    assert sb.violations == []


def test_wait_returns_once_the_machine_gets_there(sb: Sandbox, api: httpx.Client,
                                                  clock: ManualClock) -> None:
    m = create(api)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(api.get, f"/apps/app-a/machines/{m['id']}/wait",
                              params={"state": "started", "timeout": "30"})
        assert state(api, m) == "created" and not pending.done()
        clock.advance(PROVISION + START)
        r = pending.result(timeout=10)
    assert r.status_code == 200 and r.json()["state"] == "started"


@pytest.mark.parametrize(("params", "message"), [
    ({"state": "running"}, "invalid state 'running'"),
    ({"state": "stopped"}, "instance_id (version) is required"),
    ({"state": "started", "timeout": "soon"}, "invalid timeout"),
])
def test_wait_refuses_bad_parameters(sb: Sandbox, api: httpx.Client, params: dict[str, str],
                                     message: str) -> None:
    m = create(api)
    assert_error(api.get(f"/apps/app-a/machines/{m['id']}/wait", params=params), 400, message)


def test_wait_for_stopped_with_the_deprecated_instance_id(sb: Sandbox, api: httpx.Client,
                                                         clock: ManualClock) -> None:
    m = create(api)
    clock.advance(PROVISION + START)
    api.post(f"/apps/app-a/machines/{m['id']}/stop")
    clock.advance(STOP)
    r = api.get(f"/apps/app-a/machines/{m['id']}/wait",
                params={"state": "stopped", "instance_id": m["instance_id"]})
    assert r.status_code == 200 and r.json()["state"] == "stopped"
    assert sb.violations == []


# -- platform, faults, contract ---------------------------------------------------------------
def test_regions(sb: Sandbox, api: httpx.Client) -> None:
    body = api.get("/platform/regions").json()
    assert body["nearest"] == "iad"
    assert {"ord", "iad", "sjc", "syd", "ams"} <= {r["code"] for r in body["regions"]}
    assert sb.violations == []


def test_placements_count_zero_answers_org_limits_not_free_capacity(
    sb: Sandbox, api: httpx.Client
) -> None:
    # Spec, main.getPlacementsRequest.count: "Defaults to 0, which returns the org-specific
    # limit for each region"; a count N simulates placing N machines.
    def where(compute: dict[str, Any], **extra: Any) -> dict[str, int]:
        r = api.post("/platform/placements",
                     json={"org_slug": "personal", "compute": compute, **extra})
        assert r.status_code == 200, r.text
        return {p["region"]: p["count"] for p in r.json()["regions"]}

    limit = sb.fly.state.placement_limit
    l40s = {"cpu_kind": "performance", "cpus": 8, "memory_mb": 32768, "gpu_kind": "l40s",
            "gpus": 1}
    a100 = {**l40s, "gpu_kind": "a100-sxm4-80gb"}
    assert where(l40s) == {"ord": limit}  # the org's limit, whatever is free
    assert where(a100) == {"iad": limit, "sjc": limit, "syd": limit}
    assert where(a100, region="sjc,ams") == {"sjc": limit}
    free = sb.fly.state.free_slots("ord", "l40s")
    create(api, region="ord", config={"image": "img:1", "guest": l40s})
    assert where(l40s) == ({"ord": limit} if free > 1 else {})  # a limit: unmoved by a create
    assert where(a100, count=10) == {"iad": 8, "sjc": 2}  # N machines spread in region order
    assert where(l40s, count=1) == ({"ord": 1} if free > 1 else {})
    assert len(where({"cpu_kind": "shared", "cpus": 1, "memory_mb": 256})) > 10
    assert_error(api.post("/platform/placements", json={"compute": l40s}), 400, "org_slug")
    sb.clear_violations()  # that request broke the spec on purpose
    sb.fly.set_capacity("ord", [])
    try:
        assert where(l40s) == {}
    finally:
        sb.fly.set_capacity("ord", ["a10", "l40s", "a100-pcie-40gb"])
    assert sb.violations == []


def test_injected_faults_use_the_error_response_shape(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults("fly:GET /v1/apps/*", rate_limit_429=1.0, retry_after_s=7, count=1)
    r = api.get("/apps/app-a")
    assert_error(r, 429, "rate limit")
    assert r.headers["retry-after"] == "7"
    sb.faults.clear()
    sb.faults("fly/machines:GET /v1/apps/*", error_rate={503: 1.0})
    assert_error(api.get("/apps/app-a"), 503, "injected fault")


def test_the_contract_check_is_really_on(sb: Sandbox, api: httpx.Client) -> None:
    api.get("/apps/app-a/machines", params={"name": "m1"})  # not a parameter of the spec
    assert any("query parameter 'name' is not declared" in v for v in sb.violations)
    sb.clear_violations()
    api.post("/apps", json={"name": 5, "org_slug": "personal"})  # name must be a string
    assert any("POST /v1/apps: request" in v for v in sb.violations), sb.violations


def test_the_errata_patch_only_what_the_spec_gets_wrong() -> None:
    from openapi_core import OpenAPI
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    from atlas_nb.sandbox.schemas import load_spec

    with pytest.raises(OpenAPIValidationError, match="Machines_update_metadata"):
        OpenAPI.from_dict(load_spec(SPEC))  # why the operationId erratum exists
    contract = Contract(SPEC, fly_cloud.ERRATA)
    contract.prepare()  # builds, now that the document is valid
    pointers = [p for p, _ in fly_cloud.ERRATA]
    assert all(p.startswith("/paths/") for p in pointers)
    assert len(pointers) == len(set(pointers)), "each place is patched once"
    stop = "/paths/~1apps~1{app_name}~1machines~1{machine_id}~1stop/post/responses/200"
    assert dict(fly_cloud.ERRATA)[stop]["content"]["application/json"]["schema"] == {
        "type": "object", "properties": {"ok": {"type": "boolean"}}}
    assert len(fly_cloud.ERRATA_SOURCES) == 3


def test_test_helpers_expose_the_env_and_can_crash_a_machine(
    sb: Sandbox, api: httpx.Client, clock: ManualClock
) -> None:
    m = create(api)
    cid = f"app-a/{m['id']}"
    assert sb.fly.machine_env(cid) == {"K": "v"}
    assert sb.fly.machine("app-a", m["id"])["config"]["env"] == {"K": "v"}
    sb.fly.fail(cid)
    assert state(api, m) == "failed"
    clock.advance(PROVISION + START)
    assert state(api, m) == "failed", "a crash cancels the pending boot"
