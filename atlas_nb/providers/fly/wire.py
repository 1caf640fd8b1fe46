"""Fly Machines wire translation: pure functions and status maps, no I/O.

Shapes follow Fly's Machines OpenAPI document (``CreateMachineRequest``,
``fly.MachineConfig``, ``fly.MachineGuest``, ``fly.MachineService``, ``Machine``,
``ErrorResponse``). A compute id is ``"{app}/{machine_id}"``: a machine id alone
does not say which app's URL to call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ...errors import Unsupported, ValidationError
from ...gpus import GpuIds
from ...models import Compute, ComputeRequest, GpuType, PortMapping
from ..base import as_datetime, as_list, as_map, as_str, deep_merge, strip_secrets
from . import addresses, prices, sizes

PROVIDER = "fly"

# Fly's ``guest.gpu_kind`` values (docs: gpus/getting-started-gpus).
GPU_IDS = GpuIds(PROVIDER, {
    "a100_80g": ("a100-sxm4-80gb",),
    "a100_40g": ("a100-pcie-40gb",),
    "l40s": ("l40s",),
    "a10": ("a10",),
})
MARKER_KEY = "atlas_request_id"
"""``config.metadata`` key carrying a per-create marker, so a lost create can be found."""

ATLAS_METADATA_KEYS = frozenset({MARKER_KEY, addresses.CREATED_APP_KEY,
                                 addresses.CREATED_IPS_KEY})
"""``config.metadata`` keys atlas_nb writes for itself: never shown as labels."""

OPTION_KEYS = frozenset({"app", "create_app", "org"})
"""``provider_opts`` keys the provider reads; every other key is merged into the body."""

MACHINE_STATUS: dict[str, str] = {
    # persistent
    "created": "provisioning",
    "started": "running",
    "stopped": "stopped",
    "suspended": "stopped",
    "failed": "failed",
    # transient
    "creating": "provisioning",
    "starting": "provisioning",
    "restarting": "provisioning",
    "updating": "provisioning",
    "replacing": "provisioning",
    "stopping": "stopped",
    "suspending": "stopped",
    "destroying": "terminated",
    "launch_failed": "failed",
    # terminal
    "destroyed": "terminated",
    # Version-only terminal states: the queried *version* is gone, the machine may live on.
    "replaced": "unknown",
    "migrated": "unknown",
}
"""Machine ``state`` -> ``Compute.status``; anything else is ``unknown``.

The spec's ``Machine.state`` is a free string. The states are those of the wait
endpoint's ``state`` enum and the list filter's description in the spec, plus
Fly's states table (superfly/docs@5c22c8ce:machines/machine-states.html.markerb):
persistent ``created started stopped suspended failed``; transient ``creating
starting stopping restarting suspending destroying launch_failed updating
replacing``; terminal ``destroyed replaced migrated``. A transient state maps to
where it is heading (``stopping`` -> stopped, ``destroying`` -> terminated).
"""

WAIT_PSEUDO_STATES = frozenset({"settled"})
"""Wait targets that are not machine states (``settled``: any persistent state)."""

_APP_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# -- auth and ids -----------------------------------------------------------------------
def check_app(app: Any) -> str:
    """``app`` if it is a valid Fly app name, else a ``ValidationError`` saying why."""
    if not isinstance(app, str) or not _APP_RE.match(app):
        raise ValidationError(
            f"Fly app name {app!r} is not valid; use lowercase letters, digits and dashes "
            "(e.g. provider_opts={'app': 'my-app'})"
        )
    return app


def compute_id(app: str, machine_id: str) -> str:
    """The ``Compute.id`` of a machine: ``"{app}/{machine_id}"``."""
    return f"{app}/{machine_id}"


def split_id(value: Any, default_app: str | None) -> tuple[str, str]:
    """``(app, machine_id)`` from ``"{app}/{machine_id}"``, or a bare id in ``default_app``."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("compute id must be a non-empty string like 'my-app/<machine id>'")
    app, sep, machine = value.strip().rpartition("/")
    if not sep:
        if default_app is None:
            raise ValidationError(
                f"Fly compute id {value!r} names no app; pass 'my-app/{value}' "
                "(ids from spawn_compute have that form) or set providers.fly.default_app"
            )
        app = default_app
    if not _ID_RE.match(machine):
        raise ValidationError(f"{machine!r} is not a Fly machine id")
    return check_app(app), machine


