"""``list_gpu_types(provider="all")``: parallel fan-out vs the four catalogs fetched one by one.

A sandbox adds 100 ms of latency to every request of every cloud. Baseline: the sum of
four sequential ``list_gpu_types(provider=P)`` calls (what a naive loop pays). Subject:
one ``list_gpu_types(provider="all")``. Both run in the same process against the same
sandbox, interleaved, median of ``--runs``. Target: baseline / subject >= 3x.

    python bench/catalog_all.py [--runs 5] [--latency-ms 100] [--check]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import atlas_nb as atlas
from atlas_nb.facade import all_providers
from atlas_nb.sandbox.server import Sandbox

TARGET = 3.0


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--check", action="store_true", help="exit 1 when under target")
    args = parser.parse_args(argv)

    with Sandbox(validate=False) as sb:
        for name in all_providers():
            atlas.list_gpu_types(provider=name)  # warm: connections, imports, spec caches
        sb.faults("*", latency_ms=args.latency_ms)
        sequential: list[float] = []
        parallel: list[float] = []
        counts: dict[str, int] = {}
        for _ in range(max(1, args.runs)):
            sequential.append(sum(
                _timed(lambda n=name: counts.__setitem__(n, len(atlas.list_gpu_types(provider=n))))
                for name in all_providers()
            ))
            parallel.append(_timed(lambda: atlas.list_gpu_types(provider="all")))
        total = len(atlas.list_gpu_types(provider="all"))

    seq, par = statistics.median(sequential), statistics.median(parallel)
    ratio = seq / par
    print(f"GPU catalogs of {', '.join(all_providers())} with {args.latency_ms:g} ms latency per "
          f"request (median of {args.runs})")
    print(f"  entries per provider: {counts}; all: {total}")
    print(f"  baseline  sum of 4 sequential list_gpu_types calls  {seq * 1e3:8.1f} ms")
    print(f"  subject   list_gpu_types(provider='all')            {par * 1e3:8.1f} ms")
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"  speed-up  {ratio:.2f}x  (target >= {TARGET:g}x)  {verdict}")
    return 1 if args.check and ratio < TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
