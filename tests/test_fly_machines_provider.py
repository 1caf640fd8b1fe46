"""The Fly provider against the in-process sandbox's Machines API: what it sends, how it
retries creates without duplicates, how it waits, how it maps Fly's answers and errors.

Every exchange is checked against Fly's Machines OpenAPI document (``sb.violations == []``).
Time is one ``ManualClock``: machines step through their lifecycle when a test advances
it, and the cloud's ``wait_fast_forward`` makes each ``/wait`` move it on instead of
holding (to the machine's next state change, or to the wait's deadline: a 408). Scripted
failures are sandbox faults (``sb.faults``). No sockets, no sleeping (``sleep=`` records).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb.providers.fly import CREATE_ATTEMPTS, Fly, wire
from atlas_nb.sandbox import sandbox_key, start
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.schemas import component_errors
from atlas_nb.sandbox.server import Sandbox

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

KEY = sandbox_key("fly")
MACAROON = "fm2_lJPECAAAAAAAAMoU0123456789"
SPEC = "fly/machines-openapi3.json"
MACHINES_API = "/fly/machines"
CREATES = "fly/machines:POST /v1/apps/my-app/machines"
PROVISION, START, STOP, DESTROY = 2.0, 3.0, 4.0, 5.0
# "my-app" stands for the user's own, deployed app: it has the addresses flyctl gives one.
OPTIONS = {"fly": {"apps": ["my-app"], "app_ips": {"my-app": ["shared_v4", "v6"]},
                   "orgs": ["personal", "acme", "other"],
                   "stop_delay_s": STOP, "destroy_delay_s": DESTROY,
                   "wait_fast_forward": True, "tokens": [MACAROON]}}


class Recorder(list[httpx.Request]):
    """Every request the provider sent, in order (an httpx event hook)."""

    def sent(self, method: str, pattern: str) -> list[httpx.Request]:
        """Requests to ``method`` whose path (below the API's mount) matches ``pattern``."""
        return [r for r in self if r.method == method
                and re.fullmatch(pattern, r.url.path.removeprefix(MACHINES_API))]


class Make(Protocol):
    def __call__(self, app: str | None = "my-app", *, key: str | None = None,
                 monotonic: Callable[[], float] | None = None) -> Fly: ...


def box(**kwargs: Any) -> Sandbox:
    return start(clouds=["fly"], start_server=False, validate=True, clock=ManualClock(),
                 provision_delay_s=PROVISION, start_delay_s=START, options=OPTIONS, **kwargs)


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with box() as sandbox:
        yield sandbox
        assert sandbox.violations == [], "\n".join(sandbox.violations)


@pytest.fixture
def clock(sb: Sandbox) -> ManualClock:
    assert isinstance(sb.clock, ManualClock)
    return sb.clock


@pytest.fixture
def sent(sb: Sandbox) -> Iterator[Recorder]:
    record = Recorder()
    yield record
    for request in record:  # tokens travel in the header only, never in a URL
        assert KEY not in str(request.url) and MACAROON not in str(request.url)


@pytest.fixture
def http(sb: Sandbox, sent: Recorder) -> Iterator[httpx.Client]:
    with sb.client(event_hooks={"request": [sent.append]}) as client:
        yield client


@pytest.fixture
def make(http: httpx.Client, sleeps: list[float]) -> Make:
    def provider(app: str | None = "my-app", *, key: str | None = None,
                 monotonic: Callable[[], float] | None = None) -> Fly:
        extra: dict[str, Any] = {"monotonic": monotonic} if monotonic else {}
        return Fly(app, api_key=key, http=http, sleep=sleeps.append, **extra)

    return provider


def api(sb: Sandbox, method: str, path: str, **kwargs: Any) -> Any:
    """Call the Machines API straight (not through the provider, not recorded)."""
    with sb.client(base_url=f"{sb.url}{MACHINES_API}/v1",
                   headers={"Authorization": f"Bearer {KEY}"}) as client:
        r = client.request(method, path, **kwargs)
    assert r.is_success, r.text
    return r.json() if r.content else None


def app(sb: Sandbox, name: str) -> None:
    if name not in sb.fly.state.apps:
        api(sb, "POST", "/apps", json={"name": name, "org_slug": "personal"})


def machine(sb: Sandbox, app_name: str = "my-app", state: str = "started", *,
            region: str | None = None, **config: Any) -> str:
    """A machine brought to ``state`` by real actions and the clock; its id."""
    app(sb, app_name)
    body: dict[str, Any] = {"name": config.pop("name", "m"), "config": {"image": "img:1", **config}}
    if region:
        body["region"] = region
    mid = str(api(sb, "POST", f"/apps/{app_name}/machines", json=body)["id"])
    path, clock = f"/apps/{app_name}/machines/{mid}", sb.clock
    assert isinstance(clock, ManualClock)
    advance = clock.advance
    if state != "created":
        advance(PROVISION if state == "starting" else PROVISION + sb.fly.start_delay_s)
    if state == "stopped":
        api(sb, "POST", f"{path}/stop", json={})
        advance(STOP)
    elif state == "destroyed":
        api(sb, "DELETE", path, params={"force": "true"})
        advance(DESTROY)
    assert sb.fly.machine(app_name, mid)["state"] == state
    return mid


# -- auth -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "header"), [
    (KEY, f"Bearer {KEY}"), (MACAROON, f"FlyV1 {MACAROON}"), (f"FlyV1 {MACAROON}",
                                                              f"FlyV1 {MACAROON}"),
])
def test_token_goes_in_the_authorization_header_as_flyctl_sends_it(
    sb: Sandbox, make: Make, sent: Recorder, key: str, header: str
) -> None:
    mid = machine(sb)
    make(key=key).get_compute(f"my-app/{mid}")
    (request,) = sent
    assert request.headers["authorization"] == header


