"""Serverless submit + status round trips per second: atlas_nb, raw httpx and the runpod SDK.

One round trip = submit a job to the sandbox's ``echo`` endpoint (``POST /v2/echo/run``)
and read its status once (``GET /v2/echo/status/{id}``), three ways in the same run
against the same sandbox endpoint:

* **raw httpx** (the limit): one ``httpx.Client``, ``post(...).json()`` + ``get(...).json()``;
* **atlas_nb**: ``atlas.run_job(provider="runpod", endpoint="echo", input=...)`` +
  ``atlas.get_job(job)``, the public API, returning validated ``Job`` models;
* **runpod SDK**: ``runpod.Endpoint("echo").run(...)`` + ``job.status()`` (pointed at the
  sandbox through ``runpod.endpoint_url_base`` and ``runpod.api_key``).

Batches are interleaved so machine noise hits all three alike; the fastest batch of each
is compared (the median is printed too). Targets: atlas >= 0.9x raw httpx, and ahead of
the SDK. It also shows, in fresh interpreters, that ``import atlas_nb`` leaves logging
alone while ``import runpod`` configures it (the SDK's handler is removed again before
timing, so no client pays for log lines). Exit 0 unless ``--check`` and a target is missed.

    python bench/runpod_serverless_rps.py [--batches 20] [--ops 30] [--check]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

import atlas_nb as atlas
from atlas_nb import sandbox
from atlas_nb.models import JOB_STATUSES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runpod_get_overhead import serving  # the shared sandbox runner

TARGET_VS_RAW = 0.9
TARGET_VS_SDK = 1.0
INPUT = {"prompt": "hello from the benchmark"}
_LOGGING_PROBE = """
import logging
root = logging.getLogger()
before = (list(root.handlers), logging.getLevelName(root.level))
import {module}
after = (list(root.handlers), logging.getLevelName(root.level))
print("unchanged" if before == after else
      f"root handlers {{before[0]}} -> {{after[0]}}, level {{before[1]}} -> {{after[1]}}")
"""


def logging_after_import(module: str) -> str:
    """What ``import module`` does to the root logger, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _LOGGING_PROBE.format(module=module)],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="interleaved batches (20)")
    parser.add_argument("--ops", type=int, default=30, help="round trips per batch (30)")
    parser.add_argument("--server", choices=("process", "thread"), default="process")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    atlas_logging = logging_after_import("atlas_nb")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        import runpod  # the SDK under comparison; it configures logging on import
    except ImportError:
        print("the runpod SDK is not installed: pip install runpod", file=sys.stderr)
        return 2
    root.handlers[:] = saved[0]  # undo it: time HTTP, not log lines
    root.setLevel(saved[1])
    runpod_logging = logging_after_import("runpod")

    with serving(args.server) as url:
        key = sandbox.sandbox_key("runpod")
        base = f"{url}/runpod/serverless/v2"
        runpod.api_key = key
        runpod.endpoint_url_base = base
        endpoint = runpod.Endpoint("echo")
        raw = httpx.Client(headers={"Authorization": f"Bearer {key}"})

        def with_raw() -> object:
            job_id = raw.post(f"{base}/echo/run", json={"input": INPUT}).json()["id"]
            return raw.get(f"{base}/echo/status/{job_id}").json()["status"]

        def with_atlas() -> object:
            job = atlas.run_job(provider="runpod", endpoint="echo", input=INPUT)
            return atlas.get_job(job, provider="runpod").status

        def with_sdk() -> object:
            return endpoint.run({"input": INPUT}).status()

        ways: dict[str, Callable[[], object]] = {
            "raw": with_raw, "atlas": with_atlas, "sdk": with_sdk}
        assert with_atlas() in JOB_STATUSES and with_raw() and with_sdk()
        for fn in ways.values():  # warm-up: connections, imports, caches
            for _ in range(args.ops):
                fn()
        seconds: dict[str, list[float]] = {k: [] for k in ways}
        for batch in range(args.batches):
            for name in (list(ways) if batch % 2 == 0 else list(reversed(ways))):
                start = time.perf_counter()
                for _ in range(args.ops):
                    ways[name]()
                seconds[name].append((time.perf_counter() - start) / args.ops)
        raw.close()

    best = {k: 1 / min(v) for k, v in seconds.items()}
    med = {k: 1 / statistics.median(v) for k, v in seconds.items()}
    vs_raw, vs_sdk = best["atlas"] / best["raw"], best["atlas"] / best["sdk"]
    print(f"serverless submit + status round trips per second ({args.server} sandbox, "
          f"endpoint 'echo', {args.batches} interleaved batches x {args.ops} round trips)")
    print()
    rows = [("raw", "httpx.Client: post(/run) + get(/status)   (the limit)"),
            ("atlas", "atlas.run_job(...) + atlas.get_job(job)"),
            ("sdk", f"runpod {runpod.__version__}: Endpoint.run(...) + job.status()")]
    print(f"{'':6} {'how':56} {'best batch':>12} {'median':>11}")
    for key_, what in rows:
        print(f"{key_:6} {what:56} {best[key_]:8.0f} rt/s {med[key_]:6.0f} rt/s")
    ok_raw, ok_sdk = vs_raw >= TARGET_VS_RAW, vs_sdk > TARGET_VS_SDK
    print(f"{'ratio':6} {'atlas / raw httpx':56} {vs_raw:10.2f}x  target >= "
          f"{TARGET_VS_RAW:.2f}x -> {'PASS' if ok_raw else 'FAIL'}")
    print(f"{'ratio':6} {'atlas / runpod SDK':56} {vs_sdk:10.2f}x  target >  "
          f"{TARGET_VS_SDK:.2f}x -> {'PASS' if ok_sdk else 'FAIL'}")
    print()
    print(f"logging after `import atlas_nb`: {atlas_logging}")
    print(f"logging after `import runpod`:   {runpod_logging}")
    return 1 if args.check and not (ok_raw and ok_sdk and atlas_logging == "unchanged") else 0


if __name__ == "__main__":
    sys.exit(main())
