"""Vast wire translation: pure functions against payloads shaped like the vendored spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import atlas_nb as atlas
from atlas_nb.errors import AtlasError, NotFound
from atlas_nb.models import COMPUTE_STATUSES, ComputeRequest
from atlas_nb.providers.vast import wire
from atlas_nb.sandbox.vast.instances import parse_env

SPEC = yaml.safe_load(
    (Path(atlas.__file__).parent / "sandbox" / "specs" / "vast" / "vast-openapi.yaml")
    .read_text(encoding="utf-8"))
_LIST_ITEM = (SPEC["paths"]["/api/v1/instances"]["get"]["responses"]["200"]["content"]
              ["application/json"]["schema"]["properties"]["instances"]["items"]["properties"])

KNOWN_ACTUAL_STATUS = ("created", "loading", "running", "stopped", "frozen", "exited",
                       "rebooting", "unknown", "offline")
"""Vast's documented actual_status values (docs.vast.ai/cli/reference/show-instances.md) and
vast-cli's ``created``; the spec has no enum."""


def spec_row(**overrides: Any) -> dict[str, Any]:
    """An instance row built from the spec's own per-field examples (v1 list item)."""
    row = {k: v["example"] for k, v in _LIST_ITEM.items() if "example" in v}
    row.update(overrides)
    return row


def req(**fields: Any) -> ComputeRequest:
    return ComputeRequest(**{"gpu": "rtx_4090", "image": "me/srv:1", **fields})


# -- statuses -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [*KNOWN_ACTUAL_STATUS, None, "scheduling"])
def test_status_map_covers_every_known_actual_status_and_null(value: str | None) -> None:
    assert value in wire.STATUS
    assert wire.STATUS[value] in COMPUTE_STATUSES


def test_status_values_seen_in_the_spec_are_covered() -> None:
    seen = {_LIST_ITEM["actual_status"]["example"],
            SPEC["components"]["schemas"]["Instance"]["properties"]["actual_status"]["example"]}
    params = SPEC["paths"]["/api/v1/instances"]["get"]["parameters"]
    example = next(p["example"] for p in params if p["name"] == "select_filters")
    seen.add(json.loads(example)["actual_status"]["eq"])
    assert seen <= set(wire.STATUS)


@pytest.mark.parametrize(("row", "status"), [
    ({"actual_status": None}, "provisioning"),
    ({}, "provisioning"),
    ({"actual_status": "loading"}, "provisioning"),
    ({"actual_status": "running"}, "running"),
    ({"actual_status": "exited"}, "stopped"),
    ({"actual_status": "offline"}, "unknown"),
    ({"actual_status": "created", "intended_status": "stopped"}, "stopped"),
    ({"actual_status": "created", "intended_status": "running"}, "provisioning"),
    ({"actual_status": "RUNNING"}, "running"),
    ({"actual_status": "frobnicating"}, "unknown"),
    ({"actual_status": 7}, "unknown"),
])
def test_status_from_wire(row: dict[str, Any], status: str) -> None:
    assert wire.status_from_wire(row) == status


# -- search ---------------------------------------------------------------------------------
def test_search_query_filters_gpu_count_price_region_and_reliability() -> None:
    q = wire.search_query(req(gpu_count=2, max_price_per_hour=0.9, region_hints=["us", "DE"],
                              container_disk_gb=40), spot=False)
    assert q["gpu_name"] == {"eq": "RTX 4090"}
    assert q["num_gpus"] == {"eq": 2}
    assert q["dph_total"] == {"lte": 0.9}
    assert q["geolocation"] == {"in": ["US", "DE"]}
    assert q["reliability"] == {"gte": wire.MIN_RELIABILITY}
    assert q["rentable"] == {"eq": True} and q["verified"] == {"eq": True}
    assert q["disk_space"] == {"gte": 40} and q["allocated_storage"] == 40
    assert q["type"] == "on-demand" and q["order"] == [["dph_total", "asc"]]
    assert "datacenter" not in q and "cpu_ram" not in q


def test_search_query_spot_family_cloud_and_sizes() -> None:
    q = wire.search_query(req(gpu="h100", spot=True, cloud_type="secure", cpus=8, memory_gb=64),
                          spot=True)
    assert q["type"] == "bid"
    assert q["gpu_name"] == {"in": ["H100 SXM", "H100 PCIE", "H100 NVL"]}
    assert q["datacenter"] == {"eq": True}
    assert q["cpu_cores_effective"] == {"gte": 8}
    assert q["cpu_ram"] == {"gte": 64_000}  # vast-cli's x1000
    community = wire.search_query(req(cloud_type="community"), spot=False)
    assert community["datacenter"] == {"eq": False}


