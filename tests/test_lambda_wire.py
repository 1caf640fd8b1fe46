"""Lambda Cloud wire translation, placement and cloud-init (pure functions), checked against
the Lambda Cloud API v1.8.3 OpenAPI document and its examples."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import atlas_nb
from atlas_nb import (
    ComputeRequest,
    Forbidden,
    NotFound,
    ProviderError,
    RateLimited,
    Unauthorized,
    Unsupported,
    ValidationError,
)
from atlas_nb.errors import error_from_response
from atlas_nb.models import COMPUTE_STATUSES
from atlas_nb.providers.lambda_labs import cloud_init, placement, wire
from atlas_nb.sandbox.lambda_labs.instances import container_env

SPEC_PATH = (Path(atlas_nb.__file__).parent / "sandbox" / "specs" / "lambda"
             / "lambda-cloud-api-openapi-1.8.3.json")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _assert_valid(spec: dict[str, Any], schema: str, value: Any) -> None:
    validator = jsonschema.Draft202012Validator({**spec, "$ref": f"#/components/schemas/{schema}"})
    errors = sorted(validator.iter_errors(value), key=str)
    assert not errors, f"{schema} invalid: {[e.message for e in errors]}"


def _example_instance(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's own ``Instance`` example (restart response)."""
    data = spec["paths"]["/api/v1/instance-operations/restart"]["post"]["responses"]["200"][
        "content"]["application/json"]["schema"]["properties"]["data"]
    return copy.deepcopy(data["examples"][0]["restarted_instances"][0])


