"""What ``atlas_nb.get_compute`` costs on top of the HTTP round trip it makes.

Baseline: a raw ``httpx.Client`` GET of the same sandbox URL (``/v2/pods/{id}``, with the
Authorization header) plus ``.json()``. Subject: ``atlas_nb.get_compute(id,
provider="runpod")``, the full public path: provider resolution, key and URL resolution,
the request, telemetry, and the translation into a validated ``Compute``. Both talk to
the same sandbox RunPod cloud over loopback (by default a sandbox in a child process, as a
real cloud is not in your process; ``--server thread`` runs it in this one).

Calls are timed in interleaved batches (raw, atlas, atlas, raw, ...) so machine noise
hits both alike. The target applies to the ratio of the fastest batches (as ``timeit``
advises: slower batches measure other processes, not the code); the median of the
per-batch ratios is printed too. Target: ratio <= 1.2. Exit 0 unless ``--check`` is
given and the ratio is over target.

    python bench/runpod_get_overhead.py [--batches 40] [--calls 50] [--check]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

import atlas_nb as atlas
from atlas_nb import sandbox
from atlas_nb.providers.runpod import RunPod

TARGET = 1.2
_CHILD = """
import sys, threading
from atlas_nb import sandbox
with sandbox.start(validate=False, provision_delay_s=0, start_delay_s=0) as sb:
    print(sb.url, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
"""


@contextmanager
def serving(mode: str) -> Iterator[str]:
    """A sandbox (child process or thread) with this process attached to it; yields its URL."""
    if mode == "thread":
        with sandbox.start(validate=False, provision_delay_s=0, start_delay_s=0) as sb:
            yield sb.url
        return
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        url = child.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError("the sandbox child process did not start")
        sandbox.attach(url)
        try:
            yield url
        finally:
            sandbox.detach(url)
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def timed(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40, help="interleaved batches (40)")
    parser.add_argument("--calls", type=int, default=50, help="calls per batch (50)")
    parser.add_argument("--server", choices=("process", "thread"), default="process")
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--check", action="store_true", help="exit 1 when over target")
    args = parser.parse_args(argv)

    with serving(args.server) as url:
        c = atlas.spawn_compute(provider="runpod", gpu="rtx_4090", image="bench/srv:1",
                                ports=[(8000, "http"), (22, "tcp")])
        atlas.wait_ready(c.id, provider="runpod", timeout_s=30, poll_s=0.05)
        pod_url = f"{url}/runpod/rest/v2/pods/{c.id}"
        raw = httpx.Client(headers={"Authorization": f"Bearer {sandbox.sandbox_key('runpod')}"})
        instance = RunPod()
        subjects: dict[str, Callable[[], object]] = {
            "raw": lambda: raw.get(pod_url).json(),
            "atlas": lambda: atlas.get_compute(c.id, provider="runpod"),
            "instance": lambda: instance.get_compute(c.id),
        }
        assert atlas.get_compute(c.id, provider="runpod").ready
        for fn in subjects.values():  # warm-up: connections, caches, imports
            timed(fn, args.calls)
        samples: dict[str, list[float]] = {k: [] for k in subjects}
        ratios: list[float] = []
        for batch in range(args.batches):
            order = list(subjects) if batch % 2 == 0 else list(reversed(subjects))
            for name in order:
                samples[name].append(timed(subjects[name], args.calls))
            ratios.append(samples["atlas"][-1] / samples["raw"][-1])
        atlas.terminate(c.id, provider="runpod")
        raw.close()

    best = {k: min(v) * 1e6 for k, v in samples.items()}
    med = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
    ratio = best["atlas"] / best["raw"]
    print(f"get_compute overhead vs a raw httpx GET of the same sandbox URL "
          f"({args.server} sandbox, {args.batches} interleaved batches x {args.calls} calls)")
    print()
    rows = [
        ("baseline", "httpx.Client.get(url).json()", "raw"),
        ("subject", 'atlas.get_compute(id, provider="runpod")', "atlas"),
        ("(info)", "RunPod().get_compute(id)  (one provider instance)", "instance"),
    ]
    print(f"{'':10} {'per call':50} {'best batch':>11} {'median':>10}")
    for label, what, key in rows:
        print(f"{label:10} {what:50} {best[key]:8.0f} us {med[key]:7.0f} us")
    print(f"{'overhead':10} {'subject - baseline':50} {best['atlas'] - best['raw']:8.0f} us "
          f"{med['atlas'] - med['raw']:7.0f} us")
    print(f"{'ratio':10} {'subject / baseline':50} {ratio:9.2f}x "
          f"{statistics.median(ratios):8.2f}x (median of per-batch ratios)")
    verdict = "PASS" if ratio <= args.target else "FAIL"
    print(f"{'target':10} {'best-batch ratio':50} {'<= ' + format(args.target, '.2f'):>9}x"
          f"  -> {verdict}")
    return 1 if args.check and ratio > args.target else 0


if __name__ == "__main__":
    sys.exit(main())
