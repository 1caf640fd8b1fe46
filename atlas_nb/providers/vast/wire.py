"""Vast.ai wire translation: pure functions and the status map, no I/O.

Shapes follow Vast's OpenAPI document (``searchOffers``, ``createInstance``,
``showInstances`` v1, ``showInstance``, ``manageInstance``, ``destroyInstance``)
and what vast-cli sends: the search body's ``{"field": {"op": value}}`` filters,
the create body with ``env`` as a Docker-flag string (``-e KEY=value -p 8000:8000``),
instance rows with Docker's port map and ``extra_env`` as ``[name, value]`` pairs.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ...errors import AtlasError, ValidationError
from ...gpus import GPUS, GpuIds
from ...models import Compute, ComputeRequest, GpuType, PortMapping
from .. import base
from ..base import as_map, deep_merge, strip_secrets, to_float

PROVIDER = "vast"

# Vast's ``gpu_name`` values in offers and instances.
GPU_IDS = GpuIds(PROVIDER, {
    "h200": ("H200",),
    "h100": ("H100 SXM", "H100 PCIE", "H100 NVL"),
    "h100_sxm": ("H100 SXM",),
    "h100_pcie": ("H100 PCIE",),
    "h100_nvl": ("H100 NVL",),
    "a100_80g": ("A100 SXM4", "A100 PCIE"),
    "l40s": ("L40S",),
    "l40": ("L40",),
    "l4": ("L4",),
    "a40": ("A40",),
    "a10": ("A10",),
    "a6000": ("RTX A6000",),
    "a5000": ("RTX A5000",),
    "a4000": ("RTX A4000",),
    "rtx_6000_ada": ("RTX 6000Ada",),
    "rtx_5090": ("RTX 5090",),
    "rtx_4090": ("RTX 4090",),
    "rtx_3090": ("RTX 3090",),
    "b200": ("B200",),
    "v100": ("Tesla V100",),
})
REQUEST_ID_ENV = "ATLAS_REQUEST_ID"
"""Env var carrying a per-create marker, so a create whose answer was lost can be found."""
PORTS_ENV = "ATLAS_PORTS"
"""Env var recording the requested ports with protocols (Vast itself knows only tcp/udp)."""

# Vast's docs list every ``actual_status`` (the table on
# https://docs.vast.ai/cli/reference/show-instances.md and
# https://docs.vast.ai/sdk/python/reference/show-instance.md): null, loading, running,
# stopped, frozen, exited, rebooting, unknown, offline. SkyPilot's mapping is the second
# opinion (skypilot-org/skypilot sky/provision/vast/instance.py query_instances): EXITED,
# STOPPED, FROZEN -> STOPPED; NULL, CREATED, RESTARTING, REBOOTING, LOADING -> INIT. Where
# they disagree: SkyPilot reads UNKNOWN and OFFLINE as INIT (still coming up); the docs
# say no heartbeat / host disconnected, and the spec's own "poll trap" says such an
# instance never reaches running, so here they read ``unknown``.
STATUS: dict[str | None, str] = {
    None: "provisioning",  # "Instance is being provisioned"
    "scheduling": "provisioning",  # a start waiting for the machine (docs: start instance)
    "created": "provisioning",  # SkyPilot's CREATED; see status_from_wire for stopped
    "loading": "provisioning",  # "Docker image is downloading or container is starting"
    "restarting": "provisioning",  # SkyPilot's RESTARTING
    "rebooting": "provisioning",  # "Container is restarting (transient)"
    "running": "running",  # "GPU charges apply"
    "stopped": "stopped",  # "Container is halted. Disk charges continue; no GPU charges"
    "frozen": "stopped",  # "paused with memory preserved. GPU charges apply": see cost
    "exited": "stopped",  # "Container process exited unexpectedly" (also: outbid)
    "unknown": "unknown",  # "No recent heartbeat from the host"
    "offline": "unknown",  # "Host machine disconnected from Vast servers"
}
"""``actual_status`` -> ``Compute.status``, every state Vast documents; others: ``unknown``.
A ``created`` instance whose ``intended_status`` is ``stopped`` reads ``stopped``."""

STORAGE_ONLY = frozenset({"stopped"})
"""``actual_status`` values that pay storage only: the docs' table says "no GPU charges"
for ``stopped`` alone (``frozen`` explicitly bills the GPU). Every other state costs the
whole ``dph_total`` unless the machine released the GPUs (``cur_state`` ``stopped``):
money is never guessed low, so a budget guard does not undercount."""

MIN_RELIABILITY = 0.95
OFFERS_MULT = 1000
"""GB -> the API's memory unit in search filters, as vast-cli's ``offers_mult`` does."""
DEFAULT_DISK_GB = 16
SEARCH_LIMIT = 16
CATALOG_LIMIT = 10_000
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
_SECRET_FIELDS = ("jupyter_token", "onstart", "image_login")
_BASE_FILTERS: dict[str, dict[str, Any]] = {
    "verified": {"eq": True}, "external": {"eq": False},
    "rentable": {"eq": True}, "rented": {"eq": False},
}


# -- requests ---------------------------------------------------------------------------
def disk_gb(request: ComputeRequest) -> int:
    """Vast instances have one disk: ``container_disk_gb`` or ``volume_gb``, not both."""
    if request.container_disk_gb and request.volume_gb:
        raise ValidationError("Vast instances have a single disk; pass container_disk_gb or "
                              "volume_gb, not both")
    return request.container_disk_gb or request.volume_gb or DEFAULT_DISK_GB


def countries(hints: Iterable[str]) -> list[str]:
    """Region hints as the country codes Vast's ``geolocation`` filter takes."""
    out = []
    for hint in hints:
        if not _COUNTRY.match(hint.strip()):
            raise ValidationError(f"region hint {hint!r}: Vast filters by two-letter country "
                                  "codes; write region_hints=['US', 'DE']")
        out.append(hint.strip().upper())
    return out


