"""Golden fixtures: every example embedded in the vendored specs, through our wire functions.

The specs under ``atlas_nb/sandbox/specs/`` carry request and response examples written by
the clouds themselves. ``examples()`` walks each spec generically and yields one *unit* per
example found:

* a whole example: ``example`` / ``examples`` (a list, or OpenAPI's ``{name: {value}}``) on
  a media type, a schema, a parameter or a response;
* an *assembled* example: an object schema whose properties carry examples yields one
  object built from them (recursively through nested objects and arrays), pointer
  ``.../properties``. Most of the Vast and Lambda specs document their bodies this way.

``RULES`` maps every unit, by spec and pointer, to the wire function that reads it
(a ``Check``) or to the reason no wire function does (a ``Listed``). The first rule
that matches wins; ``test_every_example_is_mapped_or_listed`` fails on a unit no rule
matches, and ``test_every_rule_matches_an_example`` on a stale rule, so nothing in a spec
is silently skipped when it is re-vendored.

"Without loss" per mapping (the assertions in the ``check_*`` functions):

* a compute (pod / instance / machine): ``id``; ``status`` is the status map's entry for
  the documented state, never the ``unknown`` fallback; ``name``, ``image``, ``region``,
  ``public_ip`` and ``created_at`` equal their wire fields when the example has them; the
  price is the cloud's hourly figure; the GPU (canonical name and count) comes from the
  example's GPU field; one ``PortMapping`` per documented port with its protocol, and the
  public mapping where the runtime reports one;
* a catalog row: one ``GpuType`` per GPU (and cloud type) in the example, with its id,
  display name, memory, price and stock;
* an error body: ``error_from_response`` with the provider's ``error_message`` gives the
  kind for the status and the example's human message;
* a request atlas_nb builds: our builder, given the same intent, sends the example's keys
  with the example's values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from atlas_nb import errors
from atlas_nb.models import ComputeRequest
from atlas_nb.providers.fly import wire as fly_wire
from atlas_nb.providers.lambda_labs import wire as lambda_wire
from atlas_nb.providers.runpod import wire as runpod_wire
from atlas_nb.providers.vast import wire as vast_wire
from atlas_nb.sandbox.schemas import load_spec

SPECS = ("fly/machines-openapi3.json", "lambda/lambda-cloud-api-openapi-1.8.3.json",
         "runpod/rest-v2-openapi.json", "vast/vast-openapi.yaml")

_MISSING = object()


# -- the generic walk -------------------------------------------------------------------
def _example_of(schema: Any) -> Any:
    """A property's example: its own, else one assembled from its properties or items."""
    if not isinstance(schema, dict):
        return _MISSING
    if "example" in schema:
        return schema["example"]
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return schema["examples"][0]
    if isinstance(schema.get("properties"), dict):
        return _assemble(schema) or _MISSING
    if isinstance(schema.get("items"), dict):
        item = _example_of(schema["items"])
        return _MISSING if item is _MISSING else [item]
    return _MISSING


