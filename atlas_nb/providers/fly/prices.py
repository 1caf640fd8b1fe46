"""Fly.io's published prices, as a static table: the Machines API has no price endpoint.

Every figure here is copied from a dated public source and marked ``static``; Fly
changes prices (per-region pricing since November 2024: other regions cost more
than the ``iad`` baseline below), so treat them as estimates and check
https://fly.io/docs/about/pricing/ before relying on one.

**Fly GPUs may be gone.** Fly announced that GPU Machines are deprecated and
unavailable after 1 August (https://fly.io/docs/kubernetes/using-gpus/; reported
as 2026-07-31). The table still lists them so old machines price correctly and a
spawn fails at the API, with Fly's own message, rather than here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "CPU_PRESETS",
    "GPU_PRICES",
    "GPU_SERVICE_NOTE",
    "HOURS_PER_PERIOD",
    "RAM_PER_GB_PERIOD",
    "GpuPrice",
    "cpu_price_per_hour",
    "gpu_price",
    "machine_price_per_hour",
]

GPU_SERVICE_NOTE = (
    "Fly announced GPU Machines are deprecated and unavailable after 1 August "
    "(fly.io/docs/kubernetes/using-gpus; reported as 2026-07-31): they may no longer launch"
)

_PRICING_PAGE = "superfly/docs@0060a900:about/pricing.html.markerb (fly.io/docs/about/pricing)"
_L40S_CUT = "fly.io/blog 'We're Cutting L40S Prices In Half' (2024-08-15)"
_GPU_REGIONS = "superfly/docs@245f646b:gpus/getting-started-gpus.html.md"


@dataclass(frozen=True)
class GpuPrice:
    """One GPU kind Fly rents: its ``gpu_kind``, canonical name, price per GPU-hour."""

    kind: str
    canonical: str
    display: str
    memory_gb: int
    price_per_hour: float
    regions: tuple[str, ...]
    source: str
    as_of: str


GPU_PRICES: tuple[GpuPrice, ...] = (
    # The L40S post says its new price is "the same as the A10"; the pricing page of the
    # same period lists the A10 at $1.50/h. Both figures are kept as published.
    GpuPrice("a10", "a10", "NVIDIA A10 24GB", 24, 1.50, ("ord",), _PRICING_PAGE, "2024-07"),
    GpuPrice("l40s", "l40s", "NVIDIA L40S 48GB", 48, 1.25, ("ord",), _L40S_CUT, "2024-08-15"),
    GpuPrice("a100-pcie-40gb", "a100_40g", "NVIDIA A100 40G PCIe", 40, 2.50, ("ord",),
             _PRICING_PAGE, "2024-07"),
    GpuPrice("a100-sxm4-80gb", "a100_80g", "NVIDIA A100 80G SXM", 80, 3.50,
             ("iad", "sjc", "syd"), _PRICING_PAGE, "2024-07"),
)
"""Per-GPU on-demand prices (USD/h). Regions: Fly's GPU docs (``_GPU_REGIONS``)."""

HOURS_PER_PERIOD = 720.0
"""Fly quotes Machine prices per 30 days."""

CPU_PRESETS: dict[tuple[str, int], tuple[int, float]] = {
    ("shared", 1): (256, 1.94),
    ("shared", 2): (512, 3.89),
    ("shared", 4): (1024, 7.78),
    ("shared", 8): (2048, 15.55),
    ("performance", 1): (2048, 31.00),
    ("performance", 2): (4096, 62.00),
    ("performance", 4): (8192, 124.00),
    ("performance", 8): (16384, 248.00),
    ("performance", 16): (32768, 496.00),
}
"""``(cpu_kind, cpus) -> (included memory MB, USD per 30 days)``: Fly's named presets
(``shared-cpu-Nx``, ``performance-Nx``) at the ``iad`` baseline, per the pricing page
(``_PRICING_PAGE``) and Fly's VM-size announcement (fly.io/blog/new-vms-more-ram-extra-cpu-
and-a-dollar-menu), as of 2024."""

RAM_PER_GB_PERIOD = 5.00
"""Memory beyond a preset's: "about $5 per 30 days per GB of additional RAM"."""


def gpu_price(kind: str) -> GpuPrice | None:
    """The table row for a Fly ``gpu_kind``, or ``None``."""
    return next((g for g in GPU_PRICES if g.kind == kind), None)


def cpu_price_per_hour(cpu_kind: str, cpus: int, memory_mb: int) -> float | None:
    """A CPU/RAM configuration's price (USD/h), or ``None`` for one Fly does not sell."""
    preset = CPU_PRESETS.get((cpu_kind, cpus))
    if preset is None:
        return None
    included_mb, per_period = preset
    extra_gb = max(0, memory_mb - included_mb) / 1024
    return (per_period + extra_gb * RAM_PER_GB_PERIOD) / HOURS_PER_PERIOD


def machine_price_per_hour(
    cpu_kind: str, cpus: int, memory_mb: int, gpu_kind: str | None = None, gpus: int = 0
) -> float:
    """What a running Machine costs (USD/h): its CPU/RAM preset plus its GPUs; 0.0 if unknown.

    "Pricing for a GPU-enabled Fly Machine is the price of a standard Fly Machine plus
    the price of the attached GPU" (the pricing page).
    """
    total = cpu_price_per_hour(cpu_kind, cpus, memory_mb) or 0.0
    if gpu_kind:
        row = gpu_price(gpu_kind)
        total += row.price_per_hour * max(gpus, 1) if row else 0.0
    return math.floor(total * 1e6 + 0.5) / 1e6