def _instance_types_example(spec: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(spec["components"]["schemas"]["InstanceTypes"]["example"])


def _item(name: str, gpus: int, cents: int, regions: list[str], *, vcpus: int = 30,
          memory: int = 200, storage: int = 1024, gpu_desc: str = "") -> dict[str, Any]:
    return {
        "instance_type": {
            "name": name, "description": f"{gpus}x {gpu_desc or name}",
            "gpu_description": gpu_desc or "N/A", "price_cents_per_hour": cents,
            "specs": {"vcpus": vcpus, "memory_gib": memory, "storage_gib": storage,
                      "gpus": gpus},
        },
        "regions_with_capacity_available": [{"name": r, "description": r} for r in regions],
    }


CATALOG = {
    "gpu_1x_h100_sxm5": _item("gpu_1x_h100_sxm5", 1, 329, ["us-south-2", "us-south-3"],
                              vcpus=26, memory=225, storage=2816,
                              gpu_desc="H100 (80 GB SXM5)"),
    "gpu_1x_h100_pcie": _item("gpu_1x_h100_pcie", 1, 249, ["us-west-3"], vcpus=26,
                              gpu_desc="H100 (80 GB PCIe)"),
    "gpu_8x_h100_sxm5": _item("gpu_8x_h100_sxm5", 8, 2392, [], vcpus=208, memory=1800,
                              storage=22528, gpu_desc="H100 (80 GB SXM5)"),
    "gpu_1x_a10": _item("gpu_1x_a10", 1, 75, ["us-east-1", "us-west-1"],
                        gpu_desc="A10 (24 GB PCIe)"),
    "gpu_1x_gh200": _item("gpu_1x_gh200", 1, 149, [], vcpus=64, memory=432,
                          gpu_desc="GH200 (96 GB)"),
    "gpu_8x_mystery": _item("gpu_8x_mystery", 8, 999, ["us-east-1"]),
    "cpu_4x_general": _item("cpu_4x_general", 0, 20, ["us-west-1"], vcpus=4, memory=16),
}


# -- status map -------------------------------------------------------------------------------
def test_status_map_covers_the_spec_enum_exactly(spec: dict[str, Any]) -> None:
    enum = spec["components"]["schemas"]["InstanceStatus"]["enum"]
    assert set(enum) == set(wire.INSTANCE_STATUS)
    assert set(wire.INSTANCE_STATUS.values()) <= set(COMPUTE_STATUSES)
    assert wire.INSTANCE_STATUS["booting"] == "provisioning"
    assert wire.INSTANCE_STATUS["active"] == "running"


def test_unknown_status_reads_unknown(spec: dict[str, Any]) -> None:
    inst = {**_example_instance(spec), "status": "migrating"}
    assert wire.compute_from_wire(inst).status == "unknown"


# -- instances --------------------------------------------------------------------------------
def test_compute_from_the_spec_example(spec: dict[str, Any]) -> None:
    inst = _example_instance(spec)
    _assert_valid(spec, "Instance", inst)
    c = wire.compute_from_wire(inst)
    assert (c.id, c.name, c.status) == ("0920582c7ff041399e34823a0be62549", "My Instance",
                                        "running")
    assert (c.public_ip, c.region) == ("198.51.100.2", "us-west-1")
    assert (c.gpu_type, c.gpu_count, c.cost_per_hour) == ("a100_40g", 8, 10.32)
    assert c.ports == () and c.image is None  # no atlas tags on this instance


def test_raw_has_no_jupyter_token(spec: dict[str, Any]) -> None:
    inst = _example_instance(spec)
    token = inst["jupyter_token"]
    c = wire.compute_from_wire(inst)
    assert token not in json.dumps(c.raw)
    assert "jupyter_token" not in c.raw
    assert c.raw["jupyter_url"].startswith("https://jupyter-")  # kept, token redacted
    assert c.raw["id"] == inst["id"]


def test_ports_and_image_come_back_from_tags(spec: dict[str, Any]) -> None:
    req = ComputeRequest(gpu="a10", image="ghcr.io/me/srv:1",
                         ports=[(8000, "http"), (2222, "tcp"), (5353, "udp")])
    inst = {**_example_instance(spec), "tags": wire.atlas_tags(req, "m" * 24)}
    _assert_valid(spec, "Instance", inst)
    c = wire.compute_from_wire(inst)
    assert c.image == "ghcr.io/me/srv:1"
    assert [(p.internal, p.external, p.protocol, p.url) for p in c.ports] == [
        (8000, 8000, "http", "http://198.51.100.2:8000"),
        (2222, 2222, "tcp", "tcp://198.51.100.2:2222"),
        (5353, 5353, "udp", "udp://198.51.100.2:5353"),
    ]
    assert c.ready


def test_ports_have_no_url_until_active(spec: dict[str, Any]) -> None:
    req = ComputeRequest(gpu="a10", image="img:1", ports=[(8000, "http")])
    inst = {**_example_instance(spec), "status": "booting",
            "tags": wire.atlas_tags(req, "m" * 24)}
    c = wire.compute_from_wire(inst)
    assert c.status == "provisioning" and c.ports[0].url is None and not c.ready


def test_cpu_instance_has_no_gpu(spec: dict[str, Any]) -> None:
    inst = _example_instance(spec)
    inst["instance_type"] = CATALOG["cpu_4x_general"]["instance_type"]
    c = wire.compute_from_wire(inst)
    assert (c.gpu_type, c.gpu_count, c.cost_per_hour) == (None, 0, 0.2)


def test_unknown_gpu_type_keeps_lambdas_name(spec: dict[str, Any]) -> None:
    inst = _example_instance(spec)
    inst["instance_type"] = CATALOG["gpu_8x_mystery"]["instance_type"]
    assert wire.compute_from_wire(inst).gpu_type == "gpu_8x_mystery"


def test_long_image_is_not_tagged_and_tag_values_fit(spec: dict[str, Any]) -> None:
    long_image = "registry.example.com/" + "x" * 200 + ":1"
    tags = wire.atlas_tags(ComputeRequest(image=long_image), "m" * 24)
    assert wire.IMAGE_TAG not in {t["key"] for t in tags}
    with pytest.raises(ValidationError, match="at most 128"):
        wire.atlas_tags(ComputeRequest(image="i", ports=list(range(1000, 1040))), "m")


def test_is_our_launch_needs_name_and_marker(spec: dict[str, Any]) -> None:
    base = {**_example_instance(spec), "name": "job-1", "status": "booting"}
    ours = {**base, "tags": [{"key": wire.REQUEST_TAG, "value": "abc"}]}
    assert wire.is_our_launch(ours, name="job-1", marker="abc", name_is_ours=False)
    assert not wire.is_our_launch(ours, name="job-1", marker="xyz", name_is_ours=True)
    assert not wire.is_our_launch(ours, name="job-2", marker="abc", name_is_ours=True)
    gone = {**ours, "status": "terminating"}
    assert not wire.is_our_launch(gone, name="job-1", marker="abc", name_is_ours=True)
    untagged = {**base, "tags": []}
    assert wire.is_our_launch(untagged, name="job-1", marker="abc", name_is_ours=True)
    assert not wire.is_our_launch(untagged, name="job-1", marker="abc", name_is_ours=False)


# -- catalog ----------------------------------------------------------------------------------
def test_gpu_types_from_the_spec_example(spec: dict[str, Any]) -> None:
    data = _instance_types_example(spec)
    _assert_valid(spec, "InstanceTypes", data)
    [g] = wire.gpu_types_from_wire(data)
    assert (g.id, g.canonical, g.gpu_count, g.memory_gb) == ("gpu_1x_gh200", "gh200", 1, 96.0)
    assert g.price_per_hour == 1.49 and g.spot_price_per_hour is None
    assert g.regions == ("us-west-1",) and g.stock == "available"


def test_gpu_types_skip_cpu_and_keep_unknown_gpus() -> None:
    _ = [_assert_valid]  # the catalog above is spec-shaped; checked in the sandbox tests
    types = {g.id: g for g in wire.gpu_types_from_wire(CATALOG)}
    assert "cpu_4x_general" not in types
    assert types["gpu_8x_mystery"].canonical is None
    h100 = types["gpu_8x_h100_sxm5"]
    assert (h100.canonical, h100.gpu_count, h100.price_per_hour) == ("h100_sxm", 8, 23.92)
    assert (h100.regions, h100.stock) == ((), "none")
    assert types["gpu_1x_a10"].memory_gb == 24.0


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (401, "global/invalid-api-key", Unauthorized),
        (403, "global/account-inactive", Forbidden),
        (403, "global/invalid-address", Forbidden),
        (404, "global/object-does-not-exist", NotFound),
        (400, "global/invalid-parameters", ValidationError),
        (400, "instance-operations/launch/insufficient-capacity", ProviderError),
        (400, "global/quota-exceeded", ProviderError),
        (400, "instance-operations/launch/file-system-in-wrong-region", ValidationError),
        (500, "global/internal-error", ProviderError),
        (503, "provider/internal-unavailable", ProviderError),
        (400, "provider/quota-exceeded", ProviderError),
    ],
)
def test_error_codes_map_to_kinds(status: int, code: str, kind: type) -> None:
    body = {"error": {"code": code, "message": "Msg.", "suggestion": "Do this."}}
    err = wire.remap(error_from_response(status, body, provider="lambda_labs",
                                         message_of=wire.error_message))
    assert type(err) is kind
    assert (err.status, err.provider, err.raw) == (status, "lambda_labs", body)
    assert "Msg." in err.message and "Do this." in err.message


