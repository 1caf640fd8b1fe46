"""RunPod's GPU/CPU catalog: package data, stock overrides, and its REST v2 / GraphQL shapes.

Prices come from ``gpus.json`` (each row names its source: the v2
spec examples, SkyPilot catalog rows, the GraphQL docs, or an estimate). All
prices are USD per hour for one GPU; ``spotPrice`` feeds the GraphQL spot fields.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..capacity import Capacity

__all__ = ["LEVELS", "STOCK_STATUS", "Catalog"]

DATA = Path(__file__).parent / "gpus.json"
LEVELS = ("NONE", "LOW", "MEDIUM", "HIGH")
STOCK_STATUS = {"NONE": "None", "LOW": "Low", "MEDIUM": "Medium", "HIGH": "High"}
"""v2 availability level -> GraphQL ``stockStatus``."""


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


class Catalog:
    """The GPU and CPU types on offer, with per-GPU stock that tests can change.

    ``capacity`` (the sandbox's stock overrides) is consulted wherever stock shows:
    placements, REST availability and GraphQL ``lowestPrice``.
    """

    def __init__(self, path: Path = DATA, capacity: Capacity | None = None) -> None:
        self.capacity = capacity or Capacity()
        doc = json.loads(path.read_text(encoding="utf-8"))
        self.source: str = doc["_source"]
        self.gpus: dict[str, dict[str, Any]] = {g["id"]: g for g in doc["gpus"]}
        self.cpus: dict[str, dict[str, Any]] = {c["id"]: c for c in doc["cpus"]}
        self.data_centers: dict[str, dict[str, Any]] = {d["id"]: d for d in doc["dataCenters"]}
        self._lock = threading.Lock()

    def gpu(self, gpu_id: str) -> dict[str, Any] | None:
        """One GPU row (a copy), or ``None``."""
        with self._lock:
            row = self.gpus.get(gpu_id)
            return copy.deepcopy(row) if row else None

    def set_availability(self, gpu_id: str, level: str) -> None:
        """Override the stock of a GPU everywhere (``"NONE"`` makes creates fail for capacity)."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}")
        with self._lock:
            row = self.gpus[gpu_id]
            row["availability"] = level
            for dc in row["dataCenters"]:
                dc["availability"] = level

    def placements(
        self,
        row: dict[str, Any],
        cloud: str,
        count: int,
        *,
        country_codes: Iterable[str] = (),
        data_center_ids: Iterable[str] = (),
    ) -> list[dict[str, Any]]:
        """Data centers that can place ``count`` of this GPU on ``cloud`` right now."""
        key = cloud.lower()
        if not row[key] or count > row["maxCount"][key] or self._stock(row, count) == "NONE":
            return []
        countries = set(country_codes)
        wanted = list(data_center_ids)
        out = []
        for dc in row["dataCenters"]:
            meta = self.data_centers.get(dc["id"], {"name": dc["id"], "country": ""})
            if dc["availability"] == "NONE" or (countries and meta["country"] not in countries):
                continue
            out.append({"id": dc["id"], "name": meta["name"], "availability": dc["availability"]})
        if wanted:
            order = {dc: i for i, dc in enumerate(wanted)}
            out = sorted((d for d in out if d["id"] in order), key=lambda d: order[d["id"]])
        return out

    def _stock(self, row: dict[str, Any], count: int) -> str:
        """The row's availability level, ``NONE`` when a capacity override has no room."""
        if not self.capacity.allows("runpod", row["id"], count):
            return "NONE"
        return str(row["availability"])

    @staticmethod
    def cuda_choices(
        row: dict[str, Any], allowed: Iterable[str] = (), minimum: str | None = None
    ) -> list[str]:
        """CUDA versions of this GPU that satisfy an exact set and/or a floor, newest first."""
        versions = list(row.get("cudaVersions") or [])
        allowed = list(allowed)
        if allowed:
            versions = [v for v in versions if v in allowed]
        if minimum:
            floor = _version(minimum)
            versions = [v for v in versions if _version(v)[: len(floor)] >= floor]
        return sorted(versions, key=_version, reverse=True)

    def v2_gpu(
        self,
        row: dict[str, Any],
        *,
        availability: bool = False,
        cloud: str = "SECURE",
        count: int = 1,
        country_codes: Iterable[str] = (),
        cuda_versions: Iterable[str] = (),
        min_cuda: str | None = None,
    ) -> dict[str, Any]:
        """The REST v2 ``GpuType`` for a row (availability fields only when asked for)."""
        price = {"secure": row["price"]["secure"], "community": row["price"]["community"]}
        if "serverless" in row["price"]:
            price["serverless"] = row["price"]["serverless"]
        out: dict[str, Any] = {
            "id": row["id"],
            "name": row["name"],
            "pool": row["pool"],
            "manufacturer": row["manufacturer"],
            "memory": row["memory"],
            "secure": row["secure"],
            "community": row["community"],
            "price": price,
            "maxCount": dict(row["maxCount"]),
        }
        if not availability:
            return out
        places = self.placements(row, cloud, count, country_codes=country_codes)
        cudas = self.cuda_choices(row, cuda_versions, min_cuda)
        if (list(cuda_versions) or min_cuda) and not cudas:
            places = []
        out["availability"] = max(
            (p["availability"] for p in places), key=LEVELS.index, default="NONE"
        )
        if places:
            out["dataCenters"] = places
        if row.get("cudaVersions"):
            wanted = set(cudas)
            out["cudaVersions"] = [
                {"version": v, "available": bool(places) and v in wanted}
                for v in sorted(row["cudaVersions"], key=_version)
                if not list(cuda_versions) or v in wanted
            ]
        return out

    def v2_cpu(self, row: dict[str, Any]) -> dict[str, Any]:
        """The REST v2 ``CpuType`` for a CPU flavor."""
        return {
            "id": row["id"],
            "name": row["name"],
            "group": row["group"],
            "vcpu": dict(row["vcpu"]),
            "ramGbPerVcpu": row["ramGbPerVcpu"],
            "price": {
                "securePerVcpu": row["securePerVcpu"],
                "serverlessPerVcpu": row["serverlessPerVcpu"],
            },
        }

    def lowest_price(self, row: dict[str, Any], count: int, secure: bool | None) -> dict[str, Any]:
        """GraphQL ``lowestPrice(input: {gpuCount, secureCloud})`` for one GPU row."""
        clouds = (
            ["secure"] if secure else ["community"] if secure is False else ["secure", "community"]
        )
        offered = [c for c in clouds if row[c] and count <= row["maxCount"][c]]
        stock = self._stock(row, count) if offered else "NONE"
        on_demand = [row["price"][c] for c in offered]
        spot = [row["spotPrice"][c] for c in offered if row["spotPrice"][c] is not None]
        top = max((row["maxCount"][c] for c in offered), default=0)
        return {
            "gpuName": row["name"],
            "gpuTypeId": row["id"],
            "uninterruptablePrice": min(on_demand) if on_demand and stock != "NONE" else None,
            "minimumBidPrice": min(spot) if spot and stock != "NONE" else None,
            "stockStatus": STOCK_STATUS[stock] if offered else None,
            "availableGpuCounts": [n for n in (1, 2, 4, 8) if n <= top] if stock != "NONE" else [],
            "maxUnreservedGpuCount": top if stock != "NONE" else 0,
            "minVcpu": 2 * count,
            "minMemory": 8 * count,
            "totalCount": top * 4,
            "rentedCount": top,
            "rentalPercentage": 0.25,
            "countryCode": None,
            "supportPublicIp": True,
            "compliance": [],
        }
