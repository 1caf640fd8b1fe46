"""Spawning 100 pods in parallel against spawning them one after another.

The sandbox's RunPod cloud answers every create (``POST /v2/pods``) 50 ms late (fault
injection), like a real cloud API. Baseline: 100 ``atlas.spawn_compute`` calls in a row.
Subject: one ``atlas.spawn_many(count=100, ...)`` (16 creates in flight at most, over the
shared connection pool). Both must return 100 distinct pods that exist in the sandbox.
Targets: subject >= 8x faster than the baseline, and at most 16 concurrent connections
(the sandbox's ``max_concurrent_connections``). Exit 0 unless ``--check`` and a target
is missed.

    python bench/spawn_parallel.py [--pods 100] [--latency-ms 50] [--rounds 1] [--check]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import atlas_nb as atlas
from atlas_nb import sandbox
from atlas_nb.facade import spawn_many
from atlas_nb.sandbox.server import Sandbox

TARGET_SPEEDUP = 8.0
MAX_CONNECTIONS = 16
SPAWN = {"gpu": "rtx_4090", "image": "bench/srv:1", "ports": [(8000, "http")]}


def sequential(n: int) -> list[atlas.Compute]:
    return [atlas.spawn_compute(provider="runpod", **SPAWN) for _ in range(n)]


def parallel(n: int) -> list[atlas.Compute]:
    return spawn_many(count=n, provider="runpod", **SPAWN)


def timed(sb: Sandbox, how: Callable[[int], list[atlas.Compute]], n: int
          ) -> tuple[float, int]:
    """Seconds to spawn ``n`` pods ``how``, and the peak of concurrent connections."""
    sb.reset_stats()
    before = set(sb.runpod.pods)
    start = time.perf_counter()
    computes = how(n)
    seconds = time.perf_counter() - start
    peak = int(sb.stats()["max_concurrent_connections"])
    ids = [c.id for c in computes]
    made = set(sb.runpod.pods) - before
    assert len(set(ids)) == n and set(ids) == made, "lost or duplicated pods"
    cleanup(ids)
    return seconds, peak


def cleanup(ids: list[str]) -> None:
    """Terminate what a round made (untimed, in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=MAX_CONNECTIONS) as pool:
        list(pool.map(lambda cid: atlas.terminate(cid, provider="runpod"), ids))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of each (1)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    with sandbox.start(validate=False) as sb:
        sb.faults("runpod/rest:POST /v2/pods", latency_ms=args.latency_ms)
        timed(sb, parallel, 10)  # warm-up: imports, connections
        seq: list[float] = []
        par: list[float] = []
        peaks: list[int] = []
        for _ in range(max(1, args.rounds)):
            seq.append(timed(sb, sequential, args.pods)[0])
            seconds, peak = timed(sb, parallel, args.pods)
            par.append(seconds)
            peaks.append(peak)

    s, p, peak = statistics.median(seq), statistics.median(par), max(peaks)
    speedup = s / p
    print(f"spawning {args.pods} RunPod pods with {args.latency_ms:g} ms of injected create "
          f"latency (in-process sandbox, median of {len(seq)} round(s))")
    print()
    print(f"{'':9} {'how':52} {'wall':>9} {'peak conns':>11}")
    print(f"{'baseline':9} {'atlas.spawn_compute(...) x N, one after another':52} {s:7.2f} s")
    print(f"{'subject':9} {'atlas.spawn_many(count=N, ...)  (16 in flight)':52} {p:7.2f} s "
          f"{peak:>11}")
    ok_speed, ok_conns = speedup >= TARGET_SPEEDUP, peak <= MAX_CONNECTIONS
    print(f"{'speedup':9} {'baseline / subject':52} {speedup:7.1f}x  target >= "
          f"{TARGET_SPEEDUP:g}x -> {'PASS' if ok_speed else 'FAIL'}")
    print(f"{'conns':9} {'max concurrent connections (sandbox stats)':52} {peak:7d}   "
          f"target <= {MAX_CONNECTIONS} -> {'PASS' if ok_conns else 'FAIL'}")
    return 1 if args.check and not (ok_speed and ok_conns) else 0


if __name__ == "__main__":
    sys.exit(main())