def test_the_key_comes_from_fly_api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = Recorder()
    with box(attach=False) as other, other.client(event_hooks={"request": [sent.append]}) as http:
        mid = machine(other)
        monkeypatch.setenv("FLY_API_TOKEN", MACAROON)
        Fly("my-app", base_url=f"{other.url}{MACHINES_API}", http=http).get_compute(mid)
        assert other.violations == []
    assert sent[0].headers["authorization"] == f"FlyV1 {MACAROON}"


def test_no_key_is_unauthorized_with_a_hint() -> None:
    sent = Recorder()
    with box(attach=False) as other, \
            other.client(event_hooks={"request": [sent.append]}) as http, \
            pytest.raises(atlas.Unauthorized, match="no API key for fly") as err:
        Fly("my-app", base_url=f"{other.url}{MACHINES_API}", http=http).get_compute("my-app/abc")
    assert "FLY_API_TOKEN" in (err.value.hint or "")
    assert list(sent) == []


# -- which app ----------------------------------------------------------------------------
def test_spawn_without_any_app_says_how_to_set_one(make: Make, sent: Recorder) -> None:
    with pytest.raises(atlas.ValidationError) as err:
        make(app=None).spawn_compute(atlas.ComputeRequest(image="img:1"))
    text = str(err.value)
    assert "provider_opts={'app': 'my-app'}" in text and "providers.fly.default_app" in text
    assert sent == []


def test_per_call_app_wins_over_the_instance_and_the_config(
    sb: Sandbox, make: Make, config_file: Any
) -> None:
    config_file.write_text("providers:\n  fly:\n    default_app: from-config\n")
    for name in ("per-call", "from-config", "instance"):
        app(sb, name)
    p = make(app="instance")
    c = p.spawn_compute(atlas.ComputeRequest(image="img:1", provider_opts={"app": "per-call"}))
    assert c.id.startswith("per-call/")
    assert make(app=None).spawn_compute(
        atlas.ComputeRequest(image="img:1")).id.startswith("from-config/")
    assert p.spawn_compute(atlas.ComputeRequest(image="img:1")).id.startswith("instance/")