def test_429_text_body_stays_rate_limited() -> None:
    err = wire.remap(error_from_response(429, "error code: 1015", provider="lambda_labs"))
    assert isinstance(err, RateLimited) and err.retry_after is None


def test_payload_needs_the_data_envelope() -> None:
    assert wire.payload({"data": [1]}) == [1]
    with pytest.raises(atlas_nb.UnknownError):
        wire.payload({"instances": []})


# -- launch body ------------------------------------------------------------------------------
def _body(request: ComputeRequest, opts: dict[str, Any] | None = None) -> dict[str, Any]:
    return wire.launch_body(
        request, instance_type="gpu_1x_a10", region="us-east-1", ssh_key_names=["k"],
        name="atlas-x", marker="m" * 24, user_data=cloud_init.user_data(request),
        opts=opts or {},
    )


def test_launch_body_matches_the_spec(spec: dict[str, Any]) -> None:
    req = ComputeRequest(gpu="a10", image="img:1", ports=[(8000, "http")], env={"A": "1"})
    body = _body(req, {"firewall_rulesets": [{"id": "fw1"}], "hostname": "node1",
                       "tags": [{"key": "team", "value": "ml"}], "image": {"family": "lambda"}})
    _assert_valid(spec, "InstanceLaunchRequest", body)
    assert body["tags"][-1] == {"key": "team", "value": "ml"}
    assert {t["key"] for t in body["tags"]} >= {wire.REQUEST_TAG, wire.PORTS_TAG}
    assert body["image"] == {"family": "lambda"}  # the machine image; the container is in user_data
    assert "img:1" in body["user_data"]


