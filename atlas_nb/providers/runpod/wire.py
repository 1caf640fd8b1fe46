"""RunPod wire translation: pure functions and status maps, no I/O.

Shapes follow RunPod's REST v2 OpenAPI document (``CreatePodRequest``, ``Pod``,
``ListGpuTypesResponse``), the GraphQL API for what v2 lacks (spot pods, spot
prices) and the serverless runtime API (``/v2/{endpoint}/run`` ...).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from ...errors import ValidationError
from ...gpus import GpuIds
from ...models import Compute, ComputeRequest, GpuType, Job, PortMapping
from ..base import as_datetime, as_list, as_map, as_str, deep_merge, strip_secrets, to_float

PROVIDER = "runpod"

# RunPod's gpuTypeIds (the v2 spec's enum; GraphQL ``gpuTypes.id``).
GPU_IDS = GpuIds(PROVIDER, {
    "h200": ("NVIDIA H200",),
    "h100": ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL"),
    "h100_sxm": ("NVIDIA H100 80GB HBM3",),
    "h100_pcie": ("NVIDIA H100 PCIe",),
    "h100_nvl": ("NVIDIA H100 NVL",),
    "a100_80g": ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"),
    "l40s": ("NVIDIA L40S",),
    "l40": ("NVIDIA L40",),
    "l4": ("NVIDIA L4",),
    "a40": ("NVIDIA A40",),
    "a6000": ("NVIDIA RTX A6000",),
    "a5000": ("NVIDIA RTX A5000",),
    "a4000": ("NVIDIA RTX A4000",),
    "rtx_6000_ada": ("NVIDIA RTX 6000 Ada Generation",),
    "rtx_5090": ("NVIDIA GeForce RTX 5090",),
    "rtx_4090": ("NVIDIA GeForce RTX 4090",),
    "rtx_3090": ("NVIDIA GeForce RTX 3090",),
    "mi300x": ("AMD Instinct MI300X OAM",),
    "b200": ("NVIDIA B200",),
    "v100": ("Tesla V100-SXM2-32GB", "Tesla V100-PCIE-16GB"),
})
REQUEST_ID_ENV = "ATLAS_REQUEST_ID"
"""Env var carrying a per-create marker, so a create whose answer was lost can be found."""

SPOT_BID_ENV = "ATLAS_SPOT_BID"
"""Env var carrying a spot pod's creation bid per GPU, so ``start(id)`` from any process
resumes it with the same bid: REST v2's ``Pod`` has no bid field (specs/runpod/
rest-v2-openapi.json), and GraphQL ``costPerHr`` of a stopped pod is not documented."""

DEFAULT_CPU_FLAVOR = "cpu5c"
VOLUME_PATH = "/workspace"
NETWORK_VOLUME_PATH = "/runpod-volume"
MIN_PERSISTENT_GB = 10
DEFAULT_CONTAINER_DISK_GB = 10
"""Container disk sent when the request names none and no template brings one.
runpod-python's ``create_pod`` sets 10 GB in that case (runpod/runpod-python@07fc6e2b:
runpod/api/ctl_commands.py, "if container_disk_in_gb is None and template_id is None"), as
SkyPilot's spot path does (skypilot-org/skypilot:sky/provision/runpod/api/commands.py);
without one a create can fail with "not enough disk space available" (runpod/runpod-python
issue #386). Sources disagree on the figure: runpodctl defaults to 20 GB
(runpod/runpodctl@2e2df89e:cmd/pod/create.go, ``--container-disk-in-gb``), and the v2 spec
gives ``disk`` no default at all. runpod-python has no REST v2 pod client to copy."""
MIN_SPOT_VCPUS = 1
MIN_SPOT_MEMORY_GB = 1
"""``minVcpuCount`` / ``minMemoryInGb`` sent on every spot rental: runpod-python's defaults
(``min_vcpu_count=1, min_memory_in_gb=1``, runpod/api/ctl_commands.py) and SkyPilot's
``create_spot_pod``; RunPod's GraphQL spot example sends both (runpod/docs@eb33022a:
sdks/graphql/manage-pods.mdx, removed from the docs in 8e5aebdb)."""

POD_STATUS: dict[str, str] = {
    "PROVISIONING": "provisioning",
    "STARTING": "provisioning",
    "RUNNING": "running",
    "EXITED": "stopped",
    "ERROR": "failed",
    "TERMINATED": "terminated",
}
"""REST v2 ``PodStatus`` -> ``Compute.status``; anything else is ``unknown``."""

JOB_STATUS: dict[str, str] = {
    "IN_QUEUE": "in_queue",
    "IN_PROGRESS": "in_progress",
    "RUNNING": "in_progress",
    "COMPLETED": "completed",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "TIMED_OUT": "timed_out",
}
"""Serverless job status -> ``Job.status``; anything else is ``in_queue``."""

_CLOUD = {"secure": "SECURE", "community": "COMMUNITY"}
_STOCK = {"HIGH": "high", "MEDIUM": "medium", "LOW": "low", "NONE": "none"}

GPU_TYPES_QUERY = (
    "query AtlasGpuTypes { gpuTypes { id displayName memoryInGb secureSpotPrice "
    "communitySpotPrice lowestPrice(input: {gpuCount: 1}) "
    "{ minimumBidPrice uninterruptablePrice stockStatus } } }"
)
RENT_SPOT_MUTATION = (
    "mutation AtlasRentSpot($input: PodRentInterruptableInput!) "
    "{ podRentInterruptable(input: $input) { id } }"
)
# What start(id) needs of a pod that REST v2 does not say: whether it is a spot pod
# (``podType`` INTERRUPTABLE | RESERVED) and its bid. Field names: RunPod's GraphQL schema
# (https://graphql-spec.runpod.io/, type Pod), as runpodctl reads ``costPerHr``
# (runpod/runpodctl@2e2df89e:api/pod.go); ``lowestBidPriceToResume`` is seen in third-party
# callers only [third-party].
SPOT_POD_QUERY = (
    "query AtlasSpotPod($input: PodFilter!) { pod(input: $input) "
    "{ id desiredStatus podType gpuCount costPerHr lowestBidPriceToResume env } }"
)
# Resuming a spot pod: ``podBidResume(input: {podId, bidPerGpu, gpuCount})``, as runpodctl's
# StartSpotPod sends it (runpod/runpodctl@2e2df89e:api/pod.go) and RunPod's GraphQL guide
# showed it ("Use podResume for on-demand Pods or podBidResume for spot Pods",
# runpod/docs@eb33022a:sdks/graphql/manage-pods.mdx). podResume on a spot pod fails with
# "Cannot resume a spot pod as an on demand pod." (runpod/runpodctl issue #156).
BID_RESUME_MUTATION = (
    "mutation AtlasBidResume($input: PodBidResumeInput!) "
    "{ podBidResume(input: $input) { id desiredStatus costPerHr } }"
)
# The key's user id: runpod-python runpod/api/queries/user.py (QUERY_USER,
# ``query myself { myself { id pubKey ... } }``), read by runpod.get_user()
# (runpod/api/ctl_commands.py).
MYSELF_QUERY = "query AtlasMyself { myself { id } }"


# -- requests ---------------------------------------------------------------------------
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*")


def segment(value: str) -> str:
    """``value`` as one URL path segment (ids are plain: skip ``quote`` on the hot path)."""
    if _PLAIN_SEGMENT.fullmatch(value):
        return value
    if value.strip(".") == "":  # "." and ".." would be resolved away by URL normalization
        return value.replace(".", "%2E")
    return quote(value, safe="")


def port_specs(request: ComputeRequest) -> list[str]:
    """``["8000/http", "22/tcp"]``; RunPod exposes only http and tcp."""
    udp = [p.internal for p in request.ports if p.protocol == "udp"]
    if udp:
        raise ValidationError(f"RunPod cannot expose udp ports ({udp}); use 'http' or 'tcp'")
    return [p.spec for p in request.ports]


def _one_volume(request: ComputeRequest) -> None:
    if request.network_volume_id and request.volume_gb:
        raise ValidationError(
            "RunPod pods take a network volume or a persistent volume, not both; "
            "drop volume_gb or network_volume_id"
        )


def _mounts(request: ComputeRequest) -> dict[str, Any] | None:
    _one_volume(request)
    volume = request.volume_gb or 0
    if request.network_volume_id:
        return {"network": [{"volumeId": request.network_volume_id,
                             "path": NETWORK_VOLUME_PATH}]}
    if not volume:
        return None
    if request.gpu is None:
        raise ValidationError("RunPod CPU pods cannot have volume_gb; use network_volume_id")
    if volume < MIN_PERSISTENT_GB:
        raise ValidationError(
            f"volume_gb={volume}: RunPod persistent volumes are at least "
            f"{MIN_PERSISTENT_GB} GB; pass volume_gb={MIN_PERSISTENT_GB} or more"
        )
    return {"persistent": {"size": volume, "path": VOLUME_PATH}}


def _compute_config(request: ComputeRequest) -> dict[str, Any]:
    if request.memory_gb is not None:
        raise ValidationError(
            "RunPod derives memory from the GPU type or CPU flavor; drop memory_gb"
        )
    if request.gpu is None:
        vcpus = request.cpus or 2
        if vcpus < 2 or vcpus & (vcpus - 1):
            raise ValidationError(f"cpus={vcpus}: RunPod CPU pods take a power of two >= 2")
        return {"cpu": {"id": DEFAULT_CPU_FLAVOR, "vcpuCount": vcpus}}
    if request.cpus is not None:
        raise ValidationError("RunPod GPU pods get vCPUs with the GPU type; drop cpus")
    return {"gpu": {"id": GPU_IDS.provider_id(request.gpu), "count": request.gpu_count}}


def _container_disk(request: ComputeRequest) -> int | None:
    """The container disk to ask for: the request's, else ``DEFAULT_CONTAINER_DISK_GB``
    unless a template brings its own (runpod-python skips the default with a template)."""
    if request.container_disk_gb:
        return request.container_disk_gb
    return None if request.template_id else DEFAULT_CONTAINER_DISK_GB


def create_body(request: ComputeRequest, *, name: str, marker: str) -> dict[str, Any]:
    """REST v2 ``CreatePodRequest`` for an on-demand pod; ``provider_opts`` merged last.

    ``cloud_type="any"`` leaves ``cloud`` out here, and the provider sets what it resolved
    to (``pick_cloud``): the v2 spec reads an omitted ``cloud`` as SECURE ("Defaults to
    `SECURE` when omitted", ``CreatePodRequest.cloud``), so "any" must never go out bare.
    (Sources disagree: SkyPilot's provisioner comments that omitting it means any cloud,
    skypilot-org/skypilot@02b01447:sky/provision/runpod/utils.py; the spec is followed.)
    ``request.labels`` are not sent: a pod has no labels or tags (``CreatePodRequest`` and
    ``Pod`` in specs/runpod/rest-v2-openapi.json), so ownership travels in the name only.
    """
    body: dict[str, Any] = {"name": name}
    if request.image:
        body["image"] = request.image
    body.update(_compute_config(request))
    if request.cloud_type in _CLOUD:
        body["cloud"] = _CLOUD[request.cloud_type]
    if request.region_hints:
        body["dataCenterIds"] = list(request.region_hints)
    disk = _container_disk(request)
    if disk:
        body["disk"] = disk
    mounts = _mounts(request)
    if mounts:
        body["mounts"] = mounts
    if request.ports:
        body["ports"] = port_specs(request)
    body["env"] = {**request.env, REQUEST_ID_ENV: marker}
    if request.template_id:
        body["templateId"] = request.template_id
    return deep_merge(body, request.provider_opts)


def spot_input(
    request: ComputeRequest, *, name: str, marker: str, bid_per_gpu: float
) -> dict[str, Any]:
    """GraphQL ``PodRentInterruptableInput`` for a spot pod; ``provider_opts`` merged last."""
    if request.gpu is None:
        raise ValidationError("RunPod spot pods need a GPU; pass gpu=... or spot=False")
    if request.memory_gb is not None or request.cpus is not None:
        raise ValidationError("RunPod sizes CPU and memory by GPU type; drop cpus/memory_gb")
    _one_volume(request)
    bid = round(bid_per_gpu, 4)
    env = {**request.env, REQUEST_ID_ENV: marker, SPOT_BID_ENV: f"{bid:g}"}
    data: dict[str, Any] = {
        "bidPerGpu": bid,
        "gpuCount": request.gpu_count,
        "gpuTypeId": GPU_IDS.provider_id(request.gpu),
        "name": name,
        "cloudType": _CLOUD.get(request.cloud_type, "ALL"),
        "ports": ",".join(port_specs(request)),
        "env": [{"key": k, "value": v} for k, v in env.items()],
        # Always sent, as RunPod's spot example and every official caller do (see
        # MIN_SPOT_VCPUS); atlas_nb sizes CPU and memory by GPU type, so the floor is 1.
        "minVcpuCount": MIN_SPOT_VCPUS,
        "minMemoryInGb": MIN_SPOT_MEMORY_GB,
    }
    if any(p.protocol == "tcp" for p in request.ports):
        # A TCP port is reachable only on a host with a public IP; without this RunPod may
        # place the pod on one without (``supportPublicIp``: runpod-python sends true by
        # default, runpod/api/mutations/pods.py; so does SkyPilot's create_spot_pod).
        data["supportPublicIp"] = True
    mount_path = (NETWORK_VOLUME_PATH if request.network_volume_id
                  else VOLUME_PATH if request.volume_gb else None)
    optional = {
        "imageName": request.image,
        "containerDiskInGb": _container_disk(request),
        "volumeInGb": request.volume_gb or None,
        "networkVolumeId": request.network_volume_id,
        # With a volume RunPod needs a mount path: SkyPilot lists volumeMountPath among the
        # required fields of podRentInterruptable (sky/provision/runpod/api/pods.py) and the
        # docs' spot example sends it [third-party: no RunPod text says "required"].
        "volumeMountPath": mount_path,
        "dataCenterId": request.region_hints[0] if request.region_hints else None,
        "templateId": request.template_id,
    }
    data.update({k: v for k, v in optional.items() if v is not None})
    return deep_merge(data, request.provider_opts)


def job_body(
    input: Any, webhook: str | None, policy: Mapping[str, Any], opts: Mapping[str, Any]
) -> dict[str, Any]:
    """Serverless ``/run`` and ``/runsync`` body: ``input`` plus webhook/policy when given."""
    body: dict[str, Any] = {"input": input}
    if webhook:
        body["webhook"] = webhook
    if policy:
        body["policy"] = dict(policy)
    return deep_merge(body, opts)


# -- responses --------------------------------------------------------------------------
def _opt_float(value: Any) -> float | None:
    out = to_float(value, -1.0)
    return out if out > 0 else None


def _opt_int(value: Any) -> int | None:
    if type(value) is int:
        return value
    return int(value) if type(value) is float and math.isfinite(value) else None


def _runtime_ports(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    ports = as_list(as_map(pod.get("runtime")).get("ports"))
    return [p for p in ports if isinstance(p, Mapping)]


@functools.lru_cache(maxsize=256)  # the same few specs recur in every pod
def _parse_spec(spec: str) -> tuple[int, str] | None:
    port, _, proto = spec.strip().partition("/")
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return int(port), ("tcp" if proto.lower() == "tcp" else "http")


_NOT_PUBLIC = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "100.64.0.0/10",  # RFC 6598 shared space: RunPod's HTTP-port addresses (100.65.x.x)
    "127.0.0.0/8", "169.254.0.0/16", "0.0.0.0/8",
))


@functools.lru_cache(maxsize=256)
def _public_address(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if addr.version == 6:
        return not (addr.is_private or addr.is_loopback or addr.is_link_local)
    return not any(addr in net for net in _NOT_PUBLIC)


def public_tcp_ip(live: list[Mapping[str, Any]]) -> str | None:
    """The pod's public IP: the address of a public TCP mapping, never an HTTP port's.

    RunPod gives HTTP ports a private address behind its proxy (GraphQL ``runtime.ports``:
    ``{"ip": "100.65.0.101", "isIpPublic": false, ..., "type": "http"}``,
    runpod/docs@a900806e:sdks/graphql/manage-pods.mdx); SkyPilot reads endpoints only from
    ``type == "tcp"`` entries with an ip and a public port (skypilot-org/skypilot@02b01447:
    sky/provision/runpod/utils.py ``_parse_pod``). Sources disagree on the shape: the v2
    spec's ``PodRuntimePort`` example pairs ``type: "http"`` with a public-looking ip
    (45.23.12.1), and REST v2 carries no ``isIpPublic``, so the type and the address decide.
    """
    for p in live:
        ip = as_str(p.get("ip"))
        if (str(p.get("type", "")).lower() == "tcp" and ip and _public_address(ip)
                and type(p.get("public")) is int):
            return ip
    return None


def ports_from_wire(
    pod_id: str, specs: Any, live: list[Mapping[str, Any]]
) -> tuple[PortMapping, ...]:
    """HTTP ports get the RunPod proxy URL; TCP ports get ``tcp://ip:public`` once running
    on a public address (see ``public_tcp_ip``).

    ``specs`` is the pod's ``ports`` (``["8000/http", "22/tcp"]``), ``live`` its
    ``runtime.ports``.
    """
    mapped_by = {(p.get("private"), str(p.get("type", "")).lower()): p for p in live}
    out = []
    for spec in as_list(specs):
        parsed = _parse_spec(spec) if isinstance(spec, str) else None
        if parsed is None:
            continue
        port, proto = parsed
        mapped = mapped_by.get(parsed, {})
        public = mapped.get("public")
        ip = as_str(mapped.get("ip"))
        if proto == "http" or ip is None or not _public_address(ip):
            # an HTTP port's own mapping is a private address behind the proxy; a TCP port
            # on a private address is not reachable from outside
            public, ip = None, None
        public = public if type(public) is int and 0 < public < 65536 else None
        out.append(_port(pod_id, port, proto, public, ip))
    return tuple(out)


@functools.lru_cache(maxsize=1024)  # frozen results: a polled pod maps to the same objects
def _port(pod_id: str, port: int, proto: str, public: int | None, ip: str | None) -> PortMapping:
    if proto == "http":
        url: str | None = f"https://{pod_id}-{port}.proxy.runpod.net"
    else:  # reachable only once the pod runs and RunPod assigned a public port
        url = f"tcp://{ip}:{public}" if ip and public else None
    return PortMapping(internal=port, external=public, protocol=proto, url=url)


def gpu_from_wire(gpu: Any) -> tuple[str | None, int]:
    """(canonical name, or RunPod's id when atlas_nb has none; count) of a pod's ``gpu``."""
    gid = as_str(as_map(gpu).get("id"))
    if gid is None:
        return None, 0
    count = _opt_int(as_map(gpu).get("count"))
    return _gpu_name(gid), count if count is not None and count > 0 else 1


@functools.lru_cache(maxsize=256)
def _gpu_name(gid: str) -> str:
    return GPU_IDS.from_id(gid)[0] or gid


def compute_from_wire(pod: Mapping[str, Any]) -> Compute:
    """A REST v2 ``Pod`` as a ``Compute``; ``raw`` keeps the pod minus its env."""
    pod_id = str(pod.get("id") or "")
    gpu_type, gpu_count = gpu_from_wire(pod.get("gpu"))
    live = _runtime_ports(pod)
    cloud = str(pod.get("cloud") or "").lower()
    return Compute(
        id=pod_id,
        provider=PROVIDER,
        status=POD_STATUS.get(str(pod.get("status", "")).upper(), "unknown"),
        public_ip=public_tcp_ip(live),
        ports=ports_from_wire(pod_id, pod.get("ports"), live),
        gpu_type=gpu_type,
        gpu_count=gpu_count,
        cost_per_hour=to_float(pod.get("cost")),
        region=as_str(pod.get("dataCenterId")),
        image=as_str(pod.get("image")),
        name=as_str(pod.get("name")),
        created_at=as_datetime(pod.get("createdAt")),
        cloud_type=cloud if cloud in _CLOUD else None,
        raw=strip_secrets(pod),
    )


def pods_from_wire(body: Any) -> list[Mapping[str, Any]]:
    """The pods of a ``ListPodsResponse`` (tolerating a bare list)."""
    pods = body.get("pods") if isinstance(body, Mapping) else body
    return [p for p in as_list(pods) if isinstance(p, Mapping)]


def is_our_create(pod: Mapping[str, Any], *, name: str, marker: str, name_is_ours: bool) -> bool:
    """Whether ``pod`` is the one a create (name + env marker) asked for."""
    if pod.get("name") != name or str(pod.get("status", "")).upper() == "TERMINATED":
        return False
    env = pod.get("env")
    if isinstance(env, Mapping) and REQUEST_ID_ENV in env:
        return bool(env[REQUEST_ID_ENV] == marker)
    return name_is_ours  # no env in the answer: a generated name is unique enough


def job_from_wire(body: Any, endpoint: str, job_id: str | None = None) -> Job:
    """A serverless status answer as a ``Job`` (unknown statuses read as ``in_queue``)."""
    data = body if type(body) is dict else as_map(body)
    error = data.get("error")
    if error is not None and type(error) is not str:
        error = json.dumps(error, default=str)
    status: Any = data.get("status")
    return Job(
        id=str(data.get("id") or job_id or ""),
        endpoint=endpoint,
        provider=PROVIDER,
        status=(type(status) is str and JOB_STATUS.get(status))
        or JOB_STATUS.get(str(status).upper(), "in_queue"),
        output=data.get("output"),
        error=error,
        execution_time_ms=_opt_int(data.get("executionTime")),
        delay_time_ms=_opt_int(data.get("delayTime")),
        raw=strip_secrets(data),
    )


def stream_chunks(items: Any) -> list[Any]:
    """The payloads of a ``/stream`` answer's ``stream`` list, ``{"output": x}`` unwrapped."""
    return [i["output"] if isinstance(i, Mapping) and "output" in i else i for i in as_list(items)]


def stream_answer(body: Any) -> tuple[str | None, list[Any]]:
    """A ``GET /stream/{id}`` answer as ``(status or None, chunks)``; ``ValueError`` when it
    is not a stream answer at all (text, empty, a scalar, ``{}``), so it is never polled again.

    Sources disagree on the shape. RunPod's operation reference shows a bare array of items
    (``[{"metrics": ..., "output": ...}]``: https://docs.runpod.io/serverless/endpoints/
    operation-reference, "/stream"), which carries no status (``None``: ask ``/status``).
    runpod-python reads ``{"status", "stream": [{"output": ...}]}`` (runpod/endpoint/runner.py,
    ``Job.stream``). Both are read; items are unwrapped as ``stream_chunks`` does.
    """
    if type(body) is list:
        return None, stream_chunks(body)
    if isinstance(body, Mapping) and ("status" in body or "stream" in body):
        items, status = body.get("stream"), body.get("status")
        if (items is None or type(items) is list) and (status is None or type(status) is str):
            return (status.upper() if status else None), stream_chunks(items)
    raise ValueError(f"not a stream answer: {str(body)[:120]!r}")


class GraphQLFailure(Exception):
    """A GraphQL ``errors`` answer (HTTP 200); the provider turns it into an ``AtlasError``."""

    def __init__(self, message: str, raw: Any) -> None:
        super().__init__(message)
        self.message = message
        self.raw = raw


def graphql_data(body: Any) -> Mapping[str, Any]:
    """``data`` of a GraphQL answer; raises ``GraphQLFailure`` on ``errors``."""
    errors = as_map(body).get("errors")
    if errors:
        first = errors[0] if isinstance(errors, list) else errors
        message = as_map(first).get("message") if isinstance(first, Mapping) else first
        raise GraphQLFailure(str(message or "GraphQL error"), strip_secrets(dict(body)))
    return as_map(as_map(body).get("data"))


def user_id_from_wire(data: Any) -> str | None:
    """``myself.id`` of a ``MYSELF_QUERY`` answer's ``data`` (``None`` if absent)."""
    return as_str(as_map(as_map(data).get("myself")).get("id"))


def spot_bid(gpu_types: Iterable[Any], gpu_id: str) -> float | None:
    """The catalog's lowest spot bid per GPU for RunPod GPU id ``gpu_id``."""
    for entry in map(as_map, gpu_types):
        if entry.get("id") == gpu_id:
            bid = _opt_float(as_map(entry.get("lowestPrice")).get("minimumBidPrice"))
            spots = (_opt_float(entry.get(k)) for k in ("communitySpotPrice", "secureSpotPrice"))
            return bid or min((s for s in spots if s is not None), default=None)
    return None


def resume_bid(pod: Any) -> float | None:
    """The bid per GPU to resume a spot pod with (a ``SPOT_POD_QUERY`` ``pod``): the
    creation bid atlas_nb stamped in its env, else its rate (``costPerHr`` / ``gpuCount``),
    else RunPod's ``lowestBidPriceToResume``; ``None`` when none is known."""
    data = as_map(pod)
    for item in as_list(data.get("env")):
        key, _, value = str(item).partition("=")
        if key == SPOT_BID_ENV and (bid := _opt_float(value)):
            return bid
    count = _opt_int(data.get("gpuCount")) or 1
    rate = _opt_float(data.get("costPerHr"))
    if rate:
        return round(rate / max(count, 1), 4)
    return _opt_float(data.get("lowestBidPriceToResume"))


def graphql_pod(data: Any) -> Mapping[str, Any] | None:
    """``pod`` of a ``SPOT_POD_QUERY`` answer's ``data`` (``None``: RunPod knows no such pod)."""
    pod = as_map(data).get("pod")
    return pod if isinstance(pod, Mapping) else None


def community_may_win(secure: Any) -> bool:
    """Whether community cloud could still be the pick after the SECURE catalog answer
    (it carries both list prices): it is offered and secure is out of stock or dearer."""
    data = as_map(secure)
    price = as_map(data.get("price"))
    community = _opt_float(price.get("community"))
    if not data.get("community") or community is None:
        return False
    secure_price = _opt_float(price.get("secure"))
    stocked = data.get("secure") and str(data.get("availability") or "NONE").upper() != "NONE"
    return not stocked or secure_price is None or community < secure_price


def pick_cloud(offers: Mapping[str, Any]) -> str:
    """The cloud ``cloud_type="any"`` resolves to: the cheaper of ``SECURE``/``COMMUNITY``
    that has stock, from ``GET /v2/catalog/gpus/{id}?include=AVAILABILITY`` answers keyed by
    the ``cloud`` each was asked for; a tie goes to SECURE. With stock in neither, the
    cheaper one (the create's capacity error then says so)."""
    rows = []
    for cloud, entry in offers.items():
        data = as_map(entry)
        price = _opt_float(as_map(data.get("price")).get(cloud.lower()))
        if not data.get(cloud.lower()) or price is None:
            continue
        stocked = str(data.get("availability") or "NONE").upper() != "NONE"
        rows.append((not stocked, price, cloud != "SECURE", cloud))
    return min(rows)[3] if rows else "SECURE"


def catalog_price(catalog: Any, gpu_id: str, cloud: str) -> float | None:
    """The on-demand price per GPU of ``gpu_id`` in ``cloud`` from ``/v2/catalog/gpus``."""
    for entry in map(as_map, as_list(as_map(catalog).get("gpus"))):
        if entry.get("id") == gpu_id:
            return _opt_float(as_map(entry.get("price")).get(cloud))
    return None


def gpu_types_from_wire(catalog: Any, spot: Iterable[Any]) -> list[GpuType]:
    """One ``GpuType`` per GPU and cloud it is offered in: REST v2 on-demand prices,
    GraphQL spot prices and stock."""
    by_id = {str(s.get("id")): s for s in spot if isinstance(s, Mapping)}
    out: list[GpuType] = []
    for entry in map(as_map, as_list(as_map(catalog).get("gpus"))):
        gid = as_str(entry.get("id"))
        if gid is None:
            continue
        gql = as_map(by_id.get(gid))
        lowest = as_map(gql.get("lowestPrice"))
        stock = str(entry.get("availability") or lowest.get("stockStatus") or "").upper()
        regions = tuple(str(d["id"]) for d in map(as_map, as_list(entry.get("dataCenters")))
                        if d.get("id"))
        memory = to_float(entry.get("memory", gql.get("memoryInGb")), -1.0)
        for cloud in ("secure", "community"):
            if not entry.get(cloud):
                continue
            out.append(GpuType(
                provider=PROVIDER,
                id=gid,
                canonical=GPU_IDS.from_id(gid)[0],
                display_name=str(entry.get("name") or gql.get("displayName") or gid),
                memory_gb=memory if memory >= 0 else None,
                price_per_hour=_opt_float(as_map(entry.get("price")).get(cloud)),
                spot_price_per_hour=_opt_float(gql.get(f"{cloud}SpotPrice"))
                or _opt_float(lowest.get("minimumBidPrice")),
                stock=_STOCK.get(stock),
                cloud_type=cloud,
                regions=regions,
                raw=strip_secrets({**entry, "graphql": dict(gql)}),
            ))
    return out


def error_message(body: Any) -> str | None:
    """The message of a RunPod error body: REST v2 answers RFC 9457 problem+json
    (``detail``, else ``title``; the generic reader handles those), GraphQL answers
    ``{"errors": [{"message": ...}]}`` (graphql.org/learn/response)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and not body.get("detail"):
        first = errors[0]
        if isinstance(first, dict) and isinstance(first.get("message"), str):
            return str(first["message"])
        if isinstance(first, str):
            return first
    return None
