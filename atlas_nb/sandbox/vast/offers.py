"""Vast.ai's marketplace: offers generated from the real catalog, search, rent and vanish.

Every row of ``catalog.json`` (SkyPilot's Vast catalog: one GPU type,
count and location with its median price) becomes several offers from different
hosts, with prices spread around that median, their own reliability, bandwidth,
disk and a minimum bid. ``min_bid`` is derived (35-60 % of ``dph_base``) because
the catalog has no spot prices. Everything is drawn from the sandbox seed.

Search follows ``POST /api/v0/bundles/``: each filter is ``{field: {op: value}}``
with ``eq, neq, gt, lt, gte, lte, in, notin``; ``verified``, ``rentable`` and
``rented`` default to the spec's defaults; ``order`` sorts, ``limit`` caps;
``type`` prices offers on demand (``ondemand``/``on-demand``), as bids
(``bid``: ``dph_total`` from ``min_bid``) or reserved; ``allocated_storage``
(GB, default 8) adds the disk's cost to ``dph_total``.

An offer is rentable until an instance rents it (it comes back when that
instance is destroyed) or until it *vanishes*: another renter took it or the
host unlisted it, and renting it then answers ``no_such_ask``.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..cloud import CloudContext

__all__ = ["DATA", "OfferBook", "SearchError", "country_code"]

DATA = Path(__file__).parent / "catalog.json"
OFFERS_PER_ROW = 6
_SPREAD = (0.82, 0.9, 0.97, 1.03, 1.12, 1.28)
"""Price factors around the catalog median, one per host offering the same machine."""
_DEFAULT_STORAGE_GB = 8.0
_HOURS_PER_MONTH = 730.0
_CONTROL_KEYS = frozenset({"limit", "type", "order", "allocated_storage", "disable_bundling"})
_DEFAULT_FILTERS: dict[str, dict[str, Any]] = {
    "verified": {"eq": True}, "rentable": {"eq": True}, "rented": {"eq": False},
}
_OPS = frozenset({"eq", "neq", "gt", "lt", "gte", "lte", "in", "notin"})
_DEFAULT_LIMIT = 64
_TFLOPS: dict[str, float] = {
    "H200": 67.0, "H100 SXM": 67.0, "H100 NVL": 60.0, "B200": 80.0, "A100 SXM4": 19.5,
    "A100 PCIE": 19.5, "L40S": 91.6, "A40": 37.4, "RTX 6000Ada": 91.1, "RTX PRO 6000 S": 110.0,
    "RTX 5090": 104.8, "RTX 4090": 82.6, "RTX 4070S Ti": 44.1, "RTX 4060 Ti": 22.1,
    "RTX 3090": 35.6, "RTX 3080": 29.8, "RTX 3070": 20.3, "RTX 3060 Ti": 16.2, "RTX 3060": 12.7,
    "RTX A6000": 38.7, "RTX A2000": 8.0, "Tesla V100": 15.7,
}
_DATACENTER_GPUS = frozenset({"H200", "H100 SXM", "H100 NVL", "B200", "A100 SXM4", "A100 PCIE",
                              "L40S", "A40", "Tesla V100", "RTX PRO 6000 S"})


class SearchError(Exception):
    """A search body the API refuses (HTTP 400, ``invalid_args``)."""


def country_code(geolocation: Any) -> str | None:
    """The two-letter country code a Vast ``geolocation`` ends with (``"Texas, US"`` -> US)."""
    if not isinstance(geolocation, str) or not geolocation.strip():
        return None
    code = geolocation.rsplit(",", 1)[-1].strip()
    return code.upper() if len(code) == 2 and code.isalpha() else None


def _norm_gpu(value: Any) -> Any:
    # The spec's examples write "RTX_4090"; offers say "RTX 4090" (the CLI swaps '_' for ' ').
    return value.replace("_", " ") if isinstance(value, str) else value


class OfferBook:
    """All offers of one Vast cloud (thread-safe)."""

    def __init__(self, ctx: CloudContext, path: Path = DATA) -> None:
        doc = json.loads(path.read_text(encoding="utf-8"))
        self.source: str = doc["_source"]
        columns: list[str] = doc["columns"]
        self.catalog = [dict(zip(columns, row, strict=True)) for row in doc["rows"]]
        per_row = int(ctx.options.get("offers_per_row", OFFERS_PER_ROW))
        self._rng = ctx.rng("vast-offers")
        self._stock = ctx.capacity  # the sandbox's per-GPU stock overrides
        self._lock = threading.Lock()
        self._offers: dict[int, dict[str, Any]] = {}
        self.vanished: set[int] = set()
        next_id, machine = 9_240_000, 31_000
        for index, row in enumerate(self.catalog):
            for slot in range(per_row):
                next_id += self._rng.randint(3, 97)
                machine += self._rng.randint(1, 40)
                offer = self._make(row, index, slot % len(_SPREAD), next_id, machine)
                self._offers[offer["id"]] = offer

    def _make(self, row: Mapping[str, Any], index: int, slot: int, ask_id: int,
              machine_id: int) -> dict[str, Any]:
        rng = self._rng
        gpu, n = str(row["gpu_name"]), int(row["num_gpus"])
        base = round(float(row["price"]) * _SPREAD[slot] * rng.uniform(0.97, 1.03), 4)
        reliability = round(rng.uniform(0.972, 0.999), 4)
        if slot == 0 and index % 3 == 0:
            # Some of the cheapest hosts are flaky: "cheapest reliable" is not just "cheapest".
            reliability = round(rng.uniform(0.78, 0.88), 4)
        verification = "unverified" if slot == 1 and index % 5 == 0 else "verified"
        datacenter = gpu in _DATACENTER_GPUS and rng.random() < 0.8
        tflops = _TFLOPS.get(gpu, 20.0) * n
        dlperf = round(tflops * rng.uniform(0.85, 1.05), 3)
        ram = int(row["gpu_ram_mb"])
        cores = int(row["cpu_cores"])
        return {
            "id": ask_id,
            "ask_contract_id": ask_id,
            "bundle_id": ask_id * 10 + 7,
            "bundled_results": None,
            "machine_id": machine_id,
            "host_id": 100_000 + machine_id % 9973,
            "hostname": None,
            "num_gpus": n,
            "gpu_name": gpu,
            "gpu_arch": "nvidia",
            "gpu_ram": ram,
            "gpu_total_ram": ram * n,
            "gpu_frac": 1.0,
            "gpu_ids": [machine_id * 10 + i for i in range(n)],
            "gpu_lanes": 16,
            "gpu_mem_bw": round(rng.uniform(600, 3300), 1),
            "gpu_max_power": rng.choice([300, 350, 450, 575, 700]),
            "gpu_max_temp": rng.choice([83, 87, 90]),
            "gpu_display_active": False,
            "bw_nvlink": 0.0 if n == 1 else round(rng.uniform(0, 450), 1),
            "compute_cap": 900 if gpu.startswith(("H1", "H2", "B2")) else 890,
            "total_flops": round(tflops, 2),
            "dlperf": dlperf,
            "cpu_arch": "amd64",
            "cpu_name": rng.choice(["AMD EPYC 7B13 64-Core Processor",
                                    "Intel Xeon Platinum 8480+", "AMD Ryzen 9 7950X"]),
            "cpu_cores": cores * 2,
            "cpu_cores_effective": float(cores),
            "cpu_ghz": round(rng.uniform(2.0, 4.5), 2),
            "cpu_ram": int(row["cpu_ram_mb"]),
            "has_avx": 1,
            "mobo_name": rng.choice(["ROMED8-2T", "H13SSL-N", "PRO WS WRX80E-SAGE"]),
            "pci_gen": rng.choice([4.0, 5.0]),
            "pcie_bw": round(rng.uniform(12, 52), 1),
            "disk_name": rng.choice(["Samsung SSD 990 PRO 2TB", "Micron 7450 3.84TB"]),
            "disk_space": float(rng.choice([120, 250, 500, 1000, 2000])),
            "disk_bw": round(rng.uniform(1500, 6500), 1),
            "storage_cost": round(rng.uniform(0.08, 0.25), 4),
            "inet_down": round(rng.uniform(200, 7000), 1),
            "inet_up": round(rng.uniform(150, 6000), 1),
            "inet_down_cost": round(rng.uniform(0.0, 0.01), 5),
            "inet_up_cost": round(rng.uniform(0.0, 0.01), 5),
            "direct_port_count": rng.choice([20, 50, 100, 500]),
            "static_ip": rng.random() < 0.7,
            "geolocation": str(row["geolocation"]),
            "geolocode": int(rng.uniform(1e7, 9e7)),
            "continent": str(row["continent"]),
            "reliability": reliability,
            "reliability2": reliability,
            "verification": verification,
            "hosting_type": 1 if datacenter else 0,
            "external": False,
            "vms_enabled": False,
            "driver_version": rng.choice(["550.127.05", "560.35.03", "570.124.06"]),
            "driver_vers": 570124006,
            "cuda_max_good": rng.choice([12.4, 12.6, 12.8]),
            "os_version": rng.choice(["22.04", "24.04"]),
            "ubuntu_version": "22.04",
            "credit_discount_max": 0.4,
            "duration": round(rng.uniform(7, 180) * 86400, 1),
            "end_date": None,
            "dph_base": base,
            "min_bid": round(base * rng.uniform(0.35, 0.6), 4),
            "is_bid": False,
            "rentable": True,
            "rented": False,
            "logo": "/static/logos/vastai_small2.png",
            "time_remaining": "",
            "time_remaining_isbid": "",
        }

    # -- reads ----------------------------------------------------------------------------
    def get(self, ask_id: int) -> dict[str, Any] | None:
        """The offer (a copy) or ``None`` if there is none (or it vanished)."""
        with self._lock:
            offer = self._offers.get(ask_id)
            return copy.deepcopy(offer) if offer else None

    def all(self) -> list[dict[str, Any]]:
        """Every offer that has not vanished (rented ones too), as stored."""
        with self._lock:
            return [copy.deepcopy(o) for o in self._offers.values()]

    @staticmethod
    def priced(offer: Mapping[str, Any], kind: str, storage_gb: float) -> dict[str, Any]:
        """The offer as a search answers it: ``dph_total`` and ``search`` for ``kind``/disk."""
        out = dict(offer)
        disk_hour = float(offer["storage_cost"]) * storage_gb / _HOURS_PER_MONTH
        gpu_hour = float(offer["min_bid"] if kind == "bid" else offer["dph_base"])
        if kind == "reserved":
            gpu_hour *= 1 - float(offer["credit_discount_max"]) / 2
        total = round(gpu_hour + disk_hour, 6)
        out.pop("continent", None)
        out.update(
            dph_total=total,
            storage_total_cost=round(disk_hour, 6),
            dlperf_per_dphtotal=round(float(offer["dlperf"]) / total, 3),
            flops_per_dphtotal=round(float(offer["total_flops"]) / total, 3),
            score=round(float(offer["dlperf"]) / total * float(offer["reliability"]), 3),
            search={"gpuCostPerHour": gpu_hour, "diskHour": round(disk_hour, 6),
                    "totalHour": total, "discountTotalHour": 0, "discountedTotalPerHour": total},
            instance={"gpuCostPerHour": gpu_hour, "diskHour": round(disk_hour, 6),
                      "totalHour": total, "discountTotalHour": 0,
                      "discountedTotalPerHour": total},
        )
        return out

    def search(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The offers matching ``query`` (a ``POST /bundles/`` body); ``SearchError`` if bad."""
        kind = str(query.get("type") or "ondemand")
        if kind not in {"ondemand", "on-demand", "bid", "reserved", "interruptible"}:
            raise SearchError(f"type {kind!r} is not one of ondemand, on-demand, bid, reserved")
        kind = "bid" if kind == "interruptible" else kind
        storage = _number(query.get("allocated_storage", _DEFAULT_STORAGE_GB),
                          "allocated_storage")
        limit = query.get("limit", _DEFAULT_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise SearchError(f"limit must be a non-negative integer, not {limit!r}")
        filters = {**_DEFAULT_FILTERS,
                   **{k: v for k, v in query.items() if k not in _CONTROL_KEYS}}
        for field, ops in filters.items():
            if not isinstance(ops, Mapping) or not ops:
                raise SearchError(f"filter {field!r} must be an object like {{\"eq\": value}}")
            unknown = sorted(set(ops) - _OPS)
            if unknown:
                raise SearchError(
                    f"unknown operator(s) {unknown} for {field!r}; use {sorted(_OPS)}")
        order = _order(query.get("order", [["score", "desc"]]))
        with self._lock:
            views = [self.priced(o, kind, storage) for o in self._offers.values()
                     if self.in_stock(o)]  # past a stock override, offers disappear
        for view in views:
            _check_fields(view, filters)
        found = [v for v in views if all(_matches(v, f, ops) for f, ops in filters.items())]
        for field, direction in reversed(order):  # stable sorts: last key first
            found.sort(key=_by(field), reverse=direction == "desc")
        return found[:limit] if limit else found

    def in_stock(self, offer: Mapping[str, Any]) -> bool:
        """False when a capacity override leaves no room for the offer's GPUs."""
        return self._stock.allows("vast", str(offer["gpu_name"]), int(offer["num_gpus"]))

    # -- writes ---------------------------------------------------------------------------
    def take_stock(self, offer: Mapping[str, Any]) -> bool:
        """Take the offer's GPUs from a capacity override; ``False`` if they are not there."""
        return self._stock.take("vast", str(offer["gpu_name"]), int(offer["num_gpus"]))

    def take(self, ask_id: int) -> dict[str, Any] | None:
        """Mark an offer rented; the offer as it was, or ``None`` if it is gone or taken."""
        with self._lock:
            offer = self._offers.get(ask_id)
            if offer is None or not offer["rentable"]:
                return None
            offer["rentable"], offer["rented"] = False, True
            return copy.deepcopy(offer)

    def release(self, ask_id: int) -> None:
        """Make a rented offer rentable again (its instance was destroyed)."""
        with self._lock:
            offer = self._offers.get(ask_id)
            if offer is not None:
                offer["rentable"], offer["rented"] = True, False

    def vanish(self, ask_id: int) -> None:
        """Take an offer off the market for good (someone else rented it, the host left)."""
        with self._lock:
            if self._offers.pop(ask_id, None) is None and ask_id not in self.vanished:
                raise KeyError(f"no offer {ask_id}")
            self.vanished.add(ask_id)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise SearchError(f"{name} must be a non-negative number, not {value!r}")
    return float(value)


def _order(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        raise SearchError("order must be a list of [field, 'asc'|'desc'] pairs")
    out = []
    for entry in value:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and entry[1] in {"asc", "desc"}):
            raise SearchError(f"order entry {entry!r} is not [field, 'asc'|'desc']")
        out.append((entry[0], entry[1]))
    return out


def _by(field: str) -> Callable[[Mapping[str, Any]], tuple[int, Any]]:
    return lambda view: _sort_key(view.get(field))


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool) or value is None:
        return (0, int(bool(value)))
    return (1, value) if isinstance(value, (int, float)) else (2, str(value))