# -- requests ---------------------------------------------------------------------------
def services(request: ComputeRequest) -> list[dict[str, Any]]:
    """``fly.MachineService`` per port, in the app's shared address space.

    The first HTTP port takes ``https://{app}.fly.dev`` (443 with TLS, 80 plain);
    further HTTP ports get TLS on their own number (``https://{app}.fly.dev:{port}``).
    TCP and UDP ports are passed through on their own number.
    """
    out: list[dict[str, Any]] = []
    first_http = True
    for port in request.ports:
        if port.protocol == "http" and first_http:
            first_http = False
            ports: list[dict[str, Any]] = [
                {"port": 443, "handlers": ["tls", "http"]},
                {"port": 80, "handlers": ["http"], "force_https": True},
            ]
        elif port.protocol == "http":
            ports = [{"port": port.internal, "handlers": ["tls", "http"]}]
        else:
            ports = [{"port": port.internal}]
        out.append({"protocol": "udp" if port.protocol == "udp" else "tcp",
                    "internal_port": port.internal, "ports": ports})
    return out


def _region(request: ComputeRequest) -> str | None:
    """The first region hint; for a GPU, the first hint (else region) that offers it."""
    hints = list(request.region_hints)
    if request.gpu is None:
        return hints[0] if hints else None
    row = prices.gpu_price(GPU_IDS.provider_id(request.gpu))
    offered = row.regions if row else ()
    return next((h for h in hints if h in offered), hints[0] if hints else
                (offered[0] if offered else None))


def _refuse(request: ComputeRequest) -> None:
    """Requests Fly Machines cannot express: say what to do instead."""
    if request.spot:
        raise Unsupported(
            "fly does not offer spot machines through atlas_nb", provider=PROVIDER,
            hint="spawn with spot=False",
        )
    if request.template_id:
        raise ValidationError("Fly has no templates; pass image='registry/name:tag'")
    if request.volume_gb or request.network_volume_id:
        raise ValidationError(
            "Fly volumes are created separately and mounted by id: drop volume_gb/"
            "network_volume_id and pass provider_opts={'config': {'mounts': "
            "[{'volume': 'vol_...', 'path': '/data'}]}}"
        )
    if request.cloud_type == "community":
        raise ValidationError("Fly has no community cloud; drop cloud_type")


