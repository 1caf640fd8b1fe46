"""Lambda Cloud wire translation: pure functions and data maps, no I/O.

Shapes follow the Lambda Cloud API v1.8.3 OpenAPI document: every answer is
``{"data": ...}`` or ``{"error": {"code", "message", "suggestion"}}``; an
``Instance`` carries no env, image or ports, so atlas_nb keeps what it needs to
rebuild a ``Compute`` in the instance's ``tags`` (see ``launch_body``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..._http import redact_url
from ...errors import (
    AtlasError,
    Forbidden,
    NotFound,
    ProviderError,
    RateLimited,
    Unauthorized,
    UnknownError,
    ValidationError,
)
from ...gpus import GPUS, GpuIds
from ...models import Compute, ComputeRequest, GpuType, PortMapping
from ..base import as_list, as_map, as_str, deep_merge, strip_secrets

PROVIDER = "lambda_labs"

_INSTANCE_TYPE_RE = re.compile(r"^gpu_(\d+)x_(.+)$")


class LambdaGpuIds(GpuIds):
    """Lambda writes the count into the instance type: ``gpu_{n}x_{model}``; the table
    holds the model suffixes."""

    def encode(self, pid: str, count: int) -> str:
        return f"gpu_{count}x_{pid}"

    def decode(self, wire_id: str) -> tuple[str, int] | None:
        m = _INSTANCE_TYPE_RE.match(wire_id)
        return (m.group(2), int(m.group(1))) if m else None


# Model suffixes of Lambda's instance types (``gpu_8x_h100_sxm5`` -> ``h100_sxm5``).
GPU_IDS = LambdaGpuIds(PROVIDER, {
    "h100": ("h100_sxm5", "h100_pcie"),
    "h100_sxm": ("h100_sxm5",),
    "h100_pcie": ("h100_pcie",),
    "a100_80g": ("a100_80gb_sxm4",),
    "a100_40g": ("a100_sxm4", "a100"),
    "a10": ("a10",),
    "a6000": ("a6000",),
    "rtx_6000": ("rtx6000",),
    "b200": ("b200_sxm6",),
    "gh200": ("gh200",),
    "v100": ("v100", "v100_n"),
})

INSTANCE_STATUS: dict[str, str] = {
    "booting": "provisioning",
    "active": "running",
    "unhealthy": "failed",  # up but failing health checks: it will not serve until restarted
    "terminating": "terminated",  # irreversible, and billing stops: already gone for a user
    "terminated": "terminated",
    "preempted": "terminated",  # reclaimed by Lambda: the instance is gone
}
"""The spec's ``InstanceStatus`` -> ``Compute.status``; anything else is ``unknown``."""

ERROR_KINDS: dict[str, type[AtlasError]] = {
    "global/invalid-api-key": Unauthorized,
    "global/account-inactive": Forbidden,
    "global/invalid-address": Forbidden,
    "global/invalid-parameters": ValidationError,
    "global/object-does-not-exist": NotFound,
    "global/duplicate": ValidationError,
    "global/quota-exceeded": ProviderError,
    "global/internal-error": ProviderError,
    "instance-operations/launch/insufficient-capacity": ProviderError,
    "instance-operations/launch/file-system-in-wrong-region": ValidationError,
}
"""Lambda error ``code`` -> the ``AtlasError`` kind. Branch on the code, never the message
(the spec says so); ``provider/...`` codes are upstream failures (``ProviderError``)."""

INSUFFICIENT_CAPACITY = "instance-operations/launch/insufficient-capacity"
NOT_FOUND = "global/object-does-not-exist"

REQUEST_TAG = "atlas-request"
"""Tag carrying a per-launch marker, so a launch whose answer was lost is found, not repeated."""
PORTS_TAG = "atlas-ports"
"""Tag carrying the requested ports (``8000/http,22/tcp``): an ``Instance`` has no ports."""
IMAGE_TAG = "atlas-image"
"""Tag carrying the container image, when it fits a tag value."""
TAG_VALUE_MAX = 128
_ATLAS_TAGS = frozenset({REQUEST_TAG, PORTS_TAG, IMAGE_TAG})
_GPU_MEMORY = re.compile(r"\((\d+(?:\.\d+)?)\s*GB", re.IGNORECASE)


# -- envelopes --------------------------------------------------------------------------
def payload(body: Any) -> Any:
    """``data`` of a success answer; ``UnknownError`` when the envelope is missing."""
    if isinstance(body, Mapping) and "data" in body:
        return body["data"]
    raise UnknownError("Lambda answered without a 'data' envelope", provider=PROVIDER,
                       raw=strip_secrets(body) if isinstance(body, Mapping) else None)


def error_code(raw: Any) -> str | None:
    """The ``error.code`` of a Lambda error body, if there is one."""
    err = raw.get("error") if isinstance(raw, Mapping) else None
    code = err.get("code") if isinstance(err, Mapping) else None
    return code if isinstance(code, str) and code else None