def _assemble(schema: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, prop in schema["properties"].items():
        value = _example_of(prop)
        if value is not _MISSING:
            out[name] = value
    return out


def _walk(node: Any, ptr: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{ptr}/{i}")
        return
    if not isinstance(node, dict):
        return
    if "example" in node:
        yield f"{ptr}/example", node["example"]
    found = node.get("examples")
    if isinstance(found, list):
        for i, value in enumerate(found):
            yield f"{ptr}/examples/{i}", value
    elif isinstance(found, dict):
        for name, value in found.items():
            yield f"{ptr}/examples/{name}", value.get("value") if isinstance(value, dict) else value
    props = node.get("properties")
    if isinstance(props, dict):
        assembled = _assemble(node)
        if assembled:
            yield f"{ptr}/properties", assembled
        for name, prop in props.items():  # property examples went into the assembled one
            if isinstance(prop, dict):
                for key, value in prop.items():
                    if key in ("example", "examples", "properties"):
                        continue
                    if key == "items" and isinstance(value, dict) and "properties" in value:
                        continue
                    yield from _walk(value, f"{ptr}/properties/{name}/{key}")
    for key, value in node.items():
        if key not in ("example", "examples", "properties"):
            yield from _walk(value, f"{ptr}/{key}")


def examples(spec: str) -> list[tuple[str, Any]]:
    """Every example unit of a vendored spec: ``(pointer, value)``."""
    return list(_walk(load_spec(spec), ""))


# -- the checks ---------------------------------------------------------------------------
def _close(a: float | None, b: Any) -> bool:
    return a is not None and isinstance(b, (int, float)) and math.isclose(a, float(b))


def check_runpod_pod(pod: Mapping[str, Any]) -> None:
    c = runpod_wire.compute_from_wire(pod)
    assert c.id == pod["id"]
    if "status" in pod:
        assert c.status == runpod_wire.POD_STATUS[pod["status"]] != "unknown"
    for field, key in (("name", "name"), ("image", "image"), ("region", "dataCenterId")):
        if key in pod:
            assert getattr(c, field) == pod[key], field
    if "cost" in pod:
        assert _close(c.cost_per_hour, pod["cost"])
    if "createdAt" in pod:
        assert c.created_at is not None
    if "gpu" in pod:
        gid = pod["gpu"]["id"]
        assert c.gpu_type == (runpod_wire.GPU_IDS.from_id(gid)[0] or gid)
        assert c.gpu_count == pod["gpu"].get("count", 1)
    specs = [s.split("/") for s in pod.get("ports", [])]
    assert [(p.internal, p.protocol) for p in c.ports] == [(int(n), t) for n, t in specs]
    runtime = {(r["private"], r["type"]): r for r in pod.get("runtime", {}).get("ports", [])}
    for port in c.ports:
        live = runtime.get((port.internal, port.protocol))
        if port.protocol == "tcp" and live:
            assert port.external == live["public"]
            assert port.url == f"tcp://{live['ip']}:{live['public']}"
        if port.protocol == "http":
            assert port.url == f"https://{pod['id']}-{port.internal}.proxy.runpod.net"
    # issue 14 #12: only a public TCP mapping gives the pod a public address
    public_tcp = [r["ip"] for r in runtime.values() if r["type"] == "tcp" and r.get("ip")]
    assert c.public_ip == (public_tcp[0] if public_tcp else None)


def check_runpod_pods(body: Mapping[str, Any]) -> None:
    pods = runpod_wire.pods_from_wire(body)
    assert len(pods) == len(body["pods"]) > 0
    for pod in pods:
        check_runpod_pod(pod)


def check_runpod_gpus(body: Mapping[str, Any]) -> None:
    rows = runpod_wire.gpu_types_from_wire(body, [])
    for gpu in body["gpus"]:
        clouds = [c for c in ("secure", "community") if gpu.get(c)]
        mine = {r.cloud_type: r for r in rows if r.id == gpu["id"]}
        assert sorted(mine) == sorted(clouds), gpu["id"]
        for cloud, row in mine.items():
            assert row.display_name == gpu.get("name", gpu["id"])
            if "memory" in gpu:
                assert row.memory_gb == gpu["memory"]
            assert _close(row.price_per_hour, gpu["price"][cloud])
            if "availability" in gpu:
                assert row.stock == gpu["availability"].lower()
            assert row.regions == tuple(d["id"] for d in gpu.get("dataCenters", []))
            assert row.canonical == runpod_wire.GPU_IDS.from_id(gpu["id"])[0]


def check_runpod_gpu(gpu: Mapping[str, Any]) -> None:
    check_runpod_gpus({"gpus": [gpu]})


def check_runpod_create_request(body: Mapping[str, Any]) -> None:
    """Our ``create_body`` sends the example's fields for the same intent."""
    gpu = runpod_wire.GPU_IDS.from_id(body["gpu"]["id"])[0]
    request = ComputeRequest(gpu=gpu, gpu_count=body["gpu"]["count"], image=body["image"],
                             container_disk_gb=body.get("disk"), name=body["name"])
    ours = runpod_wire.create_body(request, name=body["name"], marker="m")
    for key, value in body.items():
        assert ours.get(key) == value, key


_KINDS = {400: errors.ValidationError, 401: errors.Unauthorized, 403: errors.Forbidden,
          404: errors.NotFound, 429: errors.RateLimited}


def _error_check(message_of: Callable[[Any], str | None], provider: str
                 ) -> Callable[[Any], None]:
    """An error example: ``(status, body)``; the status is the response's (its pointer) or,
    for RFC 9457 bodies, the body's own ``status``."""

    def check(unit: tuple[int, Any]) -> None:
        status, body = unit
        err = errors.error_from_response(status, body, provider=provider, message_of=message_of)
        if status in _KINDS:
            assert isinstance(err, _KINDS[status]), (status, type(err))
        want = next((body[k] for k in ("detail", "msg", "title", "error")
                     if isinstance(body, Mapping) and isinstance(body.get(k), str)), None)
        if want:  # some examples document only {"success": false}
            assert want in err.message, (want, err.message)
    check.takes_status = True  # type: ignore[attr-defined]
    return check


def _status_of(ptr: str, body: Any) -> int:
    found = re.search(r"/responses/(\d{3})/", ptr)
    if found:
        return int(found.group(1))
    status = body.get("status") if isinstance(body, Mapping) else None
    return status if isinstance(status, int) else 400


def check_lambda_instance(instance: Mapping[str, Any]) -> None:
    c = lambda_wire.compute_from_wire(instance)
    assert c.id == instance["id"]
    if "status" in instance:
        assert c.status == lambda_wire.INSTANCE_STATUS[instance["status"]] != "unknown"
    if "name" in instance:
        assert c.name == instance["name"]
    if "ip" in instance:
        assert c.public_ip == instance["ip"]
    if "region" in instance:
        assert c.region == instance["region"]["name"]
    itype = instance.get("instance_type")
    if itype:
        assert _close(c.cost_per_hour, itype["price_cents_per_hour"] / 100)
        assert (c.gpu_type, c.gpu_count) == lambda_wire.gpu_of(itype)


def check_lambda_operation(body: Mapping[str, Any]) -> None:
    data = body["data"]
    (instances,) = data.values()  # restarted_instances / terminated_instances
    assert instances
    for instance in instances:
        check_lambda_instance(instance)


def check_lambda_types(data: Mapping[str, Any]) -> None:
    rows = {r.id: r for r in lambda_wire.gpu_types_from_wire(data)}
    for key, item in data.items():
        itype = item["instance_type"]
        if itype.get("specs", {}).get("gpus", 1) == 0:
            assert key not in rows  # CPU types are not GPU rows
            continue
        row = rows[itype["name"]]
        assert row.display_name == itype["description"]
        assert _close(row.price_per_hour, itype["price_cents_per_hour"] / 100)
        if "specs" in itype:
            assert row.gpu_count == itype["specs"]["gpus"]
        regions = tuple(r["name"] for r in item.get("regions_with_capacity_available", []))
        assert row.regions == regions
        assert row.stock == ("available" if regions else "none")
        assert row.memory_gb is not None


def check_lambda_type(itype: Mapping[str, Any]) -> None:
    check_lambda_types({itype["name"]: {"instance_type": itype,
                                        "regions_with_capacity_available": []}})


def check_lambda_launched(data: Mapping[str, Any]) -> None:
    assert lambda_wire.launched_ids(data) == data["instance_ids"]


# Vast documents the instance's price in ``instance`` (the billed figures) and
# ``dph_total``; issue 14 #6: running bills dph_total (GPU + storage), stopped storage only.
def check_vast_instance(row: Mapping[str, Any]) -> None:
    c = vast_wire.compute_from_wire(row)
    assert c.id == str(row["id"])
    state = row.get("actual_status")
    assert c.status != "unknown", state
    if state == "running":
        assert c.status == "running"
    if row.get("label"):
        assert c.name == row["label"]
    if row.get("image_uuid"):
        assert c.image == row["image_uuid"]
    if row.get("public_ipaddr"):
        assert c.public_ip == row["public_ipaddr"].strip()
    if isinstance(row.get("num_gpus"), int):
        assert c.gpu_count == row["num_gpus"]
    if row.get("gpu_name"):
        assert c.gpu_type == (vast_wire.canonical_gpu(row["gpu_name"], row.get("gpu_ram"))
                              or row["gpu_name"])
    if state == "running" and "dph_total" in row:
        assert _close(c.cost_per_hour, row["dph_total"]), (c.cost_per_hour, row["dph_total"])


def check_vast_instances(body: Mapping[str, Any]) -> None:
    rows, _ = vast_wire.instance_page(body)
    assert len(rows) == len(body["instances"]) > 0
    for row in rows:
        check_vast_instance(row)


def check_vast_offers(body: Mapping[str, Any]) -> None:
    offers = body["offers"]
    # The spec's example shows one offer object where vast-cli reads a list
    # (vast-ai/vast-cli vast.py search offers: ``rows = r.json()["offers"]`` then iterates).
    offers = [offers] if isinstance(offers, Mapping) else offers
    rows = vast_wire.gpu_types_from_offers(offers)
    for offer in offers:
        mine = [r for r in rows if r.id == offer["gpu_name"] and r.gpu_count == offer["num_gpus"]]
        assert len(mine) == 1, offer["gpu_name"]
        assert _close(mine[0].price_per_hour, offer["dph_total"])
        if offer.get("min_bid"):
            assert _close(mine[0].spot_price_per_hour, offer["min_bid"])
        assert mine[0].canonical == vast_wire.canonical_gpu(offer["gpu_name"], offer.get("gpu_ram"))


def check_fly_placements_request(body: Mapping[str, Any]) -> None:
    """Ours is a ``main.getPlacementsRequest`` too: the same org key, only spec'd keys."""
    from atlas_nb.providers.fly import prices

    ours = fly_wire.placements_body(prices.GPU_PRICES[0], body["org_slug"])
    assert ours["org_slug"] == body["org_slug"]
    props = load_spec(SPECS[0])["components"]["schemas"]["main.getPlacementsRequest"]["properties"]
    assert set(ours) <= set(props), set(ours) - set(props)


# -- the table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """Run the unit through ``fn`` (a ``check_*`` above)."""

    fn: Callable[[Any], None]
    xfail: str | None = None  # another helper is fixing this parse now (strict xfail)


@dataclass(frozen=True)
class Listed:
    """No wire function reads this unit, and why."""

    reason: str


@dataclass(frozen=True)
class Rule:
    spec: str
    pattern: str  # re.search over the unit's pointer
    action: Check | Listed


_RP, _LA, _VA, _FL = SPECS[2], SPECS[1], SPECS[3], SPECS[0]
_UNUSED = "an endpoint atlas_nb never calls"
_PARAM = "a path/query parameter value: atlas_nb passes ids through, no parser reads them"
_FIELD = "a nested object: its fields are checked inside the enclosing example"

RULES: tuple[Rule, ...] = (
    # ---- RunPod REST v2 (atlas_nb: pods, the GPU catalog, errors) --------------------------
    Rule(_RP, r"^/paths//v2/pods/get/responses/200/", Check(check_runpod_pods)),
    Rule(_RP, r"^/paths//v2/pods(/\{id\})?(/action)?/(get|post|patch)/responses/20[01]/",
         Check(check_runpod_pod)),
    Rule(_RP, r"^/components/schemas/Pod/allOf/1/properties$", Check(check_runpod_pod)),
    Rule(_RP, r"^/paths//v2/pods/post/requestBody/", Check(check_runpod_create_request)),
    Rule(_RP, r"^/paths//v2/catalog/gpus/get/responses/200/", Check(check_runpod_gpus)),
    Rule(_RP, r"^/paths//v2/catalog/gpus/\{id\}/get/responses/200/", Check(check_runpod_gpu)),
    Rule(_RP, r"^/components/schemas/GpuType/properties$", Check(check_runpod_gpu)),
    Rule(_RP, r"^/components/responses/\w+Error/content/application/problem\+json/examples/",
         Check(_error_check(runpod_wire.error_message, "runpod"))),
    Rule(_RP, r"^/components/schemas/(PodRuntime|PodRuntimePort|PodSshEndpoint|PodGpuUtilization"
         r"|PodGlobalNetworking|PodCluster|PersistentMount|NetworkMount|GpuConfig|Utilization"
         r"|CatalogResourceAvailability|DataCenterAvailability|CudaVersionAvailability"
         r"|BaseContainerConfig|ContainerConfig/allOf/1|CreateGpuConfig/allOf/1"
         r"|CreatePodRequest/allOf/1)/properties$", Listed(_FIELD)),
    Rule(_RP, r"^/paths//v2/pods/\{id\}/patch/requestBody/|^/paths//v2/pods/\{id\}/action/post/"
         r"requestBody/|^/components/schemas/UpdatePodRequest/",
         Listed("a pod rename / action body: atlas_nb sends {\"action\": ...} only, pinned by "
                "the sandbox contract tests")),
    Rule(_RP, r"^/paths//v2/pods/\{id\}/logs/",
         Listed("an SSE log stream: read by the logs module, pinned in test_runpod_provider")),
    Rule(_RP, r"^/paths//v2/catalog/cpus/|^/components/schemas/(CpuType|BaseCpuConfig"
         r"|CpuConfig/allOf/1)/",
         Listed("the CPU catalog: atlas_nb rents CPU pods by flavour id (cpu5c), it lists no "
                "CPU rows")),
    Rule(_RP, r"/parameters/|^/components/parameters/", Listed(_PARAM)),
    Rule(_RP, r"^/components/schemas/(RateLimitHeader|RateLimitPolicyHeader)/|"
         r"^/components/responses/\w+/headers/",
         Listed("rate-limit headers: _http reads Retry-After, not these drafts")),
    Rule(_RP, r"^/paths//v2/(serverless|templates|network-volumes|registries|billing|account|"
         r"catalog/(datacenters|templates)|clusters)|^/components/schemas/(\w*(Endpoint|Release|"
         r"Worker|Template|NetworkVolume|Registry|Delegation|Billing|Cluster|Scaling|Rollout|"
         r"DataCenter|SshKeys|RequestUrls)\w*|ErrorResponse|ClusterType|BillingBucketSize|"
         r"BillingTimeRange)(/allOf/\d+)?/",
         Listed(_UNUSED + " through REST v2 (serverless jobs go to api.runpod.ai, which this "
                "spec does not cover; network volumes are passed by id)")),
    # ---- Lambda Cloud (atlas_nb: instances, instance types, launch, errors) ----------------
    Rule(_LA, r"^/paths//api/v1/instance-operations/(restart|terminate)/post/responses/200/",
         Check(check_lambda_operation)),
    Rule(_LA, r"^/components/schemas/Instance/properties$", Check(check_lambda_instance)),
    Rule(_LA, r"^/components/schemas/InstanceTypes/example$", Check(check_lambda_types)),
    Rule(_LA, r"^/components/schemas/InstanceType/properties$", Check(check_lambda_type)),
    Rule(_LA, r"^/components/schemas/InstanceLaunchResponse/properties$",
         Check(check_lambda_launched)),
    Rule(_LA, r"^/components/schemas/(InstanceTypeSpecs|Region|TagEntry|FirewallRulesetEntry|"
         r"FilesystemMountEntry)/properties$", Listed(_FIELD)),
    Rule(_LA, r"^/components/schemas/(InstanceLaunchRequest|RequestedTagEntry|"
         r"RequestedFilesystemMountEntry|InstanceRestartRequest|InstanceTerminateRequest)/",
         Listed("a request atlas_nb builds: launch_body is pinned in test_lambda_wire and the "
                "sandbox validates it against this schema")),
    Rule(_LA, r"/parameters/", Listed(_PARAM)),
    Rule(_LA, r"^/components/schemas/(InstanceModificationRequest|SSHKey|GeneratedSSHKey|"
         r"AddSSHKeyRequest|User|Filesystem\w*|Image|Firewall\w*|GlobalFirewallRuleset|"
         r"AuditEvent\w*)/", Listed(_UNUSED + " (ssh keys are passed by name)")),
    # ---- Vast (atlas_nb: instances, offers, rent, errors) ----------------------------------
    Rule(_VA, r"^/paths//api/v1/instances/get/responses/200/content/application/json/schema/"
         r"properties$", Check(check_vast_instances)),
    Rule(_VA, r"^/components/schemas/Instance/properties$",
         Check(check_vast_instance)),
    Rule(_VA, r"^/paths//api/v0/bundles/post/responses/200/content/application/json/example$",
         Check(check_vast_offers)),
    Rule(_VA, r"^/paths//api/v[01]/\w+(/\{id\})?/\w+/responses/(4\d\d)/.*(example|properties)$",
         Check(_error_check(vast_wire.error_message, "vast"))),
    Rule(_VA, r"^/paths//api/v0/(bundles|asks/\{id\}|instances/\{id\})/(post|put)/requestBody/",
         Listed("a request atlas_nb builds (search_query, create_body, state changes): pinned "
                "by test_vast_wire and driven by the vast-cli oracle")),
    Rule(_VA, r"^/paths//api/v0/(asks/\{id\}|instances/\{id\})/(put|delete)/responses/200/",
         Listed("a bare success answer: the provider reads new_contract / success, pinned in "
                "test_vast_provider")),
    Rule(_VA, r"/parameters/", Listed(_PARAM)),
    Rule(_VA, r"^/components/schemas/(Error|SuccessResponse|SimpleBooleanSuccessResponse)/",
         Listed("a generic envelope; the concrete error examples above are checked")),
    Rule(_VA, r"^/paths//(api/v0/(auth|benchmarks|charges|commands|deployments?|endptjobs|"
         r"instances/(balance|bid_price|command|prepay|reboot|recycle|request_logs|\{id\}/ssh)|"
         r"machines|metrics|notification-types|secrets|ssh|subaccounts|team|template|users|"
         r"volumes|webhooks|workergroups)|api/v1/invoices|get_endpoint|get_workergroup|route)|"
         r"^/components/schemas/(Notification\w*|VolumeOffer)/", Listed(_UNUSED)),
    # ---- Fly Machines (atlas_nb: machines, apps, placements) -------------------------------
    Rule(_FL, r"^/components/schemas/main\.getPlacementsRequest/properties$",
         Check(check_fly_placements_request)),
    Rule(_FL, r"^/components/schemas/(StopRequest|fly\.StopConfig|fly\.MachineCheck|"
         r"fly\.MachineServiceCheck|CreateOIDCTokenRequest)/",
         Listed("durations and fields atlas_nb does not set (it stops with the default signal, "
                "defines no checks, mints no OIDC tokens)")),
)


def _rule_for(spec: str, ptr: str) -> Rule | None:
    return next((r for r in RULES if r.spec == spec and re.search(r.pattern, ptr)), None)


def _units() -> list[tuple[str, str, Any]]:
    return [(spec, ptr, value) for spec in SPECS for ptr, value in examples(spec)]


def _cases() -> list[Any]:
    out = []
    for spec, ptr, value in _units():
        rule = _rule_for(spec, ptr)
        if rule is None or not isinstance(rule.action, Check):
            continue
        marks = [pytest.mark.xfail(strict=True, reason=rule.action.xfail)] if rule.action.xfail \
            else []
        if getattr(rule.action.fn, "takes_status", False):
            value = (_status_of(ptr, value), value)
        out.append(pytest.param(rule.action.fn, value, id=f"{spec.split('/')[0]}:{ptr}",
                                marks=marks))
    return out


def test_the_walk_finds_the_examples_we_know() -> None:
    found = {spec: dict(examples(spec)) for spec in SPECS}
    pod = found[_RP]["/paths//v2/pods/{id}/get/responses/200/content/application/json/"
                     "examples/pod"]
    assert pod["id"] == "7h9k2m4n6p" and pod["status"] == "RUNNING"
    vast = found[_VA]["/components/schemas/Instance/properties"]
    assert vast["actual_status"] == "running" and "instance" in vast  # assembled from fields
    assert sum(len(v) for v in found.values()) > 400


def test_every_example_is_mapped_or_listed() -> None:
    orphans = [f"{spec} {ptr}" for spec, ptr, _ in _units() if _rule_for(spec, ptr) is None]
    assert not orphans, "examples no RULES row maps or lists:\n" + "\n".join(orphans)


def test_every_rule_matches_an_example() -> None:
    used = {id(_rule_for(spec, ptr)) for spec, ptr, _ in _units()}
    stale = [f"{r.spec} {r.pattern}" for r in RULES if id(r) not in used]
    assert not stale, "rules that match no example (re-vendored spec?):\n" + "\n".join(stale)


@pytest.mark.parametrize(("check", "example"), _cases())
def test_spec_example_parses_without_loss(check: Callable[[Any], None], example: Any) -> None:
    check(example)