def test_facade_spawn_with_provider_opts_app_and_follow_up_calls_by_id(
    sb: Sandbox, http: httpx.Client, sent: Recorder
) -> None:
    app(sb, "notebook-app")
    sb.fly.allocate("notebook-app", "shared_v4", "v6")  # as `fly ips allocate-*` would
    opts = {"api_key": KEY, "base_url": f"{sb.url}{MACHINES_API}", "http": http}
    c = atlas.spawn_compute(provider="fly", image="img:1", ports=[(8000, "http")],
                            provider_opts={"app": "notebook-app"}, **opts)
    assert c.id.startswith("notebook-app/") and c.url == "https://notebook-app.fly.dev"
    assert atlas.get_compute(c.id, provider="fly", **opts).id == c.id
    atlas.terminate(c.id, provider="fly", **opts)
    assert sent.sent("DELETE", rf"/v1/apps/notebook-app/machines/{c.id.split('/')[1]}")


def test_create_app_creates_a_missing_app_in_the_configured_org(
    sb: Sandbox, make: Make, sent: Recorder, config_file: Any
) -> None:
    config_file.write_text("providers:\n  fly:\n    org_slug: acme\n")
    p = make(app=None)
    c = p.spawn_compute(atlas.ComputeRequest(
        image="img:1", provider_opts={"app": "fresh", "create_app": True}))
    assert c.id.startswith("fresh/") and sb.fly.state.apps["fresh"].org == "acme"
    (create,) = sent.sent("POST", "/v1/apps")
    assert json.loads(create.content) == {"name": "fresh", "org_slug": "acme"}
    p.spawn_compute(atlas.ComputeRequest(
        image="img:1", provider_opts={"app": "fresh", "create_app": True, "org": "other"}))
    assert len(sent.sent("POST", "/v1/apps")) == 1, "an existing app is not created again"


def test_create_app_whose_answer_was_lost_is_not_an_error(sb: Sandbox, make: Make) -> None:
    sb.faults("fly/machines:POST /v1/apps", sequence=["lost"])  # made, then the answer was lost
    c = make(app=None).spawn_compute(atlas.ComputeRequest(
        image="img:1", provider_opts={"app": "fresh", "create_app": True}))
    assert c.id.startswith("fresh/")


def test_a_missing_app_is_not_found(make: Make) -> None:
    with pytest.raises(atlas.NotFound, match="app not found"):
        make(app="nope").spawn_compute(atlas.ComputeRequest(image="img:1"))


# -- creates are never replayed blindly -------------------------------------------------------
def test_a_lost_create_is_found_by_name_and_marker_not_sent_again(
    sb: Sandbox, make: Make, sent: Recorder
) -> None:
    machine(sb, name="srv")  # same name, someone else's machine: no marker
    sb.faults(CREATES, sequence=["lost"])  # applied, then the answer was lost
    c = make().spawn_compute(atlas.ComputeRequest(image="img:1", name="srv"))
    (create,) = sent.sent("POST", "/v1/apps/my-app/machines")
    ours = json.loads(create.content)["config"]["metadata"][wire.MARKER_KEY]
    assert c.raw["config"]["metadata"][wire.MARKER_KEY] == ours
    assert len(sb.fly.state.machines) == 2


def test_a_create_refused_with_a_5xx_is_retried_after_a_lookup(
    sb: Sandbox, make: Make, sent: Recorder, sleeps: list[float]
) -> None:
    sb.faults(CREATES, sequence=[503])
    c = make().spawn_compute(atlas.ComputeRequest(image="img:1"))
    assert c.status == "provisioning"
    assert len(sent.sent("POST", "/v1/apps/my-app/machines")) == 2
    assert len(sent.sent("GET", "/v1/apps/my-app/machines")) == 1
    assert sleeps == [1.0]  # the backoff (0.5 s), but at least CreateRetry.settle_s
    assert len(sb.fly.state.machines) == 1


def test_creates_give_up_after_the_attempts_with_a_safe_to_retry_hint(
    sb: Sandbox, make: Make
) -> None:
    sb.faults(CREATES, sequence=[500] * CREATE_ATTEMPTS)
    with pytest.raises(atlas.ProviderError, match="injected fault") as err:
        make().spawn_compute(atlas.ComputeRequest(image="img:1", name="x"))
    assert "safe to try again" in (err.value.hint or "")
    assert sb.fly.state.machines == {}