def test_search_query_merges_provider_opts_search() -> None:
    q = wire.search_query(req(provider_opts={"search": {"reliability": {"gte": 0.99},
                                                        "inet_down": {"gte": 500}}}), spot=False)
    assert q["reliability"] == {"gte": 0.99} and q["inet_down"] == {"gte": 500}


@pytest.mark.parametrize(("fields", "kind", "needle"), [
    ({"gpu": None}, atlas.ValidationError, "GPU machines only"),
    ({"gpu": "gh200"}, atlas.Unsupported, "does not offer gh200"),
    ({"region_hints": ["us-east-1"]}, atlas.ValidationError, "two-letter country codes"),
    ({"container_disk_gb": 20, "volume_gb": 50}, atlas.ValidationError, "single disk"),
])
def test_search_query_rejects_what_vast_cannot_do(fields: dict[str, Any], kind: type,
                                                  needle: str) -> None:
    with pytest.raises(kind, match=needle):
        wire.search_query(req(**fields), spot=False)


def test_rank_offers_takes_reliable_ones_cheapest_first() -> None:
    offers = [
        {"id": 1, "dph_total": 0.30, "min_bid": 0.10, "reliability": 0.80},
        {"id": 2, "dph_total": 0.35, "min_bid": 0.20, "reliability": 0.97},
        {"id": 3, "dph_total": 0.35, "min_bid": 0.12, "reliability": 0.99},
        {"id": 4, "dph_total": 0.50, "min_bid": 0.11, "reliability": 0.98},
        {"id": "bad"}, "junk",
    ]
    assert [o["id"] for o in wire.rank_offers(offers, spot=False)] == [3, 2, 4]
    assert [o["id"] for o in wire.rank_offers(offers, spot=True)] == [4, 3, 2]


# -- create body ----------------------------------------------------------------------------
def test_create_body_is_a_spec_create_request_with_env_flags() -> None:
    body = wire.create_body(req(env={"HF_HOME": "/data", "GREETING": "hello world"},
                                ports=[(8000, "http"), (22, "tcp"), (5000, "udp")],
                                container_disk_gb=30, name="ignored"),
                            name="atlas-x", marker="m1", bid=None)
    assert body["label"] == "atlas-x" and body["image"] == "me/srv:1"
    assert body["disk"] == 30 and body["runtype"] == "args" and "price" not in body
    assert isinstance(body["env"], str)  # the spec's type for env
    env, ports = parse_env(body["env"])  # what the sandbox (a shlex reader) gets back
    assert env == {"HF_HOME": "/data", "GREETING": "hello world", "ATLAS_REQUEST_ID": "m1",
                   "ATLAS_PORTS": "8000/http,22/tcp,5000/udp"}
    assert ports == ["8000:8000", "22:22", "5000:5000/udp"]
    schema = (SPEC["paths"]["/api/v0/asks/{id}"]["put"]["requestBody"]["content"]
              ["application/json"]["schema"])
    # client_id "me" is what vast-cli sends on every create; the spec does not list it.
    assert set(body) <= set(schema["properties"]) | {"client_id"}


def test_create_body_bid_template_and_provider_opts() -> None:
    body = wire.create_body(req(image=None, template_id="4e17788f",
                                provider_opts={"runtype": "ssh", "search": {"x": 1}}),
                            name="n", marker="m", bid=0.123456)
    assert body["price"] == 0.1235 and body["template_hash_id"] == "4e17788f"
    assert body["runtype"] == "ssh" and "search" not in body and "image" not in body


@pytest.mark.parametrize(("env", "needle"), [
    ({"BAD-NAME": "1"}, "not a valid variable name"),
    ({"Q": 'say "hi"'}, "cannot carry quotes"),
    ({"NL": "a\nb"}, "newlines"),
])
def test_create_body_rejects_env_the_flag_string_cannot_carry(env: dict[str, str],
                                                              needle: str) -> None:
    with pytest.raises(atlas.ValidationError, match=needle):
        wire.create_body(req(env=env), name="n", marker="m", bid=None)


def test_create_body_rejects_network_volumes() -> None:
    with pytest.raises(atlas.ValidationError, match="network volumes"):
        wire.create_body(req(network_volume_id="vol1"), name="n", marker="m", bid=None)