def search_query(request: ComputeRequest, *, spot: bool) -> dict[str, Any]:
    """The ``POST /api/v0/bundles/`` body for ``request``: cheapest first, reliable hosts.

    ``provider_opts["search"]`` is merged last (e.g. ``{"reliability": {"gte": 0.99}}``).
    """
    if request.gpu is None:
        raise ValidationError("Vast rents GPU machines only; pass gpu=... (e.g. 'rtx_4090')")
    GPU_IDS.provider_id(request.gpu)  # Unsupported, naming what Vast offers, if none
    ids = GPU_IDS.ids(request.gpu)
    query: dict[str, Any] = {
        **_BASE_FILTERS,
        "gpu_name": {"eq": ids[0]} if len(ids) == 1 else {"in": list(ids)},
        "num_gpus": {"eq": request.gpu_count},
        "reliability": {"gte": MIN_RELIABILITY},
    }
    if request.max_price_per_hour is not None:
        query["dph_total"] = {"lte": request.max_price_per_hour}
    if request.region_hints:
        query["geolocation"] = {"in": countries(request.region_hints)}
    if request.cloud_type != "any":
        query["datacenter"] = {"eq": request.cloud_type == "secure"}
    if request.cpus is not None:
        query["cpu_cores_effective"] = {"gte": request.cpus}
    if request.memory_gb is not None:
        # vast-cli turns GB into the API's MB with x1000 (vastai 1.9.1 vastai/api/query.py
        # offers_mult: cpu_ram, gpu_ram, gpu_total_ram), so "64 GB" finds what it finds.
        query["cpu_ram"] = {"gte": int(request.memory_gb * OFFERS_MULT)}
    disk = disk_gb(request)
    query["disk_space"] = {"gte": disk}
    query.update(order=[["dph_total", "asc"]], type="bid" if spot else "on-demand",
                 limit=SEARCH_LIMIT, allocated_storage=disk)
    extra = request.provider_opts.get("search")
    return deep_merge(query, extra) if isinstance(extra, Mapping) else query


def catalog_query() -> dict[str, Any]:
    """The search ``list_gpu_types`` sends: every rentable offer, cheapest first."""
    return {**_BASE_FILTERS, "order": [["dph_total", "asc"]], "type": "on-demand",
            "limit": CATALOG_LIMIT}