def test_a_rate_limited_create_waits_and_tries_again(
    sb: Sandbox, make: Make, sent: Recorder, sleeps: list[float]
) -> None:
    sb.faults(CREATES, sequence=[429], retry_after_s=2)
    make().spawn_compute(atlas.ComputeRequest(image="img:1"))
    assert sleeps == [2.0]
    assert len(sent.sent("POST", "/v1/apps/my-app/machines")) == 2


def test_insufficient_capacity_names_the_regions_that_have_the_gpu(
    sb: Sandbox, make: Make
) -> None:
    sb.fly.set_capacity("sjc", [])  # sjc has no A100 left
    with pytest.raises(atlas.ProviderError, match=r"no capacity .* in sjc") as err:
        make().spawn_compute(atlas.ComputeRequest(
            image="img:1", gpu="a100_80g", region_hints=["sjc"]))
    assert "['iad', 'sjc', 'syd']" in (err.value.hint or "")
    assert err.value.status == 412 and wire.error_kind(err.value.raw) == "insufficient_capacity"
    assert sb.fly.state.machines == {}


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "kind"), [
    (400, atlas.ValidationError), (401, atlas.Unauthorized), (403, atlas.Forbidden),
    (404, atlas.NotFound), (408, atlas.Timeout), (409, atlas.ProviderError),
    (412, atlas.ProviderError), (422, atlas.ValidationError), (429, atlas.RateLimited),
    (500, atlas.ProviderError), (503, atlas.ProviderError),
])
def test_error_response_envelopes_map_to_atlas_errors(
    sb: Sandbox, make: Make, status: int, kind: type[atlas.AtlasError]
) -> None:
    sb.faults("fly/machines:GET /v1/apps/my-app/machines/abc", error_rate={status: 1.0},
              retry_after_s=3)
    with pytest.raises(kind) as err:
        make().get_compute("my-app/abc")
    assert type(err.value) is kind
    detail = ("rate limit exceeded" if status == 429 else "injected fault") + \
        " (sandbox fault injection)"
    assert err.value.message == detail
    assert (err.value.provider, err.value.status, err.value.raw) == ("fly", status,
                                                                     {"error": detail})
    assert component_errors(SPEC, "ErrorResponse", err.value.raw) == []
    if status == 429:
        assert err.value.retry_after == 3.0  # type: ignore[attr-defined]


def test_the_real_401_body_reads_well(sb: Sandbox) -> None:
    wrong = "fly-test-token-0123456789"
    with sb.client() as http, pytest.raises(atlas.Unauthorized) as err:  # not recorded
        Fly("my-app", api_key=wrong, http=http).get_compute("my-app/abc")
    assert str(err.value) == "[fly] Authenticate: token validation error (HTTP 401)"
    assert wrong not in str(err.value) and wrong not in repr(err.value.raw)


def test_transport_errors_never_escape_as_httpx(sb: Sandbox, make: Make) -> None:
    sb.faults("fly/machines:GET /v1/apps/my-app/machines/abc", drop_rate=1.0)
    with pytest.raises(atlas.TransportError):
        make().get_compute("my-app/abc")


# -- lifecycle ------------------------------------------------------------------------------
def test_get_accepts_a_bare_machine_id_in_the_default_app(sb: Sandbox, make: Make) -> None:
    mid = machine(sb)
    assert make().get_compute(mid).id == f"my-app/{mid}"
    with pytest.raises(atlas.ValidationError, match="names no app"):
        make(app=None).get_compute(mid)


def test_terminate_forces_and_is_idempotent(sb: Sandbox, make: Make, sent: Recorder,
                                            clock: ManualClock) -> None:
    mid = machine(sb)
    cid = f"my-app/{mid}"
    p = make()
    assert p.terminate(cid) is None
    clock.advance(DESTROY)
    assert p.terminate(cid) is None  # read as destroyed: not deleted again
    deletes = sent.sent("DELETE", rf"/v1/apps/my-app/machines/{mid}")
    assert [r.url.params.get("force") for r in deletes] == ["true"]
    assert p.get_compute(cid).status == "terminated"
    assert p.terminate("gone-app/abc") is None