# -- instance rows --------------------------------------------------------------------------
def _running_row(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        actual_status="running", label="atlas-demo", gpu_name="RTX 4090", num_gpus=2,
        public_ipaddr="192.0.2.45",
        ports={"8000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41234"}],
               "22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41235"}]},
        extra_env=[["ATLAS_PRESHARED_KEY", "tok-secret"], ["ATLAS_PORTS", "8000/http,22/tcp"],
                   ["ATLAS_REQUEST_ID", "m1"], ["-p 8000:8000", "1"]])
    return spec_row(**{**fields, **overrides})


def test_compute_from_a_spec_shaped_running_row() -> None:
    c = wire.compute_from_wire(_running_row())
    assert (c.id, c.provider, c.status, c.name) == ("312", "vast", "running", "atlas-demo")
    assert (c.gpu_type, c.gpu_count) == ("rtx_4090", 2)
    assert c.public_ip == "192.0.2.45" and c.region == "California, United States"
    assert c.image == "nvidia/cuda:11.0.3-devel-ubuntu18.04"
    assert c.cost_per_hour == pytest.approx(0.8021)  # the spec example's instance.totalHour
    assert c.created_at is not None and c.created_at.year == 2022
    assert [(p.internal, p.external, p.protocol, p.url) for p in c.ports] == [
        (8000, 41234, "http", "http://192.0.2.45:41234"),
        (22, 41235, "tcp", "tcp://192.0.2.45:41235"),
    ]
    assert c.ready and c.url == "http://192.0.2.45:41234"


def test_raw_keeps_no_env_token_or_startup_script() -> None:
    raw = wire.compute_from_wire(_running_row()).raw
    text = json.dumps(raw)
    assert "tok-secret" not in text
    for key in ("extra_env", "jupyter_token", "onstart"):
        assert key not in raw
    assert raw["label"] == "atlas-demo" and raw["machine_id"] == 12


def test_ports_are_unreachable_until_vast_maps_them() -> None:
    c = wire.compute_from_wire(_running_row(actual_status="loading", ports=None))
    assert c.status == "provisioning"
    assert [(p.internal, p.url) for p in c.ports] == [(8000, None), (22, None)]
    assert not c.ready


def test_ports_without_our_marker_are_tcp() -> None:
    c = wire.compute_from_wire(_running_row(extra_env=[]))
    assert {(p.internal, p.protocol, p.url) for p in c.ports} == {
        (8000, "tcp", "tcp://192.0.2.45:41234"), (22, "tcp", "tcp://192.0.2.45:41235")}


def test_cost_falls_back_to_dph_total_and_unknown_gpu_keeps_vast_name() -> None:
    row = spec_row(gpu_name="RTX 3060", dph_total=0.27)
    del row["instance"]
    c = wire.compute_from_wire(row)
    assert c.cost_per_hour == 0.27 and c.gpu_type == "RTX 3060"


def test_env_from_wire_reads_pairs_and_the_clis_dict_form() -> None:
    assert wire.env_from_wire({"extra_env": [["A", "1"], ["-p 80:80", "1"], ["bad"]]}) == {"A": "1"}
    assert wire.env_from_wire({"extra_env": {"A": "1", "-p 80:80": "1"}}) == {"A": "1"}
    assert wire.env_from_wire({"extra_env": None}) == {}


def test_instance_page_and_is_our_create() -> None:
    rows, token = wire.instance_page({"instances": [_running_row(), "junk"], "next_token": "t"})
    assert len(rows) == 1 and token == "t"
    assert wire.instance_page({"instances": [], "next_token": None}) == ([], None)
    row = _running_row()
    assert wire.is_our_create(row, name="atlas-demo", marker="m1", name_is_ours=False)
    assert not wire.is_our_create(row, name="atlas-demo", marker="m2", name_is_ours=True)
    assert not wire.is_our_create(row, name="other", marker="m1", name_is_ours=True)
    bare = _running_row(extra_env=[])
    assert wire.is_our_create(bare, name="atlas-demo", marker="m1", name_is_ours=True)
    assert not wire.is_our_create(bare, name="atlas-demo", marker="m1", name_is_ours=False)


def test_offer_vanished_reads_no_such_ask_on_404_and_410() -> None:
    gone = {"success": False, "error": "invalid_args",
            "msg": "error 404/3603: no_such_ask Instance type by id 1 is not available."}
    assert wire.offer_vanished(NotFound("x", status=404, raw=gone))
    assert wire.offer_vanished(NotFound("x", status=410, raw={"error": "no_such_ask"}))
    assert not wire.offer_vanished(NotFound("x", status=404, raw={"error": "not_found"}))
    assert not wire.offer_vanished(AtlasError("no_such_ask", status=400))