def test_launch_body_refuses_atlas_tags_from_the_user() -> None:
    with pytest.raises(ValidationError, match="atlas_nb's own tags"):
        _body(ComputeRequest(image="i"), {"tags": [{"key": wire.PORTS_TAG, "value": "1/tcp"}]})


# -- cloud-init -------------------------------------------------------------------------------
def test_user_data_runs_the_image_with_env_and_ports() -> None:
    req = ComputeRequest(gpu="a10", image="ghcr.io/me/srv:1", env={"ATLAS_PRESHARED_KEY": "t0k"},
                         ports=[(8000, "http"), (9000, "tcp"), (5353, "udp")])
    text = cloud_init.user_data(req)
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    [env_file] = doc["write_files"]
    assert (env_file["path"], env_file["permissions"]) == (cloud_init.ENV_FILE, "0600")
    assert env_file["content"] == "ATLAS_PRESHARED_KEY=t0k\n"
    [argv] = doc["runcmd"]
    assert argv[:2] == ["docker", "run"] and argv[-1] == "ghcr.io/me/srv:1"
    assert argv[argv.index("--gpus"):argv.index("--gpus") + 2] == ["--gpus", "all"]
    published = [argv[i + 1] for i, a in enumerate(argv) if a == "--publish"]
    assert published == ["8000:8000", "9000:9000", "5353:5353/udp"]
    assert container_env(text) == {"ATLAS_PRESHARED_KEY": "t0k"}


def test_cpu_user_data_has_no_gpus_and_no_env_file_without_env() -> None:
    doc = yaml.safe_load(cloud_init.user_data(ComputeRequest(image="img:1")))
    assert "write_files" not in doc
    assert "--gpus" not in doc["runcmd"][0] and "--env-file" not in doc["runcmd"][0]


@pytest.mark.parametrize(
    ("env", "match"),
    [({"A": "x\ny"}, "line break"), ({"1A": "x"}, "env name"), ({"A-B": "x"}, "env name")],
)
def test_env_docker_cannot_carry_is_refused(env: dict[str, str], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        cloud_init.user_data(ComputeRequest(image="img:1", env=env))


def test_port_22_is_the_hosts_ssh() -> None:
    with pytest.raises(ValidationError, match="port 22"):
        cloud_init.user_data(ComputeRequest(image="img:1", ports=[(22, "tcp")]))


def test_user_data_over_one_megabyte_is_refused() -> None:
    with pytest.raises(ValidationError, match="1 MB"):
        cloud_init.user_data(ComputeRequest(image="img:1", env={"BIG": "x" * 1_000_001}))


_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
_VALUES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"),
                  max_size=40)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_NAMES, _VALUES, max_size=6))
def test_any_env_round_trips_through_cloud_init(env: dict[str, str]) -> None:
    text = cloud_init.user_data(ComputeRequest(gpu="a10", image="img:1", env=env))
    assert container_env(text) == env


# -- placement --------------------------------------------------------------------------------
def _offers() -> dict[str, placement.Offer]:
    return placement.offers_from_wire(CATALOG)