def remap(exc: AtlasError) -> AtlasError:
    """``exc`` as the kind its Lambda error code names (status-based kinds otherwise)."""
    code = error_code(exc.raw)
    if code is None or isinstance(exc, RateLimited):
        return exc
    kind = ERROR_KINDS.get(code) or (ProviderError if code.startswith("provider/") else None)
    if kind is None or type(exc) is kind:
        return exc
    return kind(exc.message, provider=exc.provider, status=exc.status, raw=exc.raw,
                hint=exc.hint)


# -- requests ---------------------------------------------------------------------------
def atlas_tags(request: ComputeRequest, marker: str) -> list[dict[str, str]]:
    """The tags that let ``compute_from_wire`` rebuild ports and image, and find a lost launch."""
    clash = sorted(set(request.labels) & _ATLAS_TAGS)
    if clash:
        raise ValidationError(f"labels must not set atlas_nb's own Lambda tags {clash}")
    # Labels are tags as they are: ``InstanceLaunchRequest.tags`` is a list of
    # ``RequestedTagEntry`` {key, value} (specs/lambda/lambda-cloud-api-openapi-1.8.3.json),
    # and ``Instance.tags`` returns them; ``ComputeRequest`` keeps label keys to the
    # spec's key pattern and lengths.
    tags = [{"key": REQUEST_TAG, "value": marker},
            *({"key": k, "value": v} for k, v in request.labels.items())]
    if request.ports:
        spec = ",".join(p.spec for p in request.ports)
        if len(spec) > TAG_VALUE_MAX:
            raise ValidationError(
                f"ports: Lambda keeps at most {TAG_VALUE_MAX} characters of port specs per "
                f"instance ({len(spec)} given); expose fewer ports"
            )
        tags.append({"key": PORTS_TAG, "value": spec})
    if request.image and len(request.image) <= TAG_VALUE_MAX:
        tags.append({"key": IMAGE_TAG, "value": request.image})
    return tags


def launch_body(
    request: ComputeRequest,
    *,
    instance_type: str,
    region: str,
    ssh_key_names: list[str],
    name: str,
    marker: str,
    user_data: str,
    opts: Mapping[str, Any],
) -> dict[str, Any]:
    """``InstanceLaunchRequest``; ``opts`` (provider_opts minus atlas's own keys) merged last.

    Tags given in ``opts`` are added to atlas_nb's own tags, not put in their place.
    """
    extra = dict(opts)
    user_tags = extra.pop("tags", None) or []
    if not isinstance(user_tags, list):
        raise ValidationError("provider_opts['tags'] must be a list of {'key', 'value'} dicts")
    keys = {str(t.get("key")) for t in user_tags if isinstance(t, Mapping)}
    clash = sorted(keys & (_ATLAS_TAGS | set(request.labels)))
    if clash:
        raise ValidationError(f"provider_opts['tags'] must not set atlas_nb's own tags or "
                              f"the request's labels {clash}")
    body: dict[str, Any] = {
        "region_name": region,
        "instance_type_name": instance_type,
        "ssh_key_names": list(ssh_key_names),
        "name": name,
        "user_data": user_data,
        "tags": [*atlas_tags(request, marker), *user_tags],
    }
    return deep_merge(body, extra)


def launched_ids(data: Any) -> list[str]:
    """The ids of an ``InstanceLaunchResponse``."""
    ids = data.get("instance_ids") if isinstance(data, Mapping) else None
    return [str(i) for i in ids if i] if isinstance(ids, list) else []


# -- responses --------------------------------------------------------------------------
def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def tags_of(instance: Mapping[str, Any]) -> dict[str, str]:
    """An instance's tags as a dict."""
    out: dict[str, str] = {}
    for tag in map(as_map, as_list(instance.get("tags"))):
        key, value = tag.get("key"), tag.get("value")
        if isinstance(key, str) and isinstance(value, str):
            out[key] = value
    return out


def dollars(cents: Any) -> float | None:
    """``price_cents_per_hour`` (integer US cents) as dollars."""
    value = _int(cents)
    return value / 100.0 if value is not None and value >= 0 else None


def ports_from_tag(spec: str | None, ip: str | None) -> tuple[PortMapping, ...]:
    """Ports from the ``atlas-ports`` tag; URLs on the public IP once there is one.

    The container publishes each port on the same host port, so ``external == internal``.
    """
    out = []
    for item in (spec or "").split(","):
        try:
            port = PortMapping.parse(item)
        except ValidationError:
            continue  # a hand-edited tag: skip what does not parse rather than fail the get
        url = f"{port.protocol}://{ip}:{port.internal}" if ip else None
        out.append(port.model_copy(update={"external": port.internal, "url": url}))
    return tuple(out)


def gpu_of(instance_type: Mapping[str, Any]) -> tuple[str | None, int]:
    """(canonical GPU, or Lambda's type name for one atlas_nb does not know; GPU count)."""
    name = as_str(instance_type.get("name"))
    gpus = _int(as_map(instance_type.get("specs")).get("gpus"))
    if name is None:
        return None, gpus or 0
    canonical, count = GPU_IDS.from_id(name)
    if gpus is None:
        gpus = count
    if not gpus:
        return None, 0  # a CPU type
    return canonical or name, gpus