def rank_offers(offers: Iterable[Any], *, spot: bool) -> list[Mapping[str, Any]]:
    """Offers to try, best first: reliable ones (>= ``MIN_RELIABILITY``), cheapest first,
    the more reliable first at equal price."""
    price = "min_bid" if spot else "dph_total"
    usable = [o for o in offers if isinstance(o, Mapping) and isinstance(o.get("id"), int)
              and to_float(o.get("reliability", o.get("reliability2")), 0.0) >= MIN_RELIABILITY]
    return sorted(usable, key=lambda o: (to_float(o.get(price), math.inf),
                                         -to_float(o.get("reliability"), 0.0)))


def _flag_value(name: str, value: str) -> str:
    if '"' in value or "\n" in value or "\\" in value:
        raise ValidationError(f"env[{name!r}]: Vast's env flag string cannot carry quotes, "
                              "backslashes or newlines; pass the value another way")
    return f'"{value}"' if any(c.isspace() for c in value) or "'" in value else value


def env_flags(env: Mapping[str, str], request: ComputeRequest) -> str:
    """``env`` and the request's ports as Vast's Docker-flag string.

    ``-e NAME=value`` per variable, ``-p 8000:8000`` per TCP/HTTP port (``/udp`` for UDP).
    """
    parts = []
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValidationError(f"env name {name!r} is not a valid variable name for Vast")
        parts.append(f"-e {name}={_flag_value(name, value)}")
    for p in request.ports:
        suffix = "/udp" if p.protocol == "udp" else ""
        parts.append(f"-p {p.internal}:{p.internal}{suffix}")
    return " ".join(parts)


def create_body(
    request: ComputeRequest, *, name: str, marker: str, bid: float | None
) -> dict[str, Any]:
    """The ``PUT /api/v0/asks/{id}/`` body; ``provider_opts`` (minus ``search``) merged last.

    ``runtype: "args"`` runs the image's own entrypoint (the server it ships), not
    Vast's SSH wrapper.
    """
    if request.network_volume_id:
        raise ValidationError("Vast has no network volumes; drop network_volume_id")
    env = {**request.env, REQUEST_ID_ENV: marker}
    if request.ports:
        env[PORTS_ENV] = ",".join(p.spec for p in request.ports)
    # Vast has one free-text ``label`` per instance (``label: Custom name for the
    # instance`` in the create body, at most 1024 characters via manageInstance;
    # specs/vast/vast-openapi.yaml) and no key/value labels: the label is the name, and
    # the orchestrator's ledger id travels inside it. ``request.labels`` are not sent.
    body: dict[str, Any] = {
        # vast-cli and the SDK always send client_id "me" (vastai 1.9.1
        # vastai/api/instances.py build_create_instance_payload).
        "client_id": "me",
        "label": name,
        "disk": disk_gb(request),
        "runtype": "args",
        "env": env_flags(env, request),
    }
    if request.image:
        body["image"] = request.image
    if request.template_id:
        body["template_hash_id"] = request.template_id
    if bid is not None:
        body["price"] = round(bid, 4)
    opts = {k: v for k, v in request.provider_opts.items() if k != "search"}
    return deep_merge(body, opts)


# -- responses --------------------------------------------------------------------------
def _str(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def env_from_wire(row: Mapping[str, Any]) -> dict[str, str]:
    """An instance's env from its ``extra_env`` pairs (port flags left out)."""
    pairs = row.get("extra_env")
    out: dict[str, str] = {}
    if isinstance(pairs, Mapping):  # vast-cli's reshaped form
        pairs = list(pairs.items())
    for pair in pairs if isinstance(pairs, list) else []:
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str) \
                and not pair[0].startswith("-"):
            out[pair[0]] = str(pair[1])
    return out


def _actual(row: Mapping[str, Any]) -> str | None:
    actual = row.get("actual_status")
    return actual.lower() if isinstance(actual, str) else None