@pytest.mark.parametrize(("region", "hit"), [
    ("US", True), ("us", True), ("Texas, US", True), ("DE", False), ("Texas", False)])
def test_matches_region_by_country_code_or_full_location(region: str, hit: bool) -> None:
    c = wire.compute_from_wire(_running_row(geolocation="Texas, US"))
    assert wire.matches(c, status=None, name=None, gpu=None, region=region) is hit


def test_matches_gpu_family_and_name_prefix() -> None:
    c = wire.compute_from_wire(_running_row(gpu_name="H100 SXM"))
    assert wire.matches(c, status="running", name="atlas-", gpu="h100", region=None)
    assert wire.matches(c, status=None, name=None, gpu="h100_sxm", region=None)
    assert not wire.matches(c, status=None, name=None, gpu="h100_pcie", region=None)
    assert not wire.matches(c, status="stopped", name=None, gpu=None, region=None)
    assert not wire.matches(c, status=None, name="other", gpu=None, region=None)


# -- catalog --------------------------------------------------------------------------------
def test_gpu_types_cheapest_median_and_spot_per_gpu_and_count() -> None:
    offers = [
        {"id": 1, "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.40, "min_bid": 0.20,
         "gpu_ram": 24564, "geolocation": "Texas, US"},
        {"id": 2, "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.30, "min_bid": 0.25,
         "gpu_ram": 24564, "geolocation": "Germany, DE"},
        {"id": 3, "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.50, "min_bid": 0.15,
         "gpu_ram": 24564, "geolocation": "US"},
        {"id": 4, "gpu_name": "RTX 4090", "num_gpus": 2, "dph_total": 0.70, "min_bid": 0.30,
         "gpu_ram": 24564, "geolocation": "Quebec, CA"},
        {"id": 5, "gpu_name": "RTX 3060", "num_gpus": 1, "dph_total": 0.10},
        {"id": 6, "gpu_name": None, "num_gpus": 1}, "junk",
    ]
    types = {(g.id, g.gpu_count): g for g in wire.gpu_types_from_offers(offers)}
    assert set(types) == {("RTX 4090", 1), ("RTX 4090", 2), ("RTX 3060", 1)}
    one = types[("RTX 4090", 1)]
    assert (one.price_per_hour, one.spot_price_per_hour) == (0.30, 0.15)
    assert one.raw["median_price_per_hour"] == 0.40 and one.raw["offers"] == 3
    assert one.raw["cheapest_offer_id"] == 2
    assert one.canonical == "rtx_4090" and one.memory_gb == 24.0
    assert one.regions == ("DE", "US") and one.stock == "medium"
    assert types[("RTX 3060", 1)].canonical is None
    assert types[("RTX 3060", 1)].spot_price_per_hour is None


@pytest.mark.parametrize(("gpu_name", "ram_mb", "canonical"), [
    ("A100 SXM4", 40960, "a100_40g"),    # Vast names both A100 sizes alike: memory decides
    ("A100 SXM4", 81920, "a100_80g"),
    ("A100 PCIE", 40536, "a100_40g"),
    ("RTX 4090", 49152, "rtx_4090"),     # a 48 GB mod has no canonical twin: keep the name
    ("RTX 4090", None, "rtx_4090"),
    ("H100 SXM", 81559, "h100_sxm"),
    ("Nonexistent GPU", 1024, None),
])
def test_canonical_gpu_uses_memory_to_tell_sizes_apart(gpu_name: str, ram_mb: int | None,
                                                        canonical: str | None) -> None:
    assert wire.canonical_gpu(gpu_name, ram_mb) == canonical


def test_catalog_keeps_a100_sizes_apart() -> None:
    offers = [
        {"id": 1, "gpu_name": "A100 SXM4", "num_gpus": 1, "gpu_ram": 40960, "dph_total": 0.6},
        {"id": 2, "gpu_name": "A100 SXM4", "num_gpus": 1, "gpu_ram": 81920, "dph_total": 1.1},
        {"id": 3, "gpu_name": "A100 SXM4", "num_gpus": 1, "gpu_ram": 81920, "dph_total": 0.9},
    ]
    by_canonical = {g.canonical: g for g in wire.gpu_types_from_offers(offers)}
    assert set(by_canonical) == {"a100_40g", "a100_80g"}
    assert by_canonical["a100_40g"].price_per_hour == 0.6
    assert by_canonical["a100_40g"].memory_gb == 40.0
    assert by_canonical["a100_80g"].price_per_hour == 0.9
    assert by_canonical["a100_80g"].raw["offers"] == 2
