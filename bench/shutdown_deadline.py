"""Kernel shutdown of 100 tracked pods within the 2 s budget, against terminating them one
after another.

The sandbox's RunPod cloud answers every ``DELETE /v2/pods/{id}`` 100 ms late (fault
injection). Subject: ``Orchestrator.shutdown(parallel=True, deadline_s=2)``, the path a
kernel's shutdown request takes. Baseline: the same 100 pods (a second set, spawned the
same way) terminated with ``atlas.terminate`` one after another. Target: the subject ends
all 100 within the budget (0 left, 0 live in the sandbox). Prints both timings and the
ratio. Exit 0 unless ``--check`` and the target is missed.

    python bench/shutdown_deadline.py [--pods 100] [--latency-ms 100] [--check]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import atlas_nb as atlas
from atlas_nb import sandbox
from atlas_nb.orchestrator import Orchestrator

BUDGET_S = 2.0
SPAWN = {"provider": "runpod", "gpu": "rtx_4090", "image": "bench/srv:1"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    os.environ["ATLAS_NB_DATA_DIR"] = tempfile.mkdtemp(prefix="atlas-bench-")

    with sandbox.start(clouds=["runpod"], validate=False, provision_delay_s=0.0,
                       start_delay_s=0.0) as sb:
        base_ids = [c.id for c in atlas.spawn_many(count=args.pods, **SPAWN)]
        orch = Orchestrator(background=False, kernel_hooks=False, idle_ttl_ms=0)
        ids = [orch.spawn(**SPAWN).id for _ in range(args.pods)]
        sb.faults("runpod/rest:DELETE /v2/pods/*", latency_ms=args.latency_ms)

        start = time.perf_counter()
        for cid in base_ids:
            atlas.terminate(cid, provider="runpod")
        baseline = time.perf_counter() - start

        start = time.perf_counter()
        left = orch.shutdown("kernel_shutdown", parallel=True, deadline_s=BUDGET_S,
                             detach=False)
        subject = time.perf_counter() - start
        live = {p["id"] for p in sb.runpod.live_pods()} & set(ids)

    ok = not left and not live and subject <= BUDGET_S
    print(f"terminating {args.pods} tracked RunPod pods with {args.latency_ms:g} ms of injected "
          "DELETE latency (in-process sandbox)")
    print()
    print(f"{'baseline':9} {'atlas.terminate(...) x N, one after another':52} {baseline:7.2f} s")
    print(f"{'subject':9} {'Orchestrator.shutdown(parallel=True, deadline_s=2)':52} "
          f"{subject:7.2f} s  left {len(left)}, live {len(live)}")
    print(f"{'speedup':9} {'baseline / subject':52} {baseline / subject:7.1f}x")
    print(f"{'budget':9} {'subject / 2 s budget':52} {subject / BUDGET_S:7.2f}   target: all "
          f"terminated within {BUDGET_S:g} s -> {'PASS' if ok else 'FAIL'}")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
