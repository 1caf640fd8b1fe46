"""Fly app addresses: an app made through the Machines API has none, so ``{app}.fly.dev``
does not resolve (superfly/docs networking/services.html.markerb). With ``create_app``
atlas_nb allocates what the ports need through ``ip_assignments`` (a shared IPv4 and an
IPv6 for HTTP, a dedicated IPv4 for raw TCP/UDP), reports a port's URL only once an
address serves it, and, when the last machine of an app it created goes, releases the
addresses it allocated and deletes the app. Nothing it did not create is touched.

The sandbox's Fly cloud checks every exchange against the vendored spec; ``sb.fly
.reachable(url)`` says whether a URL would answer there (apps start without addresses).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from atlas_nb import ComputeRequest, NotFound, ProviderError
from atlas_nb.providers.fly import Fly, addresses
from atlas_nb.sandbox import sandbox_key, start
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.server import Sandbox

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

KEY = sandbox_key("fly")
MACHINES_API = "/fly/machines"
PROVISION, START = 2.0, 3.0


class Recorder(list[httpx.Request]):
    """Every request the provider sent, in order (an httpx event hook)."""

    def sent(self, method: str, pattern: str) -> list[httpx.Request]:
        return [r for r in self if r.method == method
                and re.fullmatch(pattern, r.url.path.removeprefix(MACHINES_API))]


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    options = {"fly": {"apps": ["users-app"], "stop_delay_s": 1.0, "destroy_delay_s": 1.0,
                       "wait_fast_forward": True}}
    with start(clouds=["fly"], start_server=False, validate=True, clock=ManualClock(),
               provision_delay_s=PROVISION, start_delay_s=START, options=options) as box:
        yield box
        assert box.violations == [], "\n".join(box.violations)


@pytest.fixture
def sent() -> Recorder:
    return Recorder()


@pytest.fixture
def fly(sb: Sandbox, sent: Recorder) -> Iterator[Fly]:
    clock = sb.clock
    assert isinstance(clock, ManualClock)
    with sb.client(event_hooks={"request": [sent.append]}) as http:
        yield Fly(api_key=KEY, http=http, sleep=lambda _s: None, monotonic=clock.time)


def spawn(fly: Fly, app: str, ports: list[tuple[int, str]], *, create: bool = True,
          **extra: Any) -> Any:
    opts: dict[str, Any] = {"app": app, **({"create_app": True} if create else {})}
    return fly.spawn_compute(ComputeRequest(image="img:1", ports=ports, provider_opts=opts,
                                            **extra))


def kinds(sb: Sandbox, app: str) -> list[str]:
    return sorted(addresses.kind_of(a) for a in sb.fly.addresses(app))


def metadata(sb: Sandbox, compute_id: str) -> dict[str, str]:
    app, _, mid = compute_id.partition("/")
    return dict(sb.fly.machine(app, mid)["config"].get("metadata") or {})


# -- the sandbox learns Fly's rule ----------------------------------------------------------
def test_sandbox_apps_start_without_addresses_and_urls_need_one(sb: Sandbox, fly: Fly) -> None:
    c = spawn(fly, "users-app", [(8000, "http")], create=False)
    ready_at = PROVISION + START
    assert isinstance(sb.clock, ManualClock)
    sb.clock.advance(ready_at)
    assert sb.fly.addresses("users-app") == []
    assert not sb.fly.reachable("https://users-app.fly.dev")
    sb.fly.allocate("users-app", "v6")
    assert sb.fly.reachable("https://users-app.fly.dev")  # IPv6 serves HTTP
    assert not sb.fly.reachable("tcp://users-app.fly.dev:22")
    assert c.ports[0].internal == 8000


def test_sandbox_address_rules(sb: Sandbox) -> None:
    base = f"{sb.url}{MACHINES_API}/v1/apps/users-app/ip_assignments"
    with sb.client(headers={"Authorization": f"Bearer {KEY}"}) as http:
        assert http.get(base).json() == {"ips": []}
        # flyctl: shared v4 and private v6 are not regional, "the API rejects a region"
        r = http.post(base, json={"type": "shared_v4", "region": "ord"})
        assert r.status_code == 400 and "not regional" in r.json()["error"]
        shared = http.post(base, json={"type": "shared_v4"}).json()
        assert shared["shared"] is True and addresses.kind_of(shared) == "shared_v4"
        assert http.post(base, json={"type": "shared_v4"}).status_code == 400  # one per app
        v4 = http.post(base, json={"type": "v4", "region": "ord"}).json()
        assert (addresses.kind_of(v4), v4["region"]) == ("v4", "ord")
        assert http.post(base, json={"type": "v5"}).status_code == 400
        assert http.delete(f"{base}/{v4['ip']}").status_code == 204
        assert http.delete(f"{base}/{v4['ip']}").status_code == 404
        assert [a["ip"] for a in http.get(base).json()["ips"]] == [shared["ip"]]


# -- allocation on create_app ---------------------------------------------------------------
def test_create_app_with_an_http_port_allocates_a_shared_v4_and_a_v6(
    sb: Sandbox, fly: Fly, sent: Recorder
) -> None:
    c = spawn(fly, "fresh", [(8000, "http")])
    bodies = [json.loads(r.content) for r in sent.sent("POST", "/v1/apps/fresh/ip_assignments")]
    assert bodies == [{"type": "shared_v4"}, {"type": "v6"}]  # no region: global addresses
    assert kinds(sb, "fresh") == ["shared_v4", "v6"]  # no dedicated IPv4: it is billed
    assert c.url == "https://fresh.fly.dev"
    mine = metadata(sb, c.id)
    assert mine[addresses.CREATED_APP_KEY] == "true"
    assert addresses.created_ips(mine) == {a["ip"] for a in sb.fly.addresses("fresh")}
    assert c.labels == {}, "atlas_nb's own records are not labels"
    ready = fly.wait_ready(c.id, timeout_s=60)
    assert ready.url == c.url and sb.fly.reachable(ready.url)


def test_create_app_with_a_tcp_port_also_allocates_a_dedicated_v4(sb: Sandbox, fly: Fly) -> None:
    c = spawn(fly, "fresh", [(8000, "http"), (22, "tcp")])
    assert kinds(sb, "fresh") == ["shared_v4", "v4", "v6"]
    (v4,) = [a["ip"] for a in sb.fly.addresses("fresh") if addresses.kind_of(a) == "v4"]
    ready = fly.wait_ready(c.id, timeout_s=60)
    assert ready.public_ip == v4
    assert all(p.url and sb.fly.reachable(p.url) for p in ready.ports)


def test_a_tcp_only_machine_gets_no_free_addresses_it_cannot_use(sb: Sandbox, fly: Fly) -> None:
    spawn(fly, "fresh", [(5432, "tcp")])
    assert kinds(sb, "fresh") == ["v4"]


# -- apps atlas_nb did not create -----------------------------------------------------------
def test_a_users_app_without_addresses_gets_none_and_wait_ready_says_so(
    sb: Sandbox, fly: Fly, sent: Recorder
) -> None:
    c = spawn(fly, "users-app", [(8000, "http"), (22, "tcp")], create=False)
    assert [p.url for p in c.ports] == [None, None]
    with pytest.raises(ProviderError, match="no public address") as err:
        fly.wait_ready(c.id, timeout_s=60)
    hint = err.value.hint or ""
    assert "fly ips allocate-v4 --shared -a users-app" in hint
    assert "fly ips allocate-v4 -a users-app (a dedicated IPv4, billed monthly)" in hint
    assert not sent.sent("POST", r".*/ip_assignments")


def test_create_app_on_an_existing_app_touches_nothing(sb: Sandbox, fly: Fly,
                                                       sent: Recorder) -> None:
    ip = sb.fly.allocate("users-app", "shared_v4")[0]
    c = spawn(fly, "users-app", [(8000, "http"), (22, "tcp")])  # create_app=True, app exists
    assert not sent.sent("POST", r".*/ip_assignments")
    assert addresses.CREATED_APP_KEY not in metadata(sb, c.id)
    assert c.ports[0].url == "https://users-app.fly.dev" and c.ports[1].url is None
    fly.terminate(c.id)
    assert "users-app" in sb.fly.state.apps
    assert [a["ip"] for a in sb.fly.addresses("users-app")] == [ip]
    assert not sent.sent("DELETE", r".*/ip_assignments/.*") and not sent.sent(
        "DELETE", "/v1/apps/users-app")


# -- release on the last terminate ----------------------------------------------------------
def test_the_last_terminate_releases_the_addresses_and_deletes_the_app(
    sb: Sandbox, fly: Fly, sent: Recorder
) -> None:
    first = spawn(fly, "fresh", [(8000, "http")])
    second = spawn(fly, "fresh", [(8000, "http")])
    assert len(sent.sent("POST", r".*/ip_assignments")) == 2, "the second spawn reuses them"
    fly.terminate(first.id)
    assert kinds(sb, "fresh") == ["shared_v4", "v6"], "a machine is left: nothing released"
    fly.terminate(second.id)
    assert "fresh" not in sb.fly.state.apps
    assert len(sent.sent("DELETE", r"/v1/apps/fresh/ip_assignments/.*")) == 2
    assert len(sent.sent("DELETE", "/v1/apps/fresh")) == 1
    assert fly.terminate(second.id) is None  # idempotent: the app is gone


def test_an_address_added_by_a_later_spawn_is_released_whichever_machine_goes_last(
    sb: Sandbox, fly: Fly
) -> None:
    web = spawn(fly, "fresh", [(8000, "http")])
    ssh = spawn(fly, "fresh", [(22, "tcp")])  # needs a dedicated IPv4 the app lacked
    assert kinds(sb, "fresh") == ["shared_v4", "v4", "v6"]
    every = {a["ip"] for a in sb.fly.addresses("fresh")}
    assert addresses.created_ips(metadata(sb, web.id)) == every  # the sibling learned it
    fly.terminate(ssh.id)
    assert kinds(sb, "fresh") == ["shared_v4", "v4", "v6"]
    fly.terminate(web.id)
    assert "fresh" not in sb.fly.state.apps


def test_an_address_someone_else_added_keeps_the_app(sb: Sandbox, fly: Fly) -> None:
    c = spawn(fly, "fresh", [(8000, "http")])
    theirs = sb.fly.allocate("fresh", "v4")[0]  # `fly ips allocate-v4` by hand
    fly.terminate(c.id)
    assert [a["ip"] for a in sb.fly.addresses("fresh")] == [theirs]
    assert "fresh" in sb.fly.state.apps, "deleting it would release their address"


def test_a_failed_machine_create_rolls_back_the_app_and_its_addresses(
    sb: Sandbox, fly: Fly
) -> None:
    sb.fly.set_capacity("ord", [])
    with pytest.raises(ProviderError, match="no capacity"):
        spawn(fly, "fresh", [(8000, "http")], gpu="l40s", region_hints=["ord"])
    assert "fresh" not in sb.fly.state.apps


def test_a_terminate_repeated_after_a_failed_cleanup_finishes_it(sb: Sandbox, fly: Fly) -> None:
    c = spawn(fly, "fresh", [(8000, "http")])
    rule = sb.faults("fly:DELETE /v1/apps/fresh", error_rate={503: 1.0})
    with pytest.raises(ProviderError):
        fly.terminate(c.id)
    rule.clear()
    assert "fresh" in sb.fly.state.apps and sb.fly.addresses("fresh") == []
    fly.terminate(c.id)  # the destroyed machine is still readable: its record finishes it
    assert "fresh" not in sb.fly.state.apps
    with pytest.raises(NotFound):
        fly.get_compute(c.id)
