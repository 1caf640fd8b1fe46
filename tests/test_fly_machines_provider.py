"""The Fly provider against an in-memory Machines API (``httpx.MockTransport``) shaped by the spec.

The fake validates every create body and every machine it returns against Fly's
Machines OpenAPI document, so a drift in either direction fails here. Waits are
scripted: each ``/wait`` answers from ``wait_script`` (a status, or ``None`` to
report the machine's current state).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb.providers.fly import CREATE_ATTEMPTS, Fly, wire
from atlas_nb.sandbox.schemas import component_errors

KEY = "fly-test-token-0123456789"
MACAROON = "fm2_lJPECAAAAAAAAMoU0123456789"
BASE = "http://fly.test"
SPEC = "fly/machines-openapi3.json"

Fault = Callable[[httpx.Request], httpx.Response]


def _error(code: int, error: str, **extra: Any) -> httpx.Response:
    return httpx.Response(code, json={"error": error, **extra})


class FakeFly:
    """Apps and machines in memory; states are set by tests, not by a clock."""

    def __init__(self) -> None:
        self.apps: dict[str, dict[str, Any]] = {}
        self.machines: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.faults: dict[tuple[str, str], list[Fault]] = {}
        self.wait_script: list[int | None] = []
        self.after_wait: list[str] = []  # the state a machine moves to after each wait
        self.gpu_capacity: dict[str, dict[str, int]] = {}  # gpu_kind -> region -> free slots
        self._ids = itertools.count(0x3D8D9000000001)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def provider(self, app: str | None = "my-app", *, key: str = KEY,
                 sleeps: list[float] | None = None,
                 monotonic: Callable[[], float] | None = None) -> Fly:
        extra: dict[str, Any] = {"monotonic": monotonic} if monotonic else {}
        return Fly(app, api_key=key, base_url=BASE, http=self.transport(),
                   sleep=(sleeps.append if sleeps is not None else lambda s: None), **extra)

    def fault(self, method: str, path: str, *fns: Fault) -> None:
        """Answer the next requests to ``method path`` with ``fns``, in order."""
        self.faults.setdefault((method, path), []).extend(fns)

    def sent(self, method: str, pattern: str) -> list[httpx.Request]:
        return [r for r in self.requests
                if r.method == method and re.fullmatch(pattern, r.url.path)]

    def add(self, app: str, state: str = "started", **config: Any) -> dict[str, Any]:
        self.apps.setdefault(app, {"name": app})
        machine = {
            "id": format(next(self._ids), "x"), "name": config.pop("name", "m"), "state": state,
            "region": "iad", "instance_id": "01HV0000000000000000000001",
            "private_ip": "fdaa:0:1::2", "created_at": "2026-11-27T10:00:00Z",
            "config": {"image": "img:1", "guest": {"cpu_kind": "shared", "cpus": 1,
                                                   "memory_mb": 256}, **config},
        }
        self.machines[(app, machine["id"])] = machine
        return machine

    # -- routing -----------------------------------------------------------------------
    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        queued = self.faults.get((request.method, path))
        if queued:
            return queued.pop(0)(request)
        routes = [
            ("GET", r"/v1/apps", self._list_apps),
            ("POST", r"/v1/apps", self._create_app),
            ("GET", r"/v1/apps/([^/]+)", self._show_app),
            ("GET", r"/v1/apps/([^/]+)/machines", self._list),
            ("POST", r"/v1/apps/([^/]+)/machines", self._create),
            ("GET", r"/v1/apps/([^/]+)/machines/([^/]+)", self._show),
            ("DELETE", r"/v1/apps/([^/]+)/machines/([^/]+)", self._destroy),
            ("POST", r"/v1/apps/([^/]+)/machines/([^/]+)/stop", self._stop),
            ("POST", r"/v1/apps/([^/]+)/machines/([^/]+)/start", self._start),
            ("GET", r"/v1/apps/([^/]+)/machines/([^/]+)/wait", self._wait),
            ("POST", r"/v1/platform/placements", self._placements),
        ]
        for method, pattern, fn in routes:
            m = re.fullmatch(pattern, path)
            if m and method == request.method:
                return fn(request, *m.groups())
        return _error(404, f"no route {request.method} {path}")

    def _machine(self, app: str, mid: str) -> dict[str, Any] | None:
        return self.machines.get((app, mid)) if app in self.apps else None

    def _out(self, machine: dict[str, Any]) -> httpx.Response:
        assert component_errors(SPEC, "Machine", machine) == []
        return httpx.Response(200, json=machine)

    def _list_apps(self, request: httpx.Request) -> httpx.Response:
        assert request.url.params.get("org_slug"), "org_slug is required by the spec"
        apps = [{"name": a, "machine_count": 0} for a in self.apps]
        return httpx.Response(200, json={"total_apps": len(apps), "apps": apps})

    def _create_app(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert component_errors(SPEC, "CreateAppRequest", body) == []
        if body["name"] in self.apps:
            return _error(422, "Name has already been taken")
        self.apps[body["name"]] = {"name": body["name"], "org": body["org_slug"]}
        return httpx.Response(201)

    def _show_app(self, request: httpx.Request, app: str) -> httpx.Response:
        if app not in self.apps:
            return _error(404, "app not found")
        return httpx.Response(200, json={"name": app, "status": "deployed"})

    def _list(self, request: httpx.Request, app: str) -> httpx.Response:
        if app not in self.apps:
            return _error(404, "app not found")
        deleted = request.url.params.get("include_deleted") == "true"
        return httpx.Response(200, json=[
            m for (a, _), m in self.machines.items()
            if a == app and (deleted or m["state"] != "destroyed")
        ])

    def _create(self, request: httpx.Request, app: str) -> httpx.Response:
        if app not in self.apps:
            return _error(404, "app not found")
        body = json.loads(request.content)
        assert component_errors(SPEC, "CreateMachineRequest", body) == []
        machine = self.add(app, "created", name=body["name"], **body["config"])
        machine["region"] = body.get("region", "iad")
        return self._out(machine)

    def _show(self, request: httpx.Request, app: str, mid: str) -> httpx.Response:
        machine = self._machine(app, mid)
        return self._out(machine) if machine else _error(404, "machine not found")

    def _destroy(self, request: httpx.Request, app: str, mid: str) -> httpx.Response:
        machine = self._machine(app, mid)
        if machine is None or machine["state"] == "destroyed":
            return _error(404, "machine not found")
        machine["state"] = "destroyed"
        return httpx.Response(200, json={"ok": True})

    def _stop(self, request: httpx.Request, app: str, mid: str) -> httpx.Response:
        machine = self._machine(app, mid)
        if machine is None:
            return _error(404, "machine not found")
        machine["state"] = "stopping"
        return httpx.Response(200, json={"ok": True})

    def _start(self, request: httpx.Request, app: str, mid: str) -> httpx.Response:
        machine = self._machine(app, mid)
        if machine is None:
            return _error(404, "machine not found")
        if machine["state"] == "stopping":
            return _error(412, "failed_precondition: unable to start machine from current "
                               "state 'stopping'")
        previous, machine["state"] = machine["state"], "starting"
        return httpx.Response(200, json={"previous_state": previous, "migrated": False,
                                         "new_host": ""})

    def _placements(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert component_errors(SPEC, "main.getPlacementsRequest", body) == []
        kind = body["compute"]["gpu_kind"]
        rows = [{"region": r, "count": n, "concurrency": n}
                for r, n in self.gpu_capacity.get(kind, {}).items()]
        answer = {"regions": rows}
        assert component_errors(SPEC, "main.getPlacementsResponse", answer) == []
        return httpx.Response(200, json=answer)

    def _wait(self, request: httpx.Request, app: str, mid: str) -> httpx.Response:
        machine = self._machine(app, mid)
        if machine is None:
            return _error(404, "machine not found")
        status = self.wait_script.pop(0) if self.wait_script else 200
        if self.after_wait:
            machine["state"] = self.after_wait.pop(0)
        if status == 408:
            return _error(408, "deadline_exceeded")
        return httpx.Response(200, json={"ok": True, "state": machine["state"]})


@pytest.fixture
def fly() -> FakeFly:
    return FakeFly()


# -- auth -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "header"), [
    (KEY, f"Bearer {KEY}"), (MACAROON, f"FlyV1 {MACAROON}"), (f"FlyV1 {MACAROON}",
                                                              f"FlyV1 {MACAROON}"),
])
def test_token_goes_in_the_authorization_header_as_flyctl_sends_it(
    fly: FakeFly, key: str, header: str
) -> None:
    machine = fly.add("my-app")
    fly.provider(key=key).get_compute(f"my-app/{machine['id']}")
    (request,) = fly.requests
    assert request.headers["authorization"] == header
    assert MACAROON not in str(request.url) and KEY not in str(request.url)


def test_the_key_comes_from_fly_api_token(fly: FakeFly, monkeypatch: pytest.MonkeyPatch) -> None:
    machine = fly.add("my-app")
    monkeypatch.setenv("FLY_API_TOKEN", MACAROON)
    Fly("my-app", base_url=BASE, http=fly.transport()).get_compute(machine["id"])
    assert fly.requests[0].headers["authorization"] == f"FlyV1 {MACAROON}"


def test_no_key_is_unauthorized_with_a_hint(fly: FakeFly) -> None:
    with pytest.raises(atlas.Unauthorized, match="no API key for fly") as err:
        Fly("my-app", base_url=BASE, http=fly.transport()).get_compute("my-app/abc")
    assert "FLY_API_TOKEN" in (err.value.hint or "")
    assert fly.requests == []


# -- which app ----------------------------------------------------------------------------
def test_spawn_without_any_app_says_how_to_set_one(fly: FakeFly) -> None:
    with pytest.raises(atlas.ValidationError) as err:
        fly.provider(app=None).spawn_compute(atlas.ComputeRequest(image="img:1"))
    text = str(err.value)
    assert "provider_opts={'app': 'my-app'}" in text and "providers.fly.default_app" in text
    assert fly.requests == []


def test_per_call_app_wins_over_the_instance_and_the_config(
    fly: FakeFly, config_file: Any
) -> None:
    config_file.write_text("providers:\n  fly:\n    default_app: from-config\n")
    fly.apps.update({"per-call": {}, "from-config": {}, "instance": {}})
    p = fly.provider(app="instance")
    c = p.spawn_compute(atlas.ComputeRequest(image="img:1", provider_opts={"app": "per-call"}))
    assert c.id.startswith("per-call/")
    assert fly.provider(app=None).spawn_compute(
        atlas.ComputeRequest(image="img:1")).id.startswith("from-config/")
    assert p.spawn_compute(atlas.ComputeRequest(image="img:1")).id.startswith("instance/")


def test_facade_spawn_with_provider_opts_app_and_follow_up_calls_by_id(fly: FakeFly) -> None:
    fly.apps["notebook-app"] = {}
    opts = {"api_key": KEY, "base_url": BASE, "http": fly.transport()}
    c = atlas.spawn_compute(provider="fly", image="img:1", ports=[(8000, "http")],
                            provider_opts={"app": "notebook-app"}, **opts)
    assert c.id.startswith("notebook-app/") and c.url == "https://notebook-app.fly.dev"
    assert atlas.get_compute(c.id, provider="fly", **opts).id == c.id
    atlas.terminate(c.id, provider="fly", **opts)
    assert fly.sent("DELETE", rf"/v1/apps/notebook-app/machines/{c.id.split('/')[1]}")


def test_create_app_creates_a_missing_app_in_the_configured_org(
    fly: FakeFly, config_file: Any
) -> None:
    config_file.write_text("providers:\n  fly:\n    org_slug: acme\n")
    p = fly.provider(app=None)
    c = p.spawn_compute(atlas.ComputeRequest(
        image="img:1", provider_opts={"app": "fresh", "create_app": True}))
    assert c.id.startswith("fresh/")
    (create,) = fly.sent("POST", "/v1/apps")
    assert json.loads(create.content) == {"name": "fresh", "org_slug": "acme"}
    p.spawn_compute(atlas.ComputeRequest(
        image="img:1", provider_opts={"app": "fresh", "create_app": True, "org": "other"}))
    assert len(fly.sent("POST", "/v1/apps")) == 1, "an existing app is not created again"


def test_create_app_whose_answer_was_lost_is_not_an_error(fly: FakeFly) -> None:
    def lost(request: httpx.Request) -> httpx.Response:
        fly.apps["fresh"] = {}
        raise httpx.RemoteProtocolError("connection reset", request=request)

    fly.fault("POST", "/v1/apps", lost)
    c = fly.provider(app=None).spawn_compute(atlas.ComputeRequest(
        image="img:1", provider_opts={"app": "fresh", "create_app": True}))
    assert c.id.startswith("fresh/")


def test_a_missing_app_is_not_found(fly: FakeFly) -> None:
    with pytest.raises(atlas.NotFound, match="app not found"):
        fly.provider(app="nope").spawn_compute(atlas.ComputeRequest(image="img:1"))


# -- creates are never replayed blindly -------------------------------------------------------
def _lost_after_create(fly: FakeFly) -> Fault:
    def lost(request: httpx.Request) -> httpx.Response:
        fly._create(request, "my-app")  # applied...
        raise httpx.RemoteProtocolError("peer closed", request=request)  # ...answer lost

    return lost


def test_a_lost_create_is_found_by_name_and_marker_not_sent_again(fly: FakeFly) -> None:
    fly.apps["my-app"] = {}
    fly.add("my-app", name="srv")  # same name, someone else's machine: no marker
    fly.fault("POST", "/v1/apps/my-app/machines", _lost_after_create(fly))
    c = fly.provider().spawn_compute(atlas.ComputeRequest(image="img:1", name="srv"))
    assert len(fly.sent("POST", "/v1/apps/my-app/machines")) == 1
    marker = json.loads(fly.sent("POST", "/v1/apps/my-app/machines")[0].content)
    ours = marker["config"]["metadata"][wire.MARKER_KEY]
    assert c.raw["config"]["metadata"][wire.MARKER_KEY] == ours
    assert len(fly.machines) == 2


def test_a_create_refused_with_a_5xx_is_retried_after_a_lookup(
    fly: FakeFly, sleeps: list[float]
) -> None:
    fly.apps["my-app"] = {}
    fly.fault("POST", "/v1/apps/my-app/machines", lambda r: _error(503, "unavailable"))
    c = fly.provider(sleeps=sleeps).spawn_compute(atlas.ComputeRequest(image="img:1"))
    assert c.status == "provisioning"
    assert len(fly.sent("POST", "/v1/apps/my-app/machines")) == 2
    assert len(fly.sent("GET", "/v1/apps/my-app/machines")) == 1
    assert sleeps == [0.5]


def test_creates_give_up_after_the_attempts_with_a_safe_to_retry_hint(fly: FakeFly) -> None:
    fly.apps["my-app"] = {}
    fly.fault("POST", "/v1/apps/my-app/machines",
              *[lambda r: _error(500, "boom")] * CREATE_ATTEMPTS)
    with pytest.raises(atlas.ProviderError, match="boom") as err:
        fly.provider().spawn_compute(atlas.ComputeRequest(image="img:1", name="x"))
    assert "safe to try again" in (err.value.hint or "")
    assert fly.machines == {}


def test_a_rate_limited_create_waits_and_tries_again(fly: FakeFly, sleeps: list[float]) -> None:
    fly.apps["my-app"] = {}
    fly.fault("POST", "/v1/apps/my-app/machines",
              lambda r: httpx.Response(429, json={"error": "slow down"},
                                       headers={"retry-after": "2"}))
    fly.provider(sleeps=sleeps).spawn_compute(atlas.ComputeRequest(image="img:1"))
    assert sleeps == [2.0]
    assert len(fly.sent("POST", "/v1/apps/my-app/machines")) == 2


def test_insufficient_capacity_names_the_regions_that_have_the_gpu(fly: FakeFly) -> None:
    fly.apps["my-app"] = {}
    fly.fault("POST", "/v1/apps/my-app/machines", lambda r: _error(
        412, "insufficient resources to create new machine", status="insufficient_capacity"))
    with pytest.raises(atlas.ProviderError, match=r"no capacity .* in sjc") as err:
        fly.provider().spawn_compute(atlas.ComputeRequest(
            image="img:1", gpu="a100_80g", region_hints=["sjc"]))
    assert "['iad', 'sjc', 'syd']" in (err.value.hint or "")
    assert err.value.status == 412


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "kind"), [
    (400, atlas.ValidationError), (401, atlas.Unauthorized), (403, atlas.Forbidden),
    (404, atlas.NotFound), (408, atlas.Timeout), (409, atlas.ProviderError),
    (412, atlas.ProviderError), (422, atlas.ValidationError), (429, atlas.RateLimited),
    (500, atlas.ProviderError), (503, atlas.ProviderError),
])
def test_error_response_envelopes_map_to_atlas_errors(
    fly: FakeFly, status: int, kind: type[atlas.AtlasError]
) -> None:
    body = {"error": f"fly says {status}", "status": "unknown"}
    assert component_errors(SPEC, "ErrorResponse", body) == []
    fly.fault("GET", "/v1/apps/my-app/machines/abc",
              *[lambda r: httpx.Response(status, json=body, headers={"retry-after": "3"})] * 4)
    with pytest.raises(kind) as err:
        fly.provider().get_compute("my-app/abc")
    assert type(err.value) is kind
    assert err.value.message == f"fly says {status}"
    assert (err.value.provider, err.value.status, err.value.raw) == ("fly", status, body)
    if status == 429:
        assert err.value.retry_after == 3.0  # type: ignore[attr-defined]


def test_the_real_401_body_reads_well(fly: FakeFly) -> None:
    fly.fault("GET", "/v1/apps/my-app/machines/abc",
              lambda r: _error(401, "Authenticate: token validation error"))
    with pytest.raises(atlas.Unauthorized) as err:
        fly.provider().get_compute("my-app/abc")
    assert str(err.value) == "[fly] Authenticate: token validation error (HTTP 401)"
    assert KEY not in str(err.value) and KEY not in repr(err.value.raw)


def test_transport_errors_never_escape_as_httpx(fly: FakeFly) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    fly.fault("GET", "/v1/apps/my-app/machines/abc", *[refuse] * 4)
    with pytest.raises(atlas.TransportError):
        fly.provider().get_compute("my-app/abc")


# -- lifecycle ------------------------------------------------------------------------------
def test_get_accepts_a_bare_machine_id_in_the_default_app(fly: FakeFly) -> None:
    machine = fly.add("my-app")
    assert fly.provider().get_compute(machine["id"]).id == f"my-app/{machine['id']}"
    with pytest.raises(atlas.ValidationError, match="names no app"):
        fly.provider(app=None).get_compute(machine["id"])


def test_terminate_forces_and_is_idempotent(fly: FakeFly) -> None:
    machine = fly.add("my-app")
    cid = f"my-app/{machine['id']}"
    p = fly.provider()
    assert p.terminate(cid) is None
    assert p.terminate(cid) is None  # 404 now: already gone
    deletes = fly.sent("DELETE", rf"/v1/apps/my-app/machines/{machine['id']}")
    assert [r.url.params.get("force") for r in deletes] == ["true", "true"]
    assert p.get_compute(cid).status == "terminated"
    assert p.terminate("gone-app/abc") is None


def test_stop_then_start_waits_out_stopping(fly: FakeFly) -> None:
    machine = fly.add("my-app")
    cid = f"my-app/{machine['id']}"
    p = fly.provider()
    assert p.stop(cid).status == "stopped"  # "stopping" is on its way there
    (stop,) = fly.sent("POST", r".*/stop")
    assert json.loads(stop.content) == {}
    fly.after_wait = ["stopped"]
    assert p.start(cid).status == "provisioning"
    wait = fly.sent("GET", r".*/wait")[0]
    assert wait.url.params["state"] == "stopped"
    assert wait.url.params["version"] == machine["instance_id"]
    assert len(fly.sent("POST", r".*/start")) == 2


def test_wait_ready_keeps_waiting_through_408s(fly: FakeFly) -> None:
    machine = fly.add("my-app", "starting", services=[
        {"protocol": "tcp", "internal_port": 8000,
         "ports": [{"port": 443, "handlers": ["tls", "http"]}]}])
    fly.wait_script = [408, 408, 200]
    fly.after_wait = ["starting", "starting", "started"]
    ready = fly.provider().wait_ready(f"my-app/{machine['id']}", timeout_s=600)
    assert ready.status == "running" and ready.url == "https://my-app.fly.dev"
    waits = fly.sent("GET", r".*/wait")
    assert len(waits) == 3, "each 408 is one wait: the HTTP layer must not replay it"
    assert {w.url.params["state"] for w in waits} == {"started"}
    assert {w.url.params["timeout"] for w in waits} == {"60"}


def test_wait_ready_times_out_at_the_callers_deadline(fly: FakeFly) -> None:
    machine = fly.add("my-app", "starting")
    now = [0.0]

    def clock() -> float:
        return now[0]

    def slow_408(request: httpx.Request) -> httpx.Response:
        now[0] += float(request.url.params["timeout"])  # the server held it that long
        return _error(408, "deadline_exceeded")

    fly.fault("GET", f"/v1/apps/my-app/machines/{machine['id']}/wait", *[slow_408] * 10)
    with pytest.raises(atlas.Timeout, match=r"not started after 150s \(state starting\)"):
        fly.provider(monotonic=clock).wait_ready(f"my-app/{machine['id']}", timeout_s=150)
    timeouts = [w.url.params["timeout"] for w in fly.sent("GET", r".*/wait")]
    assert timeouts == ["60", "60", "30"]


@pytest.mark.parametrize("state", ["failed", "destroyed"])
def test_wait_ready_gives_up_on_a_dead_machine(fly: FakeFly, state: str) -> None:
    machine = fly.add("my-app", "starting")
    fly.after_wait = [state]
    fly.wait_script = [408]
    with pytest.raises(atlas.ProviderError, match=f"is {state}; it will not become ready"):
        fly.provider().wait_ready(f"my-app/{machine['id']}", timeout_s=600)


def test_facade_wait_ready_uses_the_fly_wait(fly: FakeFly) -> None:
    machine = fly.add("my-app", "created")
    fly.after_wait = ["started"]
    ready = atlas.wait_ready(f"my-app/{machine['id']}", provider=fly.provider(), timeout_s=5)
    assert ready.status == "running"
    assert len(fly.sent("GET", r".*/wait")) == 1


# -- list ---------------------------------------------------------------------------------
def test_list_filters_the_default_app(fly: FakeFly) -> None:
    gpu = {"cpu_kind": "performance", "cpus": 8, "memory_mb": 32768, "gpu_kind": "l40s",
           "gpus": 1}
    a = fly.add("my-app", name="job-1", guest=gpu)
    fly.add("my-app", "stopped", name="job-2")
    fly.add("my-app", "destroyed", name="job-3")
    fly.add("other-app", name="job-4")
    p = fly.provider()
    assert sorted(c.name or "" for c in p.list_compute()) == ["job-1", "job-2"]
    assert [c.id for c in p.list_compute(gpu="l40s", status="running")] == [f"my-app/{a['id']}"]
    assert [c.name for c in p.list_compute(status="terminated")] == ["job-3"]
    assert p.list_compute(name="job-9") == []
    params = [dict(r.url.params) for r in fly.sent("GET", "/v1/apps/my-app/machines")]
    assert {"include_deleted": "true"} in params
    with pytest.raises(atlas.ValidationError, match="unknown status 'up'"):
        p.list_compute(status="up")


def test_list_without_a_default_app_covers_every_app_of_the_org(fly: FakeFly) -> None:
    fly.add("app-a", name="one")
    fly.add("app-b", name="two")
    found = fly.provider(app=None).list_compute()
    assert sorted(c.id.split("/")[0] for c in found) == ["app-a", "app-b"]
    (apps,) = fly.sent("GET", "/v1/apps")
    assert apps.url.params["org_slug"] == "personal"


# -- catalog and secrets ----------------------------------------------------------------------
def test_list_gpu_types_has_static_prices_and_live_placements(
    fly: FakeFly, config_file: Any
) -> None:
    config_file.write_text("providers:\n  fly:\n    org_slug: acme\n")
    fly.gpu_capacity = {"l40s": {"ord": 2}, "a100-sxm4-80gb": {"sjc": 6, "iad": 0, "syd": 6}}
    types = {g.id: g for g in fly.provider().list_gpu_types()}
    assert {g.canonical for g in types.values()} == {"a10", "l40s", "a100_40g", "a100_80g"}
    assert all(g.raw["static"] is True and g.price_per_hour for g in types.values())
    assert (types["l40s"].regions, types["l40s"].stock) == (("ord",), "low")
    assert (types["a100-sxm4-80gb"].regions, types["a100-sxm4-80gb"].stock) == (
        ("sjc", "syd"), "high")
    assert (types["a10"].regions, types["a10"].stock) == ((), "none")
    asked = [json.loads(r.content) for r in fly.sent("POST", "/v1/platform/placements")]
    assert sorted(a["compute"]["gpu_kind"] for a in asked) == sorted(types)
    assert {a["org_slug"] for a in asked} == {"acme"}
    assert all(a["compute"]["cpu_kind"] == "performance" for a in asked)


def test_list_gpu_types_without_a_key_is_unauthorized(fly: FakeFly) -> None:
    with pytest.raises(atlas.Unauthorized):
        Fly(http=fly.transport(), base_url=BASE).list_gpu_types()
    assert fly.requests == []


def test_the_bearer_token_never_reaches_raw_or_repr(fly: FakeFly) -> None:
    fly.apps["my-app"] = {}
    c = atlas.spawn_compute(provider=fly.provider(), image="img:1", auth="bearer")
    assert c.auth is not None
    sent = json.loads(fly.sent("POST", "/v1/apps/my-app/machines")[0].content)
    assert sent["config"]["env"]["ATLAS_PRESHARED_KEY"] == c.auth.token
    for compute in (c, fly.provider().get_compute(c.id), *fly.provider().list_compute()):
        assert c.auth.token not in json.dumps(compute.raw) + repr(compute)
    assert KEY not in repr(fly.provider())