def clean_raw(instance: Mapping[str, Any]) -> dict[str, Any]:
    """The instance without secrets: no Jupyter token (it opens the instance), no user_data."""
    raw = {k: v for k, v in instance.items() if k not in ("jupyter_token", "user_data")}
    if isinstance(raw.get("jupyter_url"), str):
        raw["jupyter_url"] = redact_url(raw["jupyter_url"])
    cleaned: dict[str, Any] = strip_secrets(raw)
    return cleaned


def compute_from_wire(instance: Mapping[str, Any]) -> Compute:
    """An ``Instance`` as a ``Compute``: ports and image come back from atlas_nb's tags."""
    tags = tags_of(instance)
    status = INSTANCE_STATUS.get(str(instance.get("status", "")).lower(), "unknown")
    ip = as_str(instance.get("ip"))
    itype = as_map(instance.get("instance_type"))
    gpu_type, gpu_count = gpu_of(itype)
    return Compute(
        id=str(instance.get("id") or ""),
        provider=PROVIDER,
        status=status,
        public_ip=ip,
        ports=ports_from_tag(tags.get(PORTS_TAG), ip if status == "running" else None),
        gpu_type=gpu_type,
        gpu_count=gpu_count,
        cost_per_hour=dollars(itype.get("price_cents_per_hour")) or 0.0,
        region=as_str(as_map(instance.get("region")).get("name")),
        image=tags.get(IMAGE_TAG),
        name=as_str(instance.get("name")),
        labels={k: v for k, v in tags.items() if k not in _ATLAS_TAGS},
        raw=clean_raw(instance),
    )


def instances_from_wire(data: Any) -> list[Mapping[str, Any]]:
    """The instances of a list answer's ``data``."""
    return [i for i in as_list(data) if isinstance(i, Mapping)]


def is_our_launch(
    instance: Mapping[str, Any], *, name: str, marker: str, name_is_ours: bool
) -> bool:
    """Whether ``instance`` is the one a launch (name + marker tag) asked for."""
    if instance.get("name") != name:
        return False
    if INSTANCE_STATUS.get(str(instance.get("status", "")).lower()) == "terminated":
        return False
    tags = tags_of(instance)
    if REQUEST_TAG in tags:
        return tags[REQUEST_TAG] == marker
    return name_is_ours  # no tags in the answer: a generated name is unique enough


def _gpu_memory(instance_type: Mapping[str, Any], canonical: str | None) -> float | None:
    found = _GPU_MEMORY.search(str(instance_type.get("gpu_description") or ""))
    if found:
        return float(found.group(1))
    return float(GPUS[canonical].memory_gb) if canonical else None


def regions_of(item: Mapping[str, Any]) -> tuple[str, ...]:
    """``regions_with_capacity_available`` of one ``InstanceTypesItem``, as region codes."""
    regions = as_list(item.get("regions_with_capacity_available"))
    return tuple(str(r["name"]) for r in map(as_map, regions) if r.get("name"))


def gpu_types_from_wire(data: Any) -> list[GpuType]:
    """One ``GpuType`` per GPU instance type; the price is the whole instance's, per hour.

    ``regions`` are those with capacity now (``stock`` is ``"available"`` or ``"none"``).
    CPU-only types (``gpus == 0``) are not GPU types and are left out.
    """
    out: list[GpuType] = []
    for key, item in sorted(as_map(data).items()):
        item = as_map(item)
        itype = as_map(item.get("instance_type"))
        name = as_str(itype.get("name")) or str(key)
        canonical, count = GPU_IDS.from_id(name)
        gpus = _int(as_map(itype.get("specs")).get("gpus"))
        gpus = count if gpus is None else gpus
        if not gpus:
            continue
        regions = regions_of(item)
        out.append(GpuType(
            provider=PROVIDER,
            id=name,
            canonical=canonical,
            display_name=as_str(itype.get("description")) or name,
            memory_gb=_gpu_memory(itype, canonical),
            gpu_count=gpus,
            price_per_hour=dollars(itype.get("price_cents_per_hour")),
            stock="available" if regions else "none",
            cloud_type="secure",
            regions=regions,
            raw=strip_secrets(dict(item)),
        ))
    return out


def region_names(regions: Iterable[str]) -> str:
    """``"us-east-1, us-west-1"``, or ``"none"``."""
    listed = ", ".join(regions)
    return listed or "none"


def error_message(body: Any) -> str | None:
    """The message of a Lambda error body, ``{"error": {"code", "message", "suggestion"}}``
    (the spec's ``ApiErrorResponse``), with the suggestion in parentheses."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict) or not isinstance(err.get("message"), str):
        return None
    suggestion = err.get("suggestion")
    msg = str(err["message"])
    return f"{msg} ({suggestion})" if isinstance(suggestion, str) and suggestion else msg
