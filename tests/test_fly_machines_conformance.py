"""The Fly provider against the sandbox's Fly cloud over real loopback sockets.

The shipped conformance suite runs with ``provider="fly"`` resolved like a user's
call (the attached sandbox, its key, ``providers.fly.default_app`` from the config
file), then Fly-specific flows: GPUs placed where Fly hosts them, ``create_app``,
capacity errors, faults on create. The sandbox validates every request and
response against Fly's spec; any contract violation fails the module's teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import atlas_nb as atlas
from atlas_nb import config, sandbox
from atlas_nb.providers.fly import Fly
from atlas_nb.sandbox.server import Sandbox
from atlas_nb.testing import ConformanceOptions, ProviderConformance

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

APP = "atlas-conf"


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    # APP stands for the user's own deployed app: it has the addresses `fly ips allocate-*`
    # gives (a dedicated IPv4 too, for the suite's raw TCP port).
    options = {"fly": {"apps": [APP], "app_ips": {APP: ["shared_v4", "v6", "v4"]},
                       "stop_delay_s": 0.05, "destroy_delay_s": 0.05}}
    with sandbox.start(validate=True, clouds=["fly"], provision_delay_s=0.05,
                       start_delay_s=0.05, options=options) as box:
        assert box.url.startswith("http://127.0.0.1:"), "the suite must run over a socket"
        yield box
        assert box.violations == [], "\n".join(box.violations)
        assert box.stats()["requests"] > 0


@pytest.fixture
def default_app(sb: Sandbox) -> Path:
    path = config.config_path()
    path.write_text(f"providers:\n  fly:\n    default_app: {APP}\n", encoding="utf-8")
    return path


class TestFlyOnSandbox(ProviderConformance):
    @pytest.fixture
    def provider(self, sb: Sandbox, default_app: Path) -> Any:
        return "fly"

    @pytest.fixture
    def options(self, sb: Sandbox) -> ConformanceOptions:
        return ConformanceOptions(
            spawn={"image": "atlas/conformance:latest", "ports": [(8000, "http"), (22, "tcp")]},
            pod_env=sb.fly.machine_env,
            ready_timeout_s=15.0,
            poll_s=0.1,
        )


# -- Fly-specific flows over the socket ---------------------------------------------------
def test_gpu_machine_lands_where_fly_hosts_the_gpu(sb: Sandbox) -> None:
    c = atlas.spawn_compute(provider="fly", gpu="l40s", image="me/llm:1",
                            ports=[(8000, "http")], provider_opts={"app": APP})
    try:
        assert (c.gpu_type, c.gpu_count, c.region) == ("l40s", 1, "ord")
        assert c.cost_per_hour == pytest.approx(1.25 + (248 + 16 * 5) / 720, rel=1e-4)
        guest = sb.fly.machine(APP, c.id.split("/")[1])["config"]["guest"]
        assert guest == {"cpu_kind": "performance", "cpus": 8, "memory_mb": 32768,
                         "gpu_kind": "l40s", "gpus": 1}
        ready = atlas.wait_ready(c.id, provider="fly", timeout_s=15)
        assert ready.status == "running" and ready.url == f"https://{APP}.fly.dev"
        assert [x.id for x in atlas.list_compute(provider=Fly(APP), gpu="l40s")] == [c.id]
    finally:
        atlas.terminate(c.id, provider="fly")


def test_no_capacity_names_the_regions_to_try(sb: Sandbox) -> None:
    sb.fly.set_capacity("sjc", [])
    try:
        with pytest.raises(atlas.ProviderError, match="no capacity") as err:
            atlas.spawn_compute(provider="fly", gpu="a100_80g", image="me/llm:1",
                                region_hints=["sjc"], provider_opts={"app": APP})
        assert "region_hints=['iad', 'sjc', 'syd']" in (err.value.hint or "")
    finally:
        sb.fly.set_capacity("sjc", ["a100-sxm4-80gb"])
    assert not [m for (app, _), m in sb.fly.state.machines.items()
                if app == APP and m.region == "sjc"]


def test_create_app_then_spawn_then_stop_start(sb: Sandbox) -> None:
    c = atlas.spawn_compute(provider="fly", image="nginx:1", cpus=2, memory_gb=1,
                            ports=[(80, "http")], name="svc",
                            provider_opts={"app": "fresh-app", "create_app": True})
    try:
        assert c.id.startswith("fresh-app/") and c.name == "svc"
        assert "fresh-app" in sb.fly.state.apps
        ready = atlas.wait_ready(c.id, provider="fly", timeout_s=15)
        assert sb.fly.reachable(ready.url)
        assert atlas.stop(c.id, provider="fly").status == "stopped"
        assert atlas.start(c.id, provider="fly").status in ("provisioning", "running")
        assert atlas.wait_ready(c.id, provider="fly", timeout_s=15).status == "running"
    finally:
        atlas.terminate(c.id, provider="fly")
    # Its last machine gone, the app atlas_nb created goes too (and with it the machine).
    assert "fresh-app" not in sb.fly.state.apps
    with pytest.raises(atlas.NotFound):
        atlas.get_compute(c.id, provider="fly")


def test_wait_ready_times_out_with_atlas_timeout(sb: Sandbox) -> None:
    c = atlas.spawn_compute(provider="fly", image="nginx:1", provider_opts={
        "app": APP, "skip_launch": True})  # stays "created": never starts by itself
    try:
        with pytest.raises(atlas.Timeout, match="not started after 1s"):
            atlas.wait_ready(c.id, provider="fly", timeout_s=1)
    finally:
        atlas.terminate(c.id, provider="fly")


def test_lost_create_answers_make_no_duplicates(sb: Sandbox) -> None:
    rule = sb.faults("fly:POST /v1/apps/*/machines", lost_response_rate=0.5, seed=7)
    app = "dup-check"
    try:
        made = [atlas.spawn_compute(provider="fly", image="nginx:1", name=f"dup-{i}",
                                    provider_opts={"app": app, "create_app": True}).id
                for i in range(12)]
    finally:
        rule.clear()
    assert rule.injected["lost"] > 0, "the fault never fired: the test proves nothing"
    live = [m for (owner, _), m in sb.fly.state.machines.items() if owner == app]
    assert sorted(m.name for m in live) == sorted(f"dup-{i}" for i in range(12))
    assert sorted(made) == sorted(f"{app}/{m.id}" for m in live)
    for cid in made:
        atlas.terminate(cid, provider="fly")