def create_body(request: ComputeRequest, *, name: str, marker: str,
                ownership: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``CreateMachineRequest``; ``provider_opts`` (minus ``app``/``create_app``/``org``)
    merged last, so ``{"config": {"auto_destroy": True}}`` reaches the config.

    ``ownership`` (``app_owner.ownership_metadata``) records in the machine's metadata
    that atlas_nb created its app and which addresses it allocated there."""
    _refuse(request)
    spec = sizes.guest(request)
    if request.max_price_per_hour is not None:
        cost = price_of(spec)
        if cost > request.max_price_per_hour:
            raise ValidationError(
                f"this Fly machine costs ${cost:.4f}/h (static price table), above "
                f"max_price_per_hour={request.max_price_per_hour:g}; raise it or ask for less"
            )
    config: dict[str, Any] = {
        "image": request.image,
        "guest": spec,
        "env": dict(request.env),
        # Labels go to ``fly.MachineConfig.metadata`` (``additionalProperties: string``,
        # specs/fly/machines-openapi3.json), which every Machine answer returns in its
        # ``config``; the marker key (with ``_``) can never be a label key.
        "metadata": {**request.labels, **(ownership or {}), MARKER_KEY: marker},
    }
    if request.ports:
        config["services"] = services(request)
    if request.container_disk_gb:
        config["rootfs"] = {"size_gb": request.container_disk_gb}
    body: dict[str, Any] = {"name": name, "config": config}
    region = _region(request)
    if region:
        body["region"] = region
    extra = {k: v for k, v in request.provider_opts.items() if k not in OPTION_KEYS}
    return deep_merge(body, extra)


def price_of(spec: Mapping[str, Any]) -> float:
    """A ``fly.MachineGuest``'s price per hour from the static table (0.0 if unknown)."""
    return prices.machine_price_per_hour(
        str(spec.get("cpu_kind") or "shared"),
        _int(spec.get("cpus"), 1),
        _int(spec.get("memory_mb"), 256),
        as_str(spec.get("gpu_kind")),
        _int(spec.get("gpus"), 0),
    )


# -- responses --------------------------------------------------------------------------
def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def ports_from_wire(
    app: str, config: Mapping[str, Any], assignments: Iterable[Mapping[str, Any]] = ()
) -> tuple[PortMapping, ...]:
    """One ``PortMapping`` per service: HTTP on ``https://{app}.fly.dev[:port]``,
    TCP/UDP as ``tcp://{app}.fly.dev:{port}``.

    A port's ``url`` is set only when the app has an address that serves it
    (``assignments``, the app's ``IPAssignment`` rows; ``addresses.can_serve``): an
    app made through the Machines API has none, and its name does not resolve.
    """
    rows = list(assignments)
    out = []
    for service in map(as_map, as_list(config.get("services"))):
        internal = service.get("internal_port")
        if not isinstance(internal, int) or not 0 < internal < 65536:
            continue
        public = [p for p in map(as_map, as_list(service.get("ports")))
                  if isinstance(p.get("port"), int)]
        web = [p for p in public if "http" in as_list(p.get("handlers"))]
        host = f"{app}.fly.dev"
        if web:
            tls = [p for p in web if "tls" in as_list(p.get("handlers"))]
            port = (tls or web)[0]["port"]
            scheme = "https" if tls else "http"
            default = 443 if tls else 80
            url = f"{scheme}://{host}" + ("" if port == default else f":{port}")
            out.append(PortMapping(internal=internal, external=port, protocol="http",
                                   url=url if addresses.can_serve("http", True, rows) else None))
        elif public:
            proto = "udp" if str(service.get("protocol", "")).lower() == "udp" else "tcp"
            port = public[0]["port"]
            tls_port = "tls" in as_list(public[0].get("handlers")) and proto == "tcp"
            url = f"{proto}://{host}:{port}"
            out.append(PortMapping(internal=internal, external=port, protocol=proto,
                                   url=url if addresses.can_serve(proto, tls_port, rows)
                                   else None))
    return tuple(out)


def labels_of(config: Mapping[str, Any]) -> dict[str, str]:
    """A machine's ``config.metadata`` as ``Compute.labels``: every string entry but
    atlas_nb's create marker (Fly's own keys, such as ``fly_platform_version``, included)."""
    metadata = as_map(config.get("metadata"))
    return {str(k): v for k, v in metadata.items()
            if isinstance(v, str) and k not in ATLAS_METADATA_KEYS}


def compute_from_wire(
    machine: Mapping[str, Any], app: str, assignments: Iterable[Mapping[str, Any]] = ()
) -> Compute:
    """A ``Machine`` as a ``Compute``; ``raw`` is the machine minus ``config.env``.

    ``assignments`` are the app's addresses (``GET /apps/{app}/ip_assignments``): ports
    get a URL, and ``public_ip`` a value, only when an address serves them.
    """
    rows = list(assignments)
    config = as_map(machine.get("config"))
    spec = as_map(config.get("guest"))
    kind = as_str(spec.get("gpu_kind"))
    gpu_type = (GPU_IDS.from_id(kind)[0] or kind) if kind else None
    state = str(machine.get("state") or "")
    return Compute(
        id=compute_id(app, str(machine.get("id") or "")),
        provider=PROVIDER,
        status=MACHINE_STATUS.get(state, "unknown"),
        ports=ports_from_wire(app, config, rows),
        public_ip=addresses.public_ip(rows),
        gpu_type=gpu_type,
        gpu_count=_int(spec.get("gpus"), 1) if kind else 0,
        cost_per_hour=price_of(spec) if spec else 0.0,
        region=as_str(machine.get("region")),
        image=as_str(config.get("image")),
        name=as_str(machine.get("name")),
        created_at=as_datetime(machine.get("created_at")),
        labels=labels_of(config),
        raw=strip_secrets(dict(machine)),
    )


def machines_from_wire(body: Any) -> list[Mapping[str, Any]]:
    """The machines of a list answer (a JSON array of ``Machine``)."""
    return [m for m in as_list(body) if isinstance(m, Mapping)]


def app_names(body: Any) -> list[str]:
    """App names from ``ListAppsResponse``."""
    apps = map(as_map, as_list(as_map(body).get("apps")))
    return [str(a["name"]) for a in apps if as_str(a.get("name"))]


def is_our_create(machine: Mapping[str, Any], *, name: str, marker: str) -> bool:
    """Whether ``machine`` is the one a create (name + metadata marker) asked for."""
    if machine.get("name") != name or machine.get("state") in ("destroying", "destroyed"):
        return False
    metadata = as_map(as_map(machine.get("config")).get("metadata"))
    return bool(metadata.get(MARKER_KEY) == marker)


def error_kind(body: Any) -> str | None:
    """The ``ErrorResponse.status`` code (``insufficient_capacity``...), if any."""
    return as_str(as_map(body).get("status"))


def placements_body(row: prices.GpuPrice, org: str) -> dict[str, Any]:
    """``main.getPlacementsRequest`` asking where one machine with ``row``'s GPU may go.

    ``count`` is left at its default, 0, which per the spec "returns the org-specific
    limit for each region" (specs/fly/machines-openapi3.json ``main.getPlacementsRequest``;
    the same words in superfly/fly-go ``flaps/flaps_platform.go``): the answer lists the
    regions this org may place the GPU in, each with the org's limit there.
    """
    return {"org_slug": org, "compute": sizes.gpu_guest(row.kind)}


def placement_limits(answer: Any) -> dict[str, int]:
    """``{region: limit}`` from a ``main.getPlacementsResponse`` to a ``count=0`` question.

    Each ``placement.RegionPlacement.count`` is then the org's limit in that region, not
    how many machines Fly has free: it is never read as stock. Keys are read
    case-insensitively, as fly-go decodes ``RegionPlacement`` (untagged Go fields).
    """
    out: dict[str, int] = {}
    for place in map(as_map, as_list(_ci(as_map(answer), "regions"))):
        region, limit = as_str(_ci(place, "region")), _ci(place, "count")
        if region:
            out[region] = _int(limit, 0)
    return out


def _ci(mapping: Mapping[str, Any], key: str) -> Any:
    """``mapping[key]``, else the first key equal to it ignoring case (Go's decoding)."""
    if key in mapping:
        return mapping[key]
    return next((v for k, v in mapping.items() if str(k).lower() == key), None)


def gpu_types(
    table: Iterable[prices.GpuPrice] = prices.GPU_PRICES, placements: Iterable[Any] | None = None
) -> list[GpuType]:
    """The static GPU price table as ``GpuType``s; ``raw`` says where each figure is from.

    With ``placements`` (one ``main.getPlacementsResponse`` per row, in order), ``regions``
    are the live ones: where this org may place the GPU now (a limit above 0). Fly's
    answer holds org limits, not free capacity, so ``stock`` stays ``None`` (unknown)
    wherever a region allows the GPU, and is ``"none"`` only when no region does.
    The limits are kept in ``raw["placement_limits"]``.
    """
    rows = list(table)
    live = list(placements) if placements is not None else [None] * len(rows)
    out = []
    for row, answer in zip(rows, live, strict=True):
        raw: dict[str, Any] = {"static": True, "source": row.source, "as_of": row.as_of,
                               "gpu_kind": row.kind, "note": prices.GPU_SERVICE_NOTE}
        regions, stock = row.regions, None
        if answer is not None:
            limits = placement_limits(answer)
            regions = tuple(sorted(r for r, n in limits.items() if n > 0))
            stock = None if regions else "none"
            raw["placement_limits"] = limits
            raw["placements"] = strip_secrets(dict(as_map(answer)))
        out.append(GpuType(
            provider=PROVIDER,
            id=row.kind,
            canonical=row.canonical,
            display_name=row.display,
            memory_gb=float(row.memory_gb),
            gpu_count=1,
            price_per_hour=row.price_per_hour,
            stock=stock,
            regions=regions,
            raw=raw,
        ))
    return out


def error_message(body: Any) -> str | None:
    """The message of a Machines API error body, the spec's ``ErrorResponse``
    (``{"error": "...", "status": "..."}``)."""
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, str) and err else None