def test_stop_then_start_waits_out_stopping(sb: Sandbox, make: Make, sent: Recorder) -> None:
    mid = machine(sb)
    cid = f"my-app/{mid}"
    p = make()
    assert p.stop(cid).status == "stopped"  # "stopping" is on its way there
    (stop,) = sent.sent("POST", r".*/stop")
    assert json.loads(stop.content) == {}
    assert p.start(cid).status == "provisioning"  # refused while stopping: waited, then again
    wait = sent.sent("GET", r".*/wait")[0]
    assert wait.url.params["state"] == "stopped"
    assert wait.url.params["version"] == sb.fly.machine("my-app", mid)["instance_id"]
    assert len(sent.sent("POST", r".*/start")) == 2


def test_wait_ready_keeps_waiting_through_408s(sb: Sandbox, make: Make, sent: Recorder,
                                               clock: ManualClock) -> None:
    sb.fly.start_delay_s = 150  # two 60 s waits run out (408), the third sees it start
    mid = machine(sb, state="starting", services=[
        {"protocol": "tcp", "internal_port": 8000,
         "ports": [{"port": 443, "handlers": ["tls", "http"]}]}])
    ready = make(monotonic=clock.time).wait_ready(f"my-app/{mid}", timeout_s=600)
    assert ready.status == "running" and ready.url == "https://my-app.fly.dev"
    waits = sent.sent("GET", r".*/wait")
    assert len(waits) == 3, "each 408 is one wait: the HTTP layer must not replay it"
    assert {w.url.params["state"] for w in waits} == {"started"}
    assert {w.url.params["timeout"] for w in waits} == {"60"}


def test_wait_ready_times_out_at_the_callers_deadline(sb: Sandbox, make: Make, sent: Recorder,
                                                      clock: ManualClock) -> None:
    sb.fly.start_delay_s = 10_000
    mid = machine(sb, state="starting")
    with pytest.raises(atlas.Timeout, match=r"not started after 150s \(state starting\)"):
        make(monotonic=clock.time).wait_ready(f"my-app/{mid}", timeout_s=150)
    timeouts = [w.url.params["timeout"] for w in sent.sent("GET", r".*/wait")]
    assert timeouts == ["60", "60", "30"]


