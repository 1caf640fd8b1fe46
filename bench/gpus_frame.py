"""Building the ``%atlas gpus`` DataFrame from cached catalogs: 4 providers, 5,000 offers.

Subject: ``atlas_nb.notebook.frames.gpus`` reading the four catalogs from a warm
``CatalogCache`` (so no network), all rows, sorted by price. Baseline, in the same run:
raw pandas on the same rows already extracted to tuples (``DataFrame.from_records`` +
``sort_values``), the floor any builder pays. Also shown: the filtered call
(``--gpu h100 --max-price 3``) and a naive ``DataFrame([g.model_dump() ...])``.

Target: the subject <= 150 ms (median of ``--runs``); the ratio to the baseline is printed.

    python bench/gpus_frame.py [--runs 30] [--offers 5000] [--check]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

TARGET_MS = 150.0
PROVIDERS = ("runpod", "lambda_labs", "vast", "fly")
GPUS = ("h100", "h100_sxm", "h100_pcie", "a100_80g", "a100_40g", "l40s", "l4", "a6000",
        "rtx_4090", "rtx_3090", "a10", "h200", "b200")


def catalogs(offers: int, seed: int = 0) -> dict[str, list[Any]]:
    """``offers`` GpuTypes spread over the four providers, with realistic fields."""
    from atlas_nb.models import GpuType

    rng = random.Random(seed)
    out: dict[str, list[Any]] = {p: [] for p in PROVIDERS}
    for i in range(offers):
        p = PROVIDERS[i % len(PROVIDERS)]
        gpu = rng.choice(GPUS)
        count = rng.choice((1, 1, 1, 2, 4, 8))
        price = round(rng.uniform(0.2, 4.0) * count, 3)
        spot = round(price * rng.uniform(0.3, 0.8), 3) if rng.random() < 0.6 else None
        out[p].append(GpuType(
            provider=p, id=f"{p}-{gpu}-{count}-{i}", canonical=gpu, display_name=gpu.upper(),
            memory_gb=float(rng.choice((24, 48, 80, 141))), gpu_count=count,
            price_per_hour=price, spot_price_per_hour=spot,
            stock=rng.choice(("high", "medium", "low")),
            regions=tuple(rng.sample(("us-east", "us-west", "eu-central", "ap-south"),
                                     rng.randint(1, 3))),
            raw={"i": i}))
    return out


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    samples = []
    result = None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e3, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--offers", type=int, default=5000)
    parser.add_argument("--target-ms", type=float, default=TARGET_MS)
    parser.add_argument("--check", action="store_true", help="exit 1 when over target")
    args = parser.parse_args(argv)

    import pandas as pd

    from atlas_nb.notebook import frames
    from atlas_nb.notebook.catalog_cache import CatalogCache

    data = catalogs(args.offers)
    cache = CatalogCache(lambda name: data[name])
    cache.get(list(PROVIDERS))  # warm: every later call is a cache hit
    items = [g for p in PROVIDERS for g in data[p]]
    columns = list(frames.GPU_COLUMNS)

    def baseline() -> Any:
        rows = [(g.provider, g.canonical, g.gpu_count, g.memory_gb, g.price_per_hour,
                 g.spot_price_per_hour, g.stock, g.regions, g.id) for g in items]
        return pd.DataFrame.from_records(rows, columns=columns).sort_values("price_per_hour")

    def subject() -> Any:
        return frames.gpus(provider=list(PROVIDERS), cache=cache)

    def filtered() -> Any:
        return frames.gpus(provider=list(PROVIDERS), cache=cache, gpu="h100", max_price=3.0)

    def naive() -> Any:
        return pd.DataFrame([g.model_dump() for g in items]).sort_values("price_per_hour")

    for fn in (baseline, subject, filtered, naive):  # warm-up
        fn()
    results = {}
    for name, fn in (("baseline", baseline), ("subject", subject), ("filtered", filtered),
                     ("naive", naive)):
        results[name] = timed(fn, args.runs if name != "naive" else max(3, args.runs // 5))
    base, (sub, df) = results["baseline"][0], results["subject"]
    assert len(df) == args.offers and list(df.columns) == columns

    print(f"gpus DataFrame from cached catalogs: {len(PROVIDERS)} providers, "
          f"{args.offers} offers (median of {args.runs} builds)")
    print()
    rows = (("baseline", "raw pandas from pre-extracted tuples + sort"),
            ("subject", "frames.gpus(provider=[4 providers]) from the cache"),
            ("filtered", "frames.gpus(..., gpu='h100', max_price=3)"),
            ("naive", "DataFrame([g.model_dump() ...]) + sort (info)"))
    for name, what in rows:
        print(f"{name:9} {what:52} {results[name][0]:8.1f} ms")
    print(f"{'ratio':9} {'subject / baseline':52} {sub / base:8.2f}x")
    verdict = "OK" if sub <= args.target_ms else "OVER TARGET"
    print(f"{'target':9} {'subject':52} <= {args.target_ms:.0f} ms -> {verdict}")
    return 1 if args.check and sub > args.target_ms else 0


if __name__ == "__main__":
    sys.exit(main())
