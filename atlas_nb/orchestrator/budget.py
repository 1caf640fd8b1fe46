"""The budget guard: refuse a spawn that would cross ``max_hourly_spend`` or
``max_total_spend``, before the provider is called.

* **Hourly**: the $/h of every tracked compute (plus spawns in flight) plus the new
  one's estimated price must stay within ``max_hourly_spend``.
* **Total**: what this orchestrator's computes have accrued (live and terminated)
  plus the new one's price over its horizon (``max_lifetime_ms`` when set, else
  one hour) must stay within ``max_total_spend``. Once the accrued spend reaches
  it, the orchestrator also terminates its computes (reason ``budget``).
* **The estimate** is ``cost_per_hour=`` when the caller passes one, else the
  provider's catalog price for the GPU (spot price for ``spot=True``; the highest
  matching price when several clouds offer it; capped by ``max_price_per_hour``).
* **Unknown price** (a CPU machine, a GPU missing from the catalog, a catalog that
  cannot be fetched): with a ``max_hourly_spend`` the spawn is refused (pass
  ``cost_per_hour=``); with only a total cap it is allowed and accrues at the
  price the provider reports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import AtlasError
from ..gpus import GPUS
from ..models import ComputeRequest, GpuType

__all__ = ["Budget", "BudgetExceeded", "CatalogPrices", "CostSummary", "estimate_price"]

_CATALOG_TTL_S = 600.0


class BudgetExceeded(AtlasError):
    """A spawn was refused because it would cross a configured spend limit."""

    kind: ClassVar[str] = "budget"


@dataclass(frozen=True)
class Budget:
    """The two optional caps, in USD (``None``: no cap)."""

    max_hourly_spend: float | None = None
    max_total_spend: float | None = None

    @property
    def active(self) -> bool:
        """Whether any cap is set (no estimate is needed otherwise)."""
        return self.max_hourly_spend is not None or self.max_total_spend is not None

    def check(self, *, price: float | None, what: str, hourly_rate: float, spent: float,
              horizon_h: float) -> None:
        """Raise ``BudgetExceeded`` if spawning ``what`` at ``price`` $/h crosses a cap."""
        hourly, total = self.max_hourly_spend, self.max_total_spend
        if hourly is not None:
            if price is None:
                raise BudgetExceeded(
                    f"cannot estimate the price of {what}, so max_hourly_spend={hourly:g} "
                    "cannot be enforced; pass cost_per_hour=<USD/h> to spawn",
                    hint="or remove orchestrator.max_hourly_spend from the config file",
                )
            if hourly_rate + price > hourly + 1e-9:
                raise BudgetExceeded(
                    f"{what} (~${price:.2f}/h) would raise the spend rate to "
                    f"${hourly_rate + price:.2f}/h, above max_hourly_spend={hourly:g}; "
                    f"stop a tracked compute (now ${hourly_rate:.2f}/h) or raise the cap",
                )
        if total is not None:
            if spent >= total - 1e-9:
                raise BudgetExceeded(
                    f"${spent:.2f} already spent reaches max_total_spend={total:g}; "
                    f"{what} was not spawned. Raise the cap to continue",
                )
            if price is not None and spent + price * horizon_h > total + 1e-9:
                raise BudgetExceeded(
                    f"{what} (~${price:.2f}/h for {horizon_h:g} h) would bring the spend to "
                    f"${spent + price * horizon_h:.2f}, above max_total_spend={total:g}; "
                    "pass a shorter max_lifetime_ms or raise the cap",
                )


@dataclass(frozen=True)
class CostSummary:
    """Spend of one orchestrator, for dashboards. USD and USD/h."""

    rate_per_hour: float
    accrued_live: float
    spent_total: float
    max_hourly_spend: float | None
    max_total_spend: float | None
    per_compute: dict[str, float]


def _matches(entry: GpuType, request: ComputeRequest) -> bool:
    gpu = request.gpu
    if gpu is None or entry.canonical is None:
        return False
    spec = GPUS.get(entry.canonical)
    if entry.canonical != gpu and (spec is None or spec.family != gpu):
        return False
    return request.cloud_type == "any" or entry.cloud_type in ("any", request.cloud_type)


def estimate_price(request: ComputeRequest, catalog: Sequence[GpuType],
                   cost_per_hour: float | None = None) -> float | None:
    """USD/h for ``request`` (see the module docstring); ``None`` when unknown."""
    if cost_per_hour is not None:
        return float(cost_per_hour)
    prices: list[float] = []
    for entry in catalog:
        if not _matches(entry, request):
            continue
        unit = entry.spot_price_per_hour if request.spot else None
        unit = unit if unit is not None else entry.price_per_hour
        if unit is None:
            continue
        if entry.gpu_count == request.gpu_count:
            prices.append(unit)
        elif entry.gpu_count == 1:
            prices.append(unit * request.gpu_count)
    estimate = max(prices) if prices else None
    cap = request.max_price_per_hour
    if cap is not None:
        return min(estimate, cap) if estimate is not None else cap
    return estimate


class CatalogPrices:
    """Provider catalogs, fetched only when a cap needs an estimate, cached ten minutes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, list[GpuType]]] = {}

    def catalog(self, provider: Any) -> list[GpuType]:
        """The provider's catalog, or ``[]`` when it has none or it cannot be fetched."""
        key = str(getattr(provider, "name", provider))
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < _CATALOG_TTL_S:
                return hit[1]
        fetch = getattr(provider, "list_gpu_types", None)
        try:
            entries = list(fetch()) if fetch is not None else []
        except AtlasError:
            return []
        with self._lock:
            self._cache[key] = (now, entries)
        return entries
