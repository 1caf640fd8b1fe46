"""Issue 14's real-cloud fidelity items on the cheapest resources: ``pytest -m live``.

* RunPod: a CPU pod with an HTTP and a TCP port; ``public_ip`` comes only from a public
  TCP mapping, never from the private 100.65.x.x address of the HTTP proxy (#12).
* Fly: a ``shared-cpu-1x`` machine in an app atlas_nb creates; the app gets its addresses
  (shared IPv4 + IPv6 for HTTP, #1), the port URL appears only once they exist, and
  terminating the last machine deletes the app and releases the addresses.
* Vast: an offer search (the catalog) and the statuses of the account's instances (#5):
  read-only, nothing is rented.
* Lambda: the catalog.

Whatever is spawned is terminated in a ``finally``. Keys and targets: ``conftest.py``.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from live_env import FLY_ORG_VAR, LiveSettings

import atlas_nb
from atlas_nb import sandbox
from atlas_nb.errors import NotFound
from atlas_nb.models import ComputeRequest
from atlas_nb.providers.fly import Fly
from atlas_nb.providers.lambda_labs import LambdaLabs
from atlas_nb.providers.runpod import RunPod
from atlas_nb.providers.vast import Vast

pytestmark = [pytest.mark.live, pytest.mark.timeout(1200)]

IMAGE = "nginx:1.27-alpine"


@pytest.fixture(autouse=True)
def _no_attached_sandbox() -> None:
    if sandbox.active_url() is not None:
        pytest.fail("a sandbox is attached: live tests talk to a real cloud or to "
                    "ATLAS_NB_LIVE_BASE_URLS; unset ATLAS_NB_SANDBOX")


def _name() -> str:
    return f"atlas-live-{secrets.token_hex(4)}"


def _terminate(provider: Any, compute_id: str) -> None:
    try:
        provider.terminate(compute_id)
    except Exception as exc:  # still billing: say so loudly, naming it
        pytest.fail(f"could not terminate {compute_id} ({exc}): it may still be billing")


def test_runpod_cpu_pod_public_ip_comes_from_tcp_only(live_settings: LiveSettings) -> None:
    live_settings.require("runpod")
    rp = RunPod(api_key=live_settings.key("runpod"), base_url=live_settings.base_url("runpod"))
    request = ComputeRequest(gpu=None, image=IMAGE, name=_name(),
                             ports=[(80, "http"), (22, "tcp")])
    compute = rp.spawn_compute(request)
    try:
        ready = atlas_nb.wait_ready(compute.id, provider=rp, timeout_s=600)
        http = next(p for p in ready.ports if p.protocol == "http")
        assert http.url == f"https://{ready.id}-80.proxy.runpod.net"
        tcp = next(p for p in ready.ports if p.protocol == "tcp")
        if ready.public_ip is not None:
            assert not ready.public_ip.startswith("100.65."), ready.public_ip  # proxy-private
            assert tcp.url == f"tcp://{ready.public_ip}:{tcp.external}"
    finally:
        _terminate(rp, compute.id)


def test_fly_created_app_gets_addresses_and_goes_with_its_last_machine(
    live_settings: LiveSettings,
) -> None:
    if not live_settings.key("fly"):
        pytest.skip("live fly: set FLY_API_TOKEN (or FLY_ACCESS_TOKEN) to run")
    app = _name()
    fly = Fly(app=app, org=live_settings.get(FLY_ORG_VAR), api_key=live_settings.key("fly"),
              base_url=live_settings.base_url("fly"))
    request = ComputeRequest(gpu=None, image=IMAGE, name=_name(), ports=[(80, "http")],
                             provider_opts={"create_app": True})
    compute = fly.spawn_compute(request)
    machines = fly.client("machines")
    try:
        assert compute.raw["config"]["guest"]["cpu_kind"] == "shared"  # shared-cpu-1x
        ips = machines.request("GET", f"/v1/apps/{app}/ip_assignments")
        assigned = ips.get("ips") if isinstance(ips, dict) else ips
        assert assigned, f"app {app} has no public address: {app}.fly.dev would not resolve"
        ready = atlas_nb.wait_ready(compute.id, provider=fly, timeout_s=300)
        assert ready.ports[0].url is not None and f"{app}.fly.dev" in ready.ports[0].url
    finally:
        _terminate(fly, compute.id)
    with pytest.raises(NotFound):  # the app atlas_nb created went with its last machine
        machines.request("GET", f"/v1/apps/{app}")


def test_vast_offer_search_and_statuses(live_settings: LiveSettings) -> None:
    live_settings.require("vast")
    vast = Vast(api_key=live_settings.key("vast"), base_url=live_settings.base_url("vast"))
    offers = vast.list_gpu_types()
    assert offers, "no Vast offers found"
    assert all(o.price_per_hour and o.price_per_hour > 0 for o in offers)
    for compute in vast.list_compute():
        # every documented actual_status maps to a real state (issue 14 #5)
        actual = compute.raw.get("actual_status")
        if actual not in ("unknown", "offline"):
            assert compute.status != "unknown", actual
    for compute in vast.list_compute(status="stopped"):
        assert compute.status == "stopped"


def test_lambda_catalog(live_settings: LiveSettings) -> None:
    if not live_settings.key("lambda_labs"):
        pytest.skip("live lambda_labs: set LAMBDA_LABS_API_KEY (or LAMBDA_API_KEY) to run")
    lam = LambdaLabs(api_key=live_settings.key("lambda_labs"),
                     base_url=live_settings.base_url("lambda_labs"))
    rows = lam.list_gpu_types()
    assert rows, "Lambda's catalog is empty"
    for row in rows:
        assert row.price_per_hour and row.price_per_hour > 0, row.id
        assert row.stock in ("available", "none")
        assert row.gpu_count >= 1