def gpu_billed(row: Mapping[str, Any]) -> bool:
    """Whether the instance's GPUs are billed now (see ``STORAGE_ONLY``)."""
    actual = _actual(row)
    if actual in STORAGE_ONLY:
        return False
    if actual == "created" and row.get("intended_status") == "stopped":
        return False  # made stopped (target_state "stopped"): nothing runs
    # ``cur_state`` is the hardware allocation (docs: running, stopped or unloaded):
    # an outbid interruptible (``exited``) has lost its GPUs to the higher bid.
    return actual == "frozen" or row.get("cur_state") not in ("stopped", "unloaded")


def cost_from_wire(row: Mapping[str, Any]) -> float:
    """USD/hour the instance costs now.

    ``dph_total`` (GPU + storage) while the GPU bills, storage alone while it does not:
    vast-cli's ``show instances`` prints ``dph_total`` as ``$/hr`` (vastai 1.9.1
    vastai/cli/display.py instance_fields), and Vast's docs say a stopped instance pays
    disk only (docs.vast.ai/documentation/instances/pricing: "Storage charges continue
    even when instances are stopped"). Not ``instance.totalHour``: in the spec's own
    running-instance example (components/schemas/Instance) that is the disk-only
    0.002 against ``dph_total`` 1.002.
    """
    price = as_map(row.get("search"))
    if gpu_billed(row):
        total = to_float(row.get("dph_total"), -1.0)
        return total if total >= 0 else to_float(price.get("totalHour"))
    disk = to_float(row.get("storage_total_cost"), -1.0)
    return disk if disk >= 0 else to_float(price.get("diskHour"))


def status_from_wire(row: Mapping[str, Any]) -> str:
    """``Compute.status`` of an instance row (see ``STATUS``)."""
    actual = row.get("actual_status")
    if actual is not None and not isinstance(actual, str):
        return "unknown"
    key = _actual(row)
    if key == "created" and row.get("intended_status") == "stopped":
        return "stopped"
    return STATUS.get(key, "unknown")


def _requested_ports(row: Mapping[str, Any]) -> list[tuple[int, str]]:
    spec = env_from_wire(row).get(PORTS_ENV, "")
    out = []
    for item in spec.split(","):
        port, _, proto = item.strip().partition("/")
        if port.isdigit() and proto in {"http", "tcp", "udp"}:
            out.append((int(port), proto))
    return out


def _host_port(mapped: Any) -> int | None:
    for entry in mapped if isinstance(mapped, list) else []:
        port = entry.get("HostPort") if isinstance(entry, Mapping) else None
        if isinstance(port, (str, int)) and str(port).isdigit() and 0 < int(port) < 65536:
            return int(port)
    return None


def ports_from_wire(row: Mapping[str, Any]) -> tuple[PortMapping, ...]:
    """The ports we asked for (``ATLAS_PORTS``), else every mapped port as TCP.

    ``http://ip:port`` for HTTP, ``tcp://`` / ``udp://`` otherwise, once Vast has
    mapped the port (its ``ports`` map is null until the instance runs).
    """
    ports = row.get("ports")
    mapped: Mapping[str, Any] = ports if isinstance(ports, Mapping) else {}
    ip = _str(row.get("public_ipaddr"))
    wanted = _requested_ports(row)
    if not wanted:
        for key in mapped:
            number, _, kind = str(key).partition("/")
            if number.isdigit() and 0 < int(number) < 65536:
                wanted.append((int(number), "udp" if kind == "udp" else "tcp"))
    out = []
    for port, proto in wanted:
        wire_proto = "udp" if proto == "udp" else "tcp"
        external = _host_port(mapped.get(f"{port}/{wire_proto}"))
        url = f"{proto}://{ip}:{external}" if ip and external else None
        out.append(PortMapping.parse({"internal": port, "external": external,
                                      "protocol": proto, "url": url}))
    return tuple(out)


def _created(row: Mapping[str, Any]) -> datetime | None:
    ts = to_float(row.get("start_date"), -1.0)
    return datetime.fromtimestamp(ts, UTC) if ts > 0 else None


