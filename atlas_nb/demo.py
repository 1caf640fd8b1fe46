"""The quick start, end to end against the local sandbox: ``python -m atlas_nb.demo``.

Starts the emulated clouds on loopback, then walks the public API: the price
catalog, a pod with bearer auth (spawn, wait, inspect, stop, start, terminate) and
serverless jobs (sync, async, streamed). No account and no network needed.
"""

from __future__ import annotations

import argparse
import sys
import time

import atlas_nb as atlas
from atlas_nb import sandbox


def _step(title: str) -> None:
    print(f"\n== {title}")


def run(provider: str = "runpod") -> int:
    """Run the quick start against a fresh sandbox; returns a process exit code."""
    started = time.perf_counter()
    with sandbox.start() as sb:
        print(f"sandbox running at {sb.url} (every provider now points at it)")

        _step(f"{provider}: capabilities")
        print(", ".join(sorted(atlas.capabilities(provider))))

        _step(f"{provider}: cheapest GPUs")
        gpus = sorted(
            (g for g in atlas.list_gpu_types(provider=provider) if g.price_per_hour),
            key=lambda g: g.price_per_hour or 0.0,
        )
        for g in gpus[:5]:
            spot = f"  spot ${g.spot_price_per_hour:.2f}" if g.spot_price_per_hour else ""
            print(f"  {g.canonical or g.id:<14} ${g.price_per_hour:.2f}/h{spot}")

        _step("spawn an H100 pod with bearer auth")
        pod = atlas.spawn_compute(provider=provider, gpu="h100", image="vllm/vllm-openai:latest",
                                  ports=[(8000, "http")], auth="bearer", name="atlas-demo")
        print(f"  {pod.id} is {pod.status}; ${pod.cost_per_hour:.2f}/h")
        assert pod.auth is not None
        print(f"  token hash {(pod.auth.hash or '')[:16]}… (the token is shown once, never logged)")
        try:
            pod = atlas.wait_ready(pod.id, provider=provider, timeout_s=60,
                                   on_progress=lambda c: print(f"  … {c.status}"))
            print(f"  ready at {pod.url}")
            if "stop_start" in atlas.capabilities(provider):
                _step("stop, then start again")
                print(f"  {atlas.stop(pod.id, provider=provider).status}")
                print(f"  {atlas.start(pod.id, provider=provider).status}")
        finally:
            _step("terminate (idempotent)")
            atlas.terminate(pod.id, provider=provider)
            atlas.terminate(pod.id, provider=provider)
            print(f"  {pod.id} terminated")

        if "serverless" in atlas.capabilities(provider):
            _step("serverless: sync job on the echo endpoint")
            job = atlas.run_job(provider=provider, endpoint="echo", input={"prompt": "hi"},
                                mode="sync", timeout_ms=30_000)
            print(f"  {job.id}: {job.status} -> {job.output}")

            _step("serverless: stream a job")
            job = atlas.run_job(provider=provider, endpoint="stream", input={"prompt": "count"})
            for chunk in atlas.stream_job(job):
                print(f"  chunk: {chunk}")
            print(f"  final: {atlas.get_job(job).status}")

        live = [c for c in atlas.list_compute(provider=provider) if c.status != "terminated"]
        print(f"\nleft running: {len(live)} computes · {time.perf_counter() - started:.1f}s")
        return 0 if not live else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m atlas_nb.demo``."""
    parser = argparse.ArgumentParser(prog="python -m atlas_nb.demo", description=__doc__)
    parser.add_argument("--provider", default="runpod", help="which sandbox cloud to use")
    args = parser.parse_args(argv)
    return run(args.provider)


if __name__ == "__main__":
    sys.exit(main())