@pytest.mark.parametrize("state", ["failed", "destroyed"])
def test_wait_ready_gives_up_on_a_dead_machine(sb: Sandbox, clock: ManualClock,
                                               sleeps: list[float], state: str) -> None:
    sb.fly.start_delay_s = 10_000
    sb.fly.state.destroy_delay_s = 0.0
    mid = machine(sb, state="starting")
    waits: list[int] = []

    def dies_while_waiting(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/wait"):
            waits.append(response.status_code)
            if state == "failed":
                sb.fly.fail(f"my-app/{mid}")
            else:
                api(sb, "DELETE", f"/apps/my-app/machines/{mid}", params={"force": "true"})

    with sb.client(event_hooks={"response": [dies_while_waiting]}) as http:
        p = Fly("my-app", http=http, sleep=sleeps.append, monotonic=clock.time)
        with pytest.raises(atlas.ProviderError, match=f"is {state}; it will not become ready"):
            p.wait_ready(f"my-app/{mid}", timeout_s=600)
    assert waits == [408]


def test_facade_wait_ready_uses_the_fly_wait(sb: Sandbox, make: Make, sent: Recorder) -> None:
    mid = machine(sb, state="created")
    ready = atlas.wait_ready(f"my-app/{mid}", provider=make(), timeout_s=5)
    assert ready.status == "running"
    assert len(sent.sent("GET", r".*/wait")) == 1


# -- list ---------------------------------------------------------------------------------
def test_list_filters_the_default_app(sb: Sandbox, make: Make, sent: Recorder) -> None:
    gpu = {"cpu_kind": "performance", "cpus": 8, "memory_mb": 32768, "gpu_kind": "l40s",
           "gpus": 1}
    a = machine(sb, name="job-1", guest=gpu, region="ord")
    machine(sb, state="stopped", name="job-2")
    machine(sb, state="destroyed", name="job-3")
    machine(sb, "other-app", name="job-4")
    p = make()
    assert sorted(c.name or "" for c in p.list_compute()) == ["job-1", "job-2"]
    assert [c.id for c in p.list_compute(gpu="l40s", status="running")] == [f"my-app/{a}"]
    assert [c.name for c in p.list_compute(status="terminated")] == ["job-3"]
    assert p.list_compute(name="job-9") == []
    params = [dict(r.url.params) for r in sent.sent("GET", "/v1/apps/my-app/machines")]
    assert {"include_deleted": "true"} in params
    with pytest.raises(atlas.ValidationError, match="unknown status 'up'"):
        p.list_compute(status="up")


def test_list_without_a_default_app_covers_every_app_of_the_org(
    sb: Sandbox, make: Make, sent: Recorder
) -> None:
    machine(sb, "app-a", name="one")
    machine(sb, "app-b", name="two")
    found = make(app=None).list_compute()
    assert sorted(c.id.split("/")[0] for c in found) == ["app-a", "app-b"]
    (apps,) = sent.sent("GET", "/v1/apps")
    assert apps.url.params["org_slug"] == "personal"


# -- catalog and secrets ----------------------------------------------------------------------
def test_list_gpu_types_has_static_prices_and_live_placements(
    sb: Sandbox, make: Make, sent: Recorder, config_file: Any
) -> None:
    config_file.write_text("providers:\n  fly:\n    org_slug: acme\n")
    sb.fly.set_capacity("ord", ["l40s"], slots=2)  # no a10, no a100-pcie-40gb anywhere
    sb.fly.set_capacity("iad", [])
    for region in ("sjc", "syd"):
        sb.fly.set_capacity(region, ["a100-sxm4-80gb"], slots=6)
    types = {g.id: g for g in make().list_gpu_types()}
    assert {g.canonical for g in types.values()} == {"a10", "l40s", "a100_40g", "a100_80g"}
    assert all(g.raw["static"] is True and g.price_per_hour for g in types.values())
    # count=0 answers the org's limits: regions, never stock (None: not known)
    assert (types["l40s"].regions, types["l40s"].stock) == (("ord",), None)
    assert (types["a100-sxm4-80gb"].regions, types["a100-sxm4-80gb"].stock) == (
        ("sjc", "syd"), None)
    assert (types["a10"].regions, types["a10"].stock) == ((), "none")
    asked = [json.loads(r.content) for r in sent.sent("POST", "/v1/platform/placements")]
    assert sorted(a["compute"]["gpu_kind"] for a in asked) == sorted(types)
    assert {a["org_slug"] for a in asked} == {"acme"}
    assert all(a.get("count", 0) == 0 for a in asked)
    assert all(a["compute"]["cpu_kind"] == "performance" for a in asked)


def test_list_gpu_types_without_a_key_is_unauthorized() -> None:
    sent = Recorder()
    with box(attach=False) as other, \
            other.client(event_hooks={"request": [sent.append]}) as http, \
            pytest.raises(atlas.Unauthorized):
        Fly(http=http, base_url=f"{other.url}{MACHINES_API}").list_gpu_types()
    assert list(sent) == []


def test_the_bearer_token_never_reaches_raw_or_repr(sb: Sandbox, make: Make,
                                                    sent: Recorder) -> None:
    c = atlas.spawn_compute(provider=make(), image="img:1", auth="bearer")
    assert c.auth is not None
    body = json.loads(sent.sent("POST", "/v1/apps/my-app/machines")[0].content)
    assert body["config"]["env"]["ATLAS_PRESHARED_KEY"] == c.auth.token
    assert sb.fly.machine_env(c.id)["ATLAS_PRESHARED_KEY"] == c.auth.token
    for compute in (c, make().get_compute(c.id), *make().list_compute()):
        assert c.auth.token not in json.dumps(compute.raw) + repr(compute)
    assert KEY not in repr(make())