def clean_raw(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row without env, tokens or startup scripts (``jupyter_token``, ``onstart``)."""
    raw = strip_secrets(dict(row))
    for key in _SECRET_FIELDS:
        raw.pop(key, None)
    return dict(raw)


def canonical_gpu(gpu_name: str | None, gpu_ram_mb: Any = None) -> str | None:
    """The canonical name for a Vast ``gpu_name``, corrected by its memory: Vast calls both
    A100 sizes "A100 SXM4", so a 40 GB card is ``a100_40g``, not ``a100_80g``."""
    name = GPU_IDS.from_id(gpu_name)[0] if gpu_name else None
    ram_gb = to_float(gpu_ram_mb, -1.0) / 1024
    if name is None or ram_gb <= 0 or _close(GPUS[name].memory_gb, ram_gb):
        return name
    family = GPUS[name].family
    same = [g.name for g in GPUS.values() if g.family == family and _close(g.memory_gb, ram_gb)]
    return same[0] if same else name


def _close(spec_gb: float, ram_gb: float) -> bool:
    return abs(spec_gb - ram_gb) <= 0.25 * spec_gb


def compute_from_wire(row: Mapping[str, Any]) -> Compute:
    """An instance row (v1 list or v0 get) as a ``Compute``."""
    gpu_name = _str(row.get("gpu_name"))
    canonical = canonical_gpu(gpu_name, row.get("gpu_ram"))
    count = row.get("num_gpus")
    return Compute(
        id=str(row.get("id") or ""),
        provider=PROVIDER,
        status=status_from_wire(row),
        public_ip=_str(row.get("public_ipaddr")),
        ports=ports_from_wire(row),
        gpu_type=canonical or gpu_name,
        gpu_count=count if isinstance(count, int) and count > 0 else 0,
        cost_per_hour=cost_from_wire(row),
        region=_str(row.get("geolocation")),
        image=_str(row.get("image_uuid")),
        name=_str(row.get("label")),
        created_at=_created(row),
        raw=clean_raw(row),
    )


def instance_page(body: Any) -> tuple[list[Mapping[str, Any]], str | None]:
    """The rows and ``next_token`` of a ``GET /api/v1/instances/`` answer."""
    data = body if isinstance(body, Mapping) else {}
    rows = data.get("instances")
    token = data.get("next_token")
    return ([r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else [],
            token if isinstance(token, str) and token else None)


def rented_row(offer: Mapping[str, Any], request: ComputeRequest, *, name: str,
               bid: float | None) -> dict[str, Any]:
    """What is known of an instance before Vast lets it be read: an instance row (no
    ``id`` yet) from the offer rented and the request, ``actual_status`` null.

    Its cost is what the search quoted for the offer (``dph_total``), or the bid plus the
    offer's storage for an interruptible one."""
    storage = to_float(offer.get("storage_total_cost"), 0.0)
    cost = bid + storage if bid is not None else to_float(offer.get("dph_total"))
    env = [[PORTS_ENV, ",".join(p.spec for p in request.ports)]] if request.ports else []
    return {"actual_status": None, "intended_status": "running", "label": name,
            "gpu_name": offer.get("gpu_name"), "gpu_ram": offer.get("gpu_ram"),
            "num_gpus": offer.get("num_gpus"), "geolocation": offer.get("geolocation"),
            "image_uuid": request.image, "dph_total": round(cost, 6),
            "storage_total_cost": storage, "extra_env": env,
            "ask_id": offer.get("id"), "machine_id": offer.get("machine_id")}


def is_our_create(row: Mapping[str, Any], *, name: str, marker: str, name_is_ours: bool) -> bool:
    """Whether ``row`` is the instance a create (label + env marker) asked for."""
    if row.get("label") != name:
        return False
    env = env_from_wire(row)
    if REQUEST_ID_ENV in env:
        return env[REQUEST_ID_ENV] == marker
    return name_is_ours  # no env in the answer: a generated label is unique enough


def user_id_from_wire(body: Any) -> str | None:
    """``id`` of a ``GET /api/v0/users/current/`` answer (the key's user), as text.

    The spec's showUser (atlas_nb/sandbox/specs/vast/vast-openapi.yaml): ``id`` integer;
    vast-ai/vast-cli vast.py ``show__user`` reads the same endpoint. The answer also
    carries ``api_key``: only the id is kept."""
    uid = body.get("id") if isinstance(body, Mapping) else None
    if isinstance(uid, bool) or not isinstance(uid, (int, str)) or uid == "":
        return None
    return str(uid)


def offer_vanished(error: AtlasError) -> bool:
    """A create refused because the offer is gone (404/410 ``no_such_ask``)."""
    if error.status not in (404, 410):
        return False
    raw = error.raw if isinstance(error.raw, Mapping) else {}
    text = f"{raw.get('error', '')} {raw.get('msg', '')} {error.message}"
    return "no_such_ask" in text


def in_region(compute: Compute, region: str) -> bool:
    """Vast's region filter: a country code (any case) or the full ``geolocation``."""
    where = compute.region or ""
    code = where.rsplit(",", 1)[-1].strip()
    return region in (where, code) or region.upper() == code


def matches(compute: Compute, *, status: str | None, name: str | None, gpu: str | None,
            region: str | None) -> bool:
    """The ``list_compute`` filters (``base.matches``) with Vast's region rule."""
    return base.matches(compute, status=status, name=name, gpu=gpu, region=region,
                        in_region=in_region)


def gpu_types_from_offers(offers: Iterable[Any]) -> list[GpuType]:
    """One ``GpuType`` per Vast ``gpu_name`` and GPU count on offer.

    ``price_per_hour`` is the cheapest offer's ``dph_total`` (whole machine),
    ``spot_price_per_hour`` the lowest ``min_bid``; ``raw`` keeps the median, the
    number of offers and the cheapest offer's id.
    """
    groups: dict[tuple[str, int, str], list[Mapping[str, Any]]] = {}
    for offer in offers:
        if not isinstance(offer, Mapping):
            continue
        name, count = _str(offer.get("gpu_name")), offer.get("num_gpus")
        if name and isinstance(count, int) and count > 0:
            canonical = canonical_gpu(name, offer.get("gpu_ram")) or ""
            groups.setdefault((name, count, canonical), []).append(offer)
    out = []
    for (name, count, canonical), group in sorted(groups.items()):
        prices = sorted(p for p in (to_float(o.get("dph_total"), -1.0) for o in group) if p >= 0)
        bids = [b for b in (to_float(o.get("min_bid"), -1.0) for o in group) if b > 0]
        if not prices:
            continue
        cheapest = min(group, key=lambda o: to_float(o.get("dph_total"), math.inf))
        ram_mb = to_float(cheapest.get("gpu_ram"), -1.0)
        regions = sorted({c for c in (_country(o.get("geolocation")) for o in group) if c})
        stock = "high" if len(group) >= 8 else "medium" if len(group) >= 3 else "low"
        out.append(GpuType(
            provider=PROVIDER,
            id=name,
            canonical=canonical or None,
            display_name=f"{count}x {name}",
            memory_gb=round(ram_mb / 1024, 1) if ram_mb > 0 else None,
            gpu_count=count,
            price_per_hour=prices[0],
            spot_price_per_hour=min(bids) if bids else None,
            stock=stock,
            regions=tuple(regions),
            raw={"gpu_name": name, "num_gpus": count, "offers": len(group),
                 "median_price_per_hour": statistics.median(prices),
                 "max_price_per_hour": prices[-1],
                 "cheapest_offer_id": cheapest.get("id")},
        ))
    return out


def _country(geolocation: Any) -> str | None:
    text = _str(geolocation)
    code = text.rsplit(",", 1)[-1].strip() if text else ""
    return code.upper() if _COUNTRY.match(code) else None


def error_message(body: Any) -> str | None:
    """The message of a Vast error body: ``msg`` is the human text and ``error`` a code
    (``{"success": false, "error": "invalid_args", "msg": "..."}``, as vast-cli prints)."""
    if not isinstance(body, dict):
        return None
    for key in ("msg", "error"):
        if isinstance(body.get(key), str) and body[key]:
            return str(body[key])
    return None