def test_h100_family_prefers_sxm_then_pcie() -> None:
    types = placement.matching_types(_offers(), ComputeRequest(gpu="h100", image="i"))
    assert [o.name for o in types] == ["gpu_1x_h100_sxm5", "gpu_1x_h100_pcie"]
    pcie = placement.matching_types(_offers(), ComputeRequest(gpu="h100_pcie", image="i"))
    assert [o.name for o in pcie] == ["gpu_1x_h100_pcie"]


def test_count_not_offered_lists_the_counts_there_are() -> None:
    with pytest.raises(Unsupported) as info:
        placement.matching_types(_offers(), ComputeRequest(gpu="h100", gpu_count=2, image="i"))
    assert "counts 1 (gpu_1x_h100_pcie, gpu_1x_h100_sxm5); 8 (gpu_8x_h100_sxm5)" in str(info.value)
    assert info.value.hint == "pass gpu_count= one of 1, 8"


def test_gpu_lambda_never_offers_names_what_it_does() -> None:
    with pytest.raises(Unsupported, match=r"lambda_labs does not offer mi300x; it offers: .*a10"):
        placement.matching_types(_offers(), ComputeRequest(gpu="mi300x", image="i"))
    with pytest.raises(Unsupported, match="no b200 instance type right now"):
        placement.matching_types(_offers(), ComputeRequest(gpu="b200", image="i"))


def test_cpu_picks_a_cpu_type() -> None:
    [cpu] = placement.matching_types(_offers(), ComputeRequest(image="i"))
    assert cpu.name == "cpu_4x_general"
    offers = {k: v for k, v in _offers().items() if not k.startswith("cpu_")}
    with pytest.raises(Unsupported, match="no CPU instance type"):
        placement.matching_types(offers, ComputeRequest(image="i"))


def test_minimums_and_price_cap_narrow_the_types() -> None:
    offers = _offers()
    types = placement.matching_types(offers, ComputeRequest(gpu="h100", image="i"))
    req = ComputeRequest(gpu="h100", image="i", memory_gb=220)
    assert [o.name for o in placement.fitting(types, req)] == ["gpu_1x_h100_sxm5"]
    cheap = ComputeRequest(gpu="h100", image="i", max_price_per_hour=3.0)
    assert [o.name for o in placement.fitting(types, cheap)] == ["gpu_1x_h100_pcie"]
    with pytest.raises(ValidationError, match=r"cpus>=64.*gpu_1x_h100_sxm5 \(26 vCPUs"):
        placement.fitting(types, ComputeRequest(gpu="h100", image="i", cpus=64))


def test_region_hints_come_first_then_any_capacity() -> None:
    offers = _offers()
    req = ComputeRequest(gpu="h100", image="i")
    offer, region = placement.place(offers, req)
    assert (offer.name, region) == ("gpu_1x_h100_sxm5", "us-south-2")
    hinted = req.model_copy(update={"region_hints": ("eu-nowhere", "us-west-3")})
    offer, region = placement.place(offers, hinted)
    assert (offer.name, region) == ("gpu_1x_h100_pcie", "us-west-3")
    sxm_hint = req.model_copy(update={"region_hints": ("us-south-3",)})
    assert placement.place(offers, sxm_hint)[1] == "us-south-3"


def test_no_capacity_anywhere_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="no capacity for gpu_1x_gh200 in any region"):
        placement.place(_offers(), ComputeRequest(gpu="gh200", image="i"))


def test_pinned_region_and_type_are_taken_as_given() -> None:
    offers = _offers()
    req = ComputeRequest(gpu="h100", image="i")
    offer, region = placement.place(offers, req, region="us-east-1")
    assert (offer.name, region) == ("gpu_1x_h100_sxm5", "us-east-1")  # the API will judge
    offer, region = placement.place(offers, req, instance_type="gpu_1x_a10")
    assert (offer.name, region) == ("gpu_1x_a10", "us-east-1")
    with pytest.raises(ValidationError, match="not in Lambda's catalog"):
        placement.place(offers, req, instance_type="gpu_9x_nothing")
