"""Fly Machines wire translation (pure functions) checked against Fly's Machines OpenAPI spec."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from atlas_nb import ComputeRequest, Unsupported, ValidationError
from atlas_nb.fly.auth_header import authorization
from atlas_nb.gpus import GPUS
from atlas_nb.models import COMPUTE_STATUSES
from atlas_nb.providers.fly import prices, sizes, wire
from atlas_nb.sandbox.schemas import component_errors, load_spec

SPEC = "fly/machines-openapi3.json"

# A Machine as Fly's docs show a create answer (superfly/docs
# reference/machines/launch_syd_resp.html.md), plus an env block. The doc's null
# `init`/`metadata` fields and empty restart policy are dropped: the current spec
# declares none of them nullable.
LAUNCH_SYD: dict[str, Any] = {
    "id": "10e286064b1867",
    "name": "machine-syd",
    "state": "starting",
    "region": "syd",
    "instance_id": "01G3H70Q5C24GMEMCXHSBDGN9H",
    "private_ip": "fdaa:0:3ec2:a7b:8566:845e:9f47:2",
    "config": {
        "env": {"ATLAS_PRESHARED_KEY": "tok-secret-123456"},
        "image": "flyio/fastify-functions",
        "services": [{
            "internal_port": 8080,
            "ports": [{"handlers": ["tls", "http"], "port": 443},
                      {"handlers": ["http"], "port": 80}],
            "protocol": "tcp",
        }],
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
    },
    "image_ref": {"registry": "registry-1.docker.io", "repository": "flyio/fastify-functions",
                  "tag": "latest", "digest": "sha256:e15c11a0", "labels": {}},
    "created_at": "2022-05-20T17:07:36Z",
}


def _request(**fields: Any) -> ComputeRequest:
    return ComputeRequest(**{"image": "ghcr.io/me/srv:1", **fields})


# -- status map -------------------------------------------------------------------------
def _spec_states() -> set[str]:
    """Every machine state the spec names: the wait ``state`` enum and the list filter."""
    spec = load_spec(SPEC)
    wait = spec["paths"]["/apps/{app_name}/machines/{machine_id}/wait"]["get"]
    enum = next(p for p in wait["parameters"] if p["name"] == "state")["schema"]["enum"]
    listing = spec["paths"]["/apps/{app_name}/machines"]["get"]["parameters"]
    text = next(p for p in listing if p["name"] == "state")["description"]
    named = re.search(r"\(([^)]*)\)", text)
    assert named, f"the list filter no longer names its states: {text!r}"
    return set(enum) | {s.strip() for s in named.group(1).split(",")}


# Fly's machine states table (superfly/docs@5c22c8ce:machines/machine-states.html.markerb).
DOCUMENTED_STATES = {
    "created", "started", "stopped", "suspended", "failed",
    "creating", "starting", "stopping", "restarting", "suspending", "destroying",
    "launch_failed", "updating", "replacing",
    "destroyed", "replaced", "migrated",
}


def test_status_map_covers_every_state_in_the_spec_and_the_docs() -> None:
    states = _spec_states()
    assert "settled" in states
    assert {"settled"} == wire.WAIT_PSEUDO_STATES
    missing = (states - wire.WAIT_PSEUDO_STATES | DOCUMENTED_STATES) - set(wire.MACHINE_STATUS)
    assert not missing, f"MACHINE_STATUS lacks {sorted(missing)}"
    assert set(wire.MACHINE_STATUS.values()) <= set(COMPUTE_STATUSES)


@pytest.mark.parametrize(("state", "status"), [
    ("created", "provisioning"), ("starting", "provisioning"), ("started", "running"),
    ("stopping", "stopped"), ("stopped", "stopped"), ("suspended", "stopped"),
    ("destroying", "terminated"), ("destroyed", "terminated"), ("failed", "failed"),
    ("launch_failed", "failed"), ("hibernating", "unknown"), ("", "unknown"),
])
def test_machine_states_map_to_compute_statuses(state: str, status: str) -> None:
    machine = {**copy.deepcopy(LAUNCH_SYD), "state": state}
    assert wire.compute_from_wire(machine, "my-app").status == status


# -- auth and ids -------------------------------------------------------------------------
@pytest.mark.parametrize(("token", "header"), [
    ("fm2_lJPECAAAAAAAAMoU", "FlyV1 fm2_lJPECAAAAAAAAMoU"),
    ("fm2_aaa,fm2_bbb", "FlyV1 fm2_aaa,fm2_bbb"),
    ("fm1r_abc", "FlyV1 fm1r_abc"),
    ("FlyV1 fm2_verbatim", "FlyV1 fm2_verbatim"),
    ("Bearer already", "Bearer already"),
    ("Bearer fm2_pasted", "FlyV1 fm2_pasted"),
    ("personal-access-token", "Bearer personal-access-token"),
    ("sandbox-fly-key", "Bearer sandbox-fly-key"),
])
def test_authorization_follows_flyctl(token: str, header: str) -> None:
    # The provider uses the one header rule in atlas_nb.fly.auth_header.
    assert authorization(token) == header


def test_compute_ids_carry_the_app() -> None:
    assert wire.compute_id("my-app", "3d8d9") == "my-app/3d8d9"
    assert wire.split_id("my-app/3d8d9", None) == ("my-app", "3d8d9")
    assert wire.split_id("3d8d9", "default-app") == ("default-app", "3d8d9")
    with pytest.raises(ValidationError, match=r"names no app.*default_app"):
        wire.split_id("3d8d9", None)
    with pytest.raises(ValidationError, match="not a Fly machine id"):
        wire.split_id("my-app/a?b=c", None)
    with pytest.raises(ValidationError, match=r"app name 'my-app/\.\.' is not valid"):
        wire.split_id("my-app/../etc", None)
    with pytest.raises(ValidationError, match="not valid"):
        wire.split_id("My_App/3d8d9", None)


# -- sizes --------------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "guest"), [
    ({}, {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}),
    ({"memory_gb": 0.3}, {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512}),
    ({"memory_gb": 4}, {"cpu_kind": "shared", "cpus": 2, "memory_mb": 4096}),
    ({"memory_gb": 20}, {"cpu_kind": "performance", "cpus": 4, "memory_mb": 20480}),
    ({"cpus": 4}, {"cpu_kind": "shared", "cpus": 4, "memory_mb": 1024}),
    ({"cpus": 2, "memory_gb": 6}, {"cpu_kind": "performance", "cpus": 2, "memory_mb": 6144}),
    ({"cpus": 16}, {"cpu_kind": "performance", "cpus": 16, "memory_mb": 32768}),
    ({"gpu": "l40s"}, {"cpu_kind": "performance", "cpus": 8, "memory_mb": 32768,
                       "gpu_kind": "l40s", "gpus": 1}),
    ({"gpu": "a100_80g", "gpu_count": 2}, {"cpu_kind": "performance", "cpus": 16,
                                           "memory_mb": 65536, "gpu_kind": "a100-sxm4-80gb",
                                           "gpus": 2}),
    ({"gpu": "a100_40g", "memory_gb": 40}, {"cpu_kind": "performance", "cpus": 8,
                                            "memory_mb": 40960, "gpu_kind": "a100-pcie-40gb",
                                            "gpus": 1}),
])
def test_guest_sizes(fields: dict[str, Any], guest: dict[str, Any]) -> None:
    spec = sizes.guest(_request(**fields))
    assert spec == guest
    assert spec["memory_mb"] % 256 == 0
    assert component_errors(SPEC, "fly.MachineGuest", spec) == []


@pytest.mark.parametrize(("fields", "message"), [
    ({"cpus": 3}, r"cpus=3: Fly performance machines come with 1, 2, 4, 8, 16"),
    ({"cpus": 1, "memory_gb": 16}, r"memory_gb=16: .* 1 vCPUs takes 2-8 GB"),
    ({"gpu": "l40s", "gpu_count": 3}, r"gpu_count=3: Fly machines take 1, 2, 4 or 8 GPUs"),
    ({"gpu": "a10", "cpus": 12}, r"cpus=12"),
])
def test_impossible_sizes_say_how_to_fix_them(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        sizes.guest(_request(**fields))


def test_a_gpu_fly_lacks_is_unsupported_naming_what_it_offers() -> None:
    offers = "fly does not offer h100; it offers: a10, a100_40g, a100_80g, l40s"
    with pytest.raises(Unsupported, match=offers):
        sizes.guest(_request(gpu="h100"))


# -- create body --------------------------------------------------------------------------
def test_create_body_is_a_valid_create_machine_request() -> None:
    req = _request(ports=[(8000, "http"), (9000, "http"), (22, "tcp"), (5353, "udp")],
                   env={"A": "1"}, name="srv", container_disk_gb=20, region_hints=["ams"])
    body = wire.create_body(req, name="srv", marker="m-1")
    assert component_errors(SPEC, "CreateMachineRequest", body) == []
    assert body["name"] == "srv" and body["region"] == "ams"
    config = body["config"]
    assert config["image"] == "ghcr.io/me/srv:1"
    assert config["env"] == {"A": "1"}
    assert config["metadata"] == {wire.MARKER_KEY: "m-1"}
    assert config["rootfs"] == {"size_gb": 20}
    first, second, tcp, udp = config["services"]
    assert first == {"protocol": "tcp", "internal_port": 8000, "ports": [
        {"port": 443, "handlers": ["tls", "http"]},
        {"port": 80, "handlers": ["http"], "force_https": True}]}
    assert second["ports"] == [{"port": 9000, "handlers": ["tls", "http"]}]
    assert tcp == {"protocol": "tcp", "internal_port": 22, "ports": [{"port": 22}]}
    assert udp == {"protocol": "udp", "internal_port": 5353, "ports": [{"port": 5353}]}


def test_create_body_places_a_gpu_where_fly_hosts_it() -> None:
    assert wire.create_body(_request(gpu="l40s"), name="g", marker="m")["region"] == "ord"
    body = wire.create_body(_request(gpu="a100_80g", region_hints=["ams", "sjc"]),
                            name="g", marker="m")
    assert body["region"] == "sjc"
    assert "region" not in wire.create_body(_request(), name="c", marker="m")


def test_provider_opts_merge_into_the_body_except_the_providers_own() -> None:
    guest = {"cpu_kind": "performance", "memory_mb": 2048}
    req = _request(provider_opts={"app": "x", "create_app": True, "org": "acme",
                                  "config": {"auto_destroy": True, "guest": guest},
                                  "skip_service_registration": True})
    body = wire.create_body(req, name="n", marker="m")
    assert not {"app", "create_app", "org"} & set(body)
    assert body["config"]["auto_destroy"] is True
    assert body["config"]["guest"] == {"cpu_kind": "performance", "cpus": 1, "memory_mb": 2048}
    assert body["skip_service_registration"] is True
    assert component_errors(SPEC, "CreateMachineRequest", body) == []


@pytest.mark.parametrize(("fields", "error", "message"), [
    ({"spot": True}, Unsupported, "spot"),
    ({"volume_gb": 10}, ValidationError, "mounts"),
    ({"network_volume_id": "vol_1"}, ValidationError, "mounts"),
    ({"cloud_type": "community"}, ValidationError, "community"),
    ({"template_id": "t", "image": None}, ValidationError, "templates"),
    ({"gpu": "a100_80g", "max_price_per_hour": 1.0}, ValidationError,
     r"costs \$3\.9556/h .* above max_price_per_hour=1"),
])
def test_requests_fly_cannot_express(fields: dict[str, Any], error: type[Exception],
                                     message: str) -> None:
    with pytest.raises(error, match=message):
        wire.create_body(_request(**fields), name="n", marker="m")


# -- responses ----------------------------------------------------------------------------
def test_compute_from_the_documented_machine() -> None:
    assert component_errors(SPEC, "Machine", LAUNCH_SYD) == []
    shared = [{"ip": "66.241.124.7", "region": "global", "service_name": "", "shared": True}]
    assert component_errors(SPEC, "listIPAssignmentsResponse", {"ips": shared}) == []
    c = wire.compute_from_wire(LAUNCH_SYD, "fastify", shared)
    assert c.id == "fastify/10e286064b1867" and c.provider == "fly"
    assert (c.status, c.region, c.name) == ("provisioning", "syd", "machine-syd")
    assert c.image == "flyio/fastify-functions"
    assert c.gpu_type is None and c.gpu_count == 0
    assert c.cost_per_hour == pytest.approx(1.94 / 720, rel=1e-3)
    assert c.created_at is not None and c.created_at.year == 2022
    (port,) = c.ports
    assert (port.internal, port.external, port.protocol, port.url) == (
        8080, 443, "http", "https://fastify.fly.dev")
    assert "env" not in c.raw["config"], "raw must not carry the machine env"
    assert "tok-secret-123456" not in repr(c.raw)
    assert LAUNCH_SYD["config"]["env"], "the input must not be mutated"


def test_compute_from_a_gpu_machine_with_tcp_ports() -> None:
    machine = copy.deepcopy(LAUNCH_SYD)
    machine["config"]["guest"] = {"cpu_kind": "performance", "cpus": 8, "memory_mb": 32768,
                                  "gpu_kind": "a100-sxm4-80gb", "gpus": 2}
    machine["config"]["services"] = [
        {"protocol": "tcp", "internal_port": 22, "ports": [{"port": 2222}]},
        {"protocol": "tcp", "internal_port": 9000,
         "ports": [{"port": 9000, "handlers": ["tls", "http"]}]},
        {"protocol": "udp", "internal_port": 53, "ports": [{"port": 53}]},
    ]
    dedicated = [{"ip": "137.66.1.2", "region": "global", "shared": False},
                 {"ip": "2a09:8280:1::a:b", "region": "global", "shared": False}]
    c = wire.compute_from_wire(machine, "gpu-app", dedicated)
    assert (c.gpu_type, c.gpu_count) == ("a100_80g", 2)
    assert c.cost_per_hour == pytest.approx(248.0 / 720 + 16 * 5.0 / 720 + 2 * 3.50, rel=1e-4)
    assert c.public_ip == "137.66.1.2"
    assert [(p.internal, p.protocol, p.url) for p in c.ports] == [
        (22, "tcp", "tcp://gpu-app.fly.dev:2222"),
        (9000, "http", "https://gpu-app.fly.dev:9000"),
        (53, "udp", "udp://gpu-app.fly.dev:53"),
    ]


def test_unknown_gpu_kinds_keep_their_fly_name() -> None:
    machine = copy.deepcopy(LAUNCH_SYD)
    machine["config"]["guest"] = {"cpu_kind": "performance", "cpus": 8, "memory_mb": 32768,
                                  "gpu_kind": "h200-sxm-141gb", "gpus": 1}
    assert wire.compute_from_wire(machine, "a").gpu_type == "h200-sxm-141gb"


def test_is_our_create_needs_name_and_marker() -> None:
    machine = copy.deepcopy(LAUNCH_SYD)
    machine["config"]["metadata"] = {wire.MARKER_KEY: "m-1"}
    assert wire.is_our_create(machine, name="machine-syd", marker="m-1")
    assert not wire.is_our_create(machine, name="machine-syd", marker="m-2")
    assert not wire.is_our_create(machine, name="other", marker="m-1")
    assert not wire.is_our_create({**machine, "state": "destroyed"}, name="machine-syd",
                                  marker="m-1")


def test_app_names_from_list_apps_response() -> None:
    body = {"total_apps": 2, "apps": [{"name": "a", "machine_count": 1}, {"id": "x"},
                                      {"name": "b"}]}
    assert component_errors(SPEC, "ListAppsResponse", body) == []
    assert wire.app_names(body) == ["a", "b"]
    assert wire.app_names({"error": "nope"}) == []


# -- static prices --------------------------------------------------------------------------
def test_gpu_types_are_the_documented_static_table() -> None:
    types = {g.id: g for g in wire.gpu_types()}
    assert set(types) == {"a10", "l40s", "a100-pcie-40gb", "a100-sxm4-80gb"}
    assert {k: g.price_per_hour for k, g in types.items()} == {
        "a10": 1.50, "l40s": 1.25, "a100-pcie-40gb": 2.50, "a100-sxm4-80gb": 3.50}
    for g in types.values():
        assert g.provider == "fly" and g.canonical in GPUS and g.gpu_count == 1
        assert g.raw["static"] is True and g.raw["source"] and g.raw["as_of"]
        assert "deprecated" in g.raw["note"]
        assert g.regions, f"{g.id} lists no region"
    assert types["a100-sxm4-80gb"].regions == ("iad", "sjc", "syd")


def test_gpu_types_take_regions_from_placements_and_never_read_limits_as_stock() -> None:
    # count=0 (the default we send) answers "the org-specific limit for each region"
    # (spec, main.getPlacementsRequest.count): a region listed with a limit above 0 is
    # one the org may use; the figure says nothing about free capacity.
    answers = [
        {"regions": []},
        {"regions": [{"region": "ord", "count": 12, "concurrency": 12}]},
        {"regions": [{"region": "ord", "count": 0}, {"count": 3}]},
        {"regions": [{"region": "syd", "count": 1}, {"region": "iad", "count": 1}]},
    ]
    for answer in answers:
        assert component_errors(SPEC, "main.getPlacementsResponse", answer) == []
    got = [(g.id, g.regions, g.stock) for g in wire.gpu_types(prices.GPU_PRICES, answers)]
    assert got == [("a10", (), "none"), ("l40s", ("ord",), None),
                   ("a100-pcie-40gb", (), "none"), ("a100-sxm4-80gb", ("iad", "syd"), None)]
    assert wire.gpu_types(prices.GPU_PRICES, answers)[1].raw["placement_limits"] == {"ord": 12}
    with pytest.raises(ValueError):
        wire.gpu_types(prices.GPU_PRICES, answers[:2])


def test_placement_keys_are_read_as_go_decodes_them() -> None:
    # fly-go's RegionPlacement fields are untagged: encoding/json matches them ignoring case.
    answer = {"Regions": [{"Region": "ord", "Count": 4, "Concurrency": 4}]}
    assert wire.placement_limits(answer) == {"ord": 4}


def test_placements_ask_for_the_preset_a_spawn_would_use() -> None:
    body = wire.placements_body(prices.GPU_PRICES[1], "personal")
    assert component_errors(SPEC, "main.getPlacementsRequest", body) == []
    assert body == {"org_slug": "personal", "compute": sizes.guest(_request(gpu="l40s"))}
    assert "count" not in body  # 0, the default: the org's limits, region by region


def test_every_fly_gpu_in_the_gpu_table_has_a_price() -> None:
    fly_kinds = {wire.GPU_IDS.ids(name)[0] for name in wire.GPU_IDS.offered()}
    assert fly_kinds == {row.kind for row in prices.GPU_PRICES}


@pytest.mark.parametrize(("kind", "cpus", "memory_mb", "monthly"), [
    ("shared", 1, 256, 1.94),
    ("shared", 1, 1024, 1.94 + 0.75 * 5),
    ("performance", 2, 4096, 62.0),
    ("performance", 8, 32768, 248.0 + 16 * 5),
])
def test_cpu_prices_are_presets_plus_extra_ram(kind: str, cpus: int, memory_mb: int,
                                               monthly: float) -> None:
    assert prices.cpu_price_per_hour(kind, cpus, memory_mb) == pytest.approx(monthly / 720)


def test_unknown_sizes_have_no_price() -> None:
    assert prices.cpu_price_per_hour("shared", 16, 4096) is None
    assert prices.machine_price_per_hour("turbo", 1, 256) == 0.0