_PSEUDO = frozenset({"verified", "datacenter", "geolocation", "reliability"})


def _check_fields(view: Mapping[str, Any], filters: Mapping[str, Any]) -> None:
    for field in filters:
        if field not in view and field not in _PSEUDO:
            raise SearchError(f"{field!r} is not a valid search key")


def _value(view: Mapping[str, Any], field: str) -> Any:
    if field == "verified":
        return view.get("verification") == "verified"
    if field == "datacenter":
        return view.get("hosting_type") == 1
    return view.get(field)


def _matches(view: Mapping[str, Any], field: str, ops: Mapping[str, Any]) -> bool:
    have = _value(view, field)
    if field == "gpu_name":
        have = _norm_gpu(have)
    for op, want in ops.items():
        if field == "gpu_name":
            want = [_norm_gpu(w) for w in want] if isinstance(want, list) else _norm_gpu(want)
        if field == "geolocation":
            # A country code matches "Texas, US"; a full location string matches itself.
            candidates = {have, country_code(have)}
            if op in {"eq", "neq"}:
                hit = want in candidates
                if hit != (op == "eq"):
                    return False
                continue
            if op in {"in", "notin"}:
                hit = isinstance(want, list) and bool(candidates & set(want))
                if hit != (op == "in"):
                    return False
                continue
        if not _compare(have, op, want):
            return False
    return True


def _coerce(have: Any, want: Any) -> Any:
    """``want`` as a number when the field is numeric and ``want`` is numeric text.

    vast-cli sends every filter value it does not multiply as the text the user typed
    (``num_gpus=1`` -> ``{"num_gpus": {"eq": "1"}}``; vastai 1.9.1 vastai/api/query.py
    ``parse_query``), and Vast's search answers those queries, so it reads the text as
    the field's number. Booleans stay as they are."""
    if isinstance(want, list):
        return [_coerce(have, w) for w in want]
    if isinstance(have, (int, float)) and not isinstance(have, bool) and isinstance(want, str):
        try:
            return float(want)
        except ValueError:
            return want
    return want


def _compare(have: Any, op: str, want: Any) -> bool:
    want = _coerce(have, want)
    if op == "eq":
        return bool(have == want)
    if op == "neq":
        return bool(have != want)
    if op in {"in", "notin"}:
        inside = isinstance(want, list) and have in want
        return inside if op == "in" else not inside
    if have is None or want is None or isinstance(have, str) != isinstance(want, str):
        return False
    try:
        return bool({"gt": have > want, "lt": have < want, "gte": have >= want,
                     "lte": have <= want}[op])
    except TypeError:
        return False
