"""Where a Lambda launch goes: the instance type and the region, from the live catalog.

Pure functions over ``GET /instance-types``. An instance type is
``gpu_{count}x_{model}`` (``gpu_8x_h100_sxm5``) or ``cpu_*``; the catalog says
which regions have capacity for each type right now.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import ProviderError, Unsupported, ValidationError
from ...models import ComputeRequest
from .wire import GPU_IDS, PROVIDER, dollars, regions_of


@dataclass(frozen=True)
class Offer:
    """One instance type of the live catalog."""

    name: str
    gpus: int
    vcpus: int
    memory_gib: int
    storage_gib: int
    price: float | None
    regions: tuple[str, ...]

    def describe(self) -> str:
        """``gpu_1x_a10 (30 vCPUs, 200 GiB RAM, 1400 GiB disk, $1.29/h)``."""
        price = f"${self.price:.2f}/h" if self.price is not None else "no price"
        return (f"{self.name} ({self.vcpus} vCPUs, {self.memory_gib} GiB RAM, "
                f"{self.storage_gib} GiB disk, {price})")


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def offers_from_wire(data: Any) -> dict[str, Offer]:
    """``data`` of ``GET /instance-types`` as offers by type name."""
    out: dict[str, Offer] = {}
    for key, item in (data.items() if isinstance(data, Mapping) else ()):
        if not isinstance(item, Mapping):
            continue
        itype = item.get("instance_type")
        itype = itype if isinstance(itype, Mapping) else {}
        specs = itype.get("specs")
        specs = specs if isinstance(specs, Mapping) else {}
        name = str(itype.get("name") or key)
        out[name] = Offer(
            name=name,
            gpus=_int(specs.get("gpus")),
            vcpus=_int(specs.get("vcpus")),
            memory_gib=_int(specs.get("memory_gib")),
            storage_gib=_int(specs.get("storage_gib")),
            price=dollars(itype.get("price_cents_per_hour")),
            regions=regions_of(item),
        )
    return out


def _counts(offers: Mapping[str, Offer], suffixes: Sequence[str]) -> dict[int, list[str]]:
    """GPU count -> the catalog's types of that count for any of ``suffixes``."""
    counts: dict[int, list[str]] = {}
    for name in sorted(offers):
        decoded = GPU_IDS.decode(name)
        if decoded is not None and decoded[0] in suffixes:
            counts.setdefault(decoded[1], []).append(name)
    return dict(sorted(counts.items()))


def matching_types(offers: Mapping[str, Offer], request: ComputeRequest) -> list[Offer]:
    """The catalog's types for the request's GPU and count (preferred form factor first),
    or its ``cpu_*`` types (cheapest first) for ``gpu=None``.

    Raises ``Unsupported`` naming the GPU counts Lambda does offer.
    """
    if request.gpu is None:
        cpus = sorted((o for o in offers.values() if o.name.startswith("cpu_")),
                      key=lambda o: (o.price is None, o.price or 0.0, o.name))
        if not cpus:
            raise Unsupported("Lambda's catalog has no CPU instance type right now; pass gpu=...",
                              provider=PROVIDER)
        return cpus
    suffixes = GPU_IDS.ids(request.gpu)
    if not suffixes:
        GPU_IDS.provider_id(request.gpu)  # raises Unsupported naming what Lambda offers
    count = request.gpu_count
    found = [offers[n] for n in (GPU_IDS.encode(s, count) for s in suffixes) if n in offers]
    if found:
        return found
    counts = _counts(offers, suffixes)
    if not counts:
        looked = ", ".join(f"gpu_Nx_{s}" for s in suffixes)
        raise Unsupported(f"Lambda's catalog has no {request.gpu} instance type right now "
                          f"(looked for {looked})", provider=PROVIDER)
    listed = "; ".join(f"{n} ({', '.join(names)})" for n, names in counts.items())
    options = ", ".join(str(n) for n in counts)
    raise Unsupported(
        f"Lambda has no {count}x {request.gpu} instance type; it offers {request.gpu} in "
        f"counts {listed}",
        provider=PROVIDER, hint=f"pass gpu_count= one of {options}",
    )


def fitting(types: Sequence[Offer], request: ComputeRequest) -> list[Offer]:
    """``types`` that meet the request's minimums (cpus, memory_gb, container_disk_gb) and
    its ``max_price_per_hour``. Lambda sizes machines by type: these pick among types.

    Raises ``ValidationError`` listing what the types do have.
    """
    wants: list[tuple[str, float | None, Callable[[Offer], int]]] = [
        ("cpus", request.cpus, lambda o: o.vcpus),
        ("memory_gb", request.memory_gb, lambda o: o.memory_gib),
        ("container_disk_gb", request.container_disk_gb, lambda o: o.storage_gib),
    ]
    keep = [o for o in types
            if all(want is None or have(o) >= want for _, want, have in wants)]
    cap = request.max_price_per_hour
    if cap is not None:
        keep = [o for o in keep if o.price is not None and o.price <= cap]
    if keep:
        return keep
    asked = [f"{field}>={want:g}" for field, want, _ in wants if want is not None]
    if cap is not None:
        asked.append(f"max_price_per_hour={cap:g}")
    have = "; ".join(o.describe() for o in types)
    raise ValidationError(
        f"no Lambda instance type fits {', '.join(asked)}; the candidates are: {have}; "
        "relax those fields"
    )


def choose(types: Sequence[Offer], hints: Sequence[str]) -> tuple[Offer, str] | None:
    """The first (type, region) with capacity: hinted regions first (in hint order), then
    the preferred type's first region. ``None`` when no candidate has capacity anywhere."""
    for region in hints:
        for offer in types:
            if region in offer.regions:
                return offer, region
    for offer in types:
        if offer.regions:
            return offer, offer.regions[0]
    return None


def place(
    offers: Mapping[str, Offer],
    request: ComputeRequest,
    *,
    instance_type: str | None = None,
    region: str | None = None,
) -> tuple[Offer, str]:
    """The (type, region) to launch into. ``instance_type`` / ``region`` (from
    ``provider_opts``) pin a choice; ``request.region_hints`` are preferences.

    Raises ``Unsupported`` / ``ValidationError`` for a request no type fits, and
    ``ProviderError`` when no fitting type has capacity in any region right now.
    """
    if instance_type is not None:
        if instance_type not in offers:
            raise ValidationError(
                f"provider_opts['instance_type_name']={instance_type!r} is not in Lambda's "
                f"catalog; known: {', '.join(sorted(offers))}"
            )
        types = [offers[instance_type]]
    else:
        types = fitting(matching_types(offers, request), request)
    if region is not None:  # pinned: the API decides, and says which regions have capacity
        return next((o for o in types if region in o.regions), types[0]), region
    chosen = choose(types, request.region_hints)
    if chosen is None:
        names = " or ".join(o.name for o in types)
        raise ProviderError(
            f"Lambda has no capacity for {names} in any region right now",
            provider=PROVIDER,
            hint="try again later, or another GPU or gpu_count (list_gpu_types(provider="
            "'lambda_labs') shows the regions with capacity per type)",
        )
    return chosen
