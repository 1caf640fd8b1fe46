"""How fast Fly log pages are parsed and dispatched, against a plain ``json.loads`` loop.

Input: ``--entries`` log lines (default 100,000) as JSON:API pages of ``--page-size``
(100, what the API returns), shaped like the real endpoint (attributes + meta).

* baseline: ``json.loads`` of every page, nothing else;
* subject: what a log streamer does with each page body it polls: JSON parsing
  (``logs.page_from_bytes``: pydantic-core's parser), the wire translation to frozen
  ``LogEntry`` models (timestamps parsed), dedupe by id, the ring buffer, and dispatch of
  each batch to ``--subscribers`` (10) callbacks.

Both run interleaved ``--runs`` times, so machine noise hits both. Times are CPU time of
this process (``time.process_time``: both sides are single-threaded, and CPU time is not
inflated by other processes competing for the cores), best run of each (as ``timeit``
does); the ratio of the medians and of wall-clock times are printed too. Target:
subject throughput >= 0.5x the baseline's. A second, untimed-against-target row
runs the same pages through the real polling thread and HTTP seam (an in-memory httpx
transport) for context. Memory: ``tracemalloc`` peak while the subject runs, for the
full input and for half of it; bounded memory means the peak does not grow with input
(the ring buffer keeps ``--buffer`` entries, the dedupe window 10,000 ids).

    python bench/fly_logs_dispatch.py [--entries 100000] [--runs 5] [--check] [--target 0.5]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx

from atlas_nb.fly.logs import LogBatch, LogsClient, LogStreams, page_from_bytes
from atlas_nb.fly.logs.streamer import PollPolicy, Streamer
from atlas_nb.fly.logs.subscription import Subscriber

APP = "bench-app"
TARGET = 0.5


def make_pages(entries: int, page_size: int) -> list[bytes]:
    pages = []
    base_ns = 1_717_243_200_000_000_000
    for start in range(0, entries, page_size):
        data = []
        for i in range(start, min(entries, start + page_size)):
            ns = base_ns + i * 1_000_000
            secs, frac = divmod(ns, 1_000_000_000)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
            instance = f"148e272b6d38{i % 7:02d}"
            region = ("iad", "ord", "ams")[i % 3]
            data.append({
                "id": f"01HZX{i:021d}", "type": "logs",
                "attributes": {
                    "timestamp": stamp,
                    "message": f"POST /v1/generate 200 in {i % 900}ms request_id={i:012x}",
                    "level": ("info", "info", "info", "warn", "error")[i % 5],
                    "instance": instance, "region": region,
                    "meta": {"instance": instance, "region": region,
                             "event": {"provider": "app"}},
                },
            })
        pages.append(json.dumps({"data": data, "meta": {"next_token": str(ns)}}).encode())
    return pages


def baseline(pages: list[bytes]) -> int:
    n = 0
    for body in pages:
        n += len(json.loads(body)["data"])
    return n


def new_streamer(subscribers: int, buffer: int) -> tuple[Streamer, list[int]]:
    counts = [0] * subscribers
    options = PollPolicy(0.064, 4.0, 10, buffer, 10_000, 2.0, None)
    client = LogsClient(token="bench-token", base_url="http://bench.invalid")
    streamer = Streamer((APP,), APP, client, options, on_stop=lambda _streamer: None)

    def counter(k: int) -> Callable[[Any], None]:
        def on_event(event: Any) -> None:
            if isinstance(event, LogBatch):
                counts[k] += len(event.entries)
        return on_event

    for k in range(subscribers):
        streamer.add(Subscriber(counter(k), None, None), backfill=False, start=False)
    return streamer, counts


def subject(pages: list[bytes], subscribers: int, buffer: int) -> int:
    streamer, counts = new_streamer(subscribers, buffer)
    for body in pages:
        streamer.ingest(page_from_bytes(body, APP))
    assert len(set(counts)) == 1, counts
    return counts[0]


def end_to_end(pages: list[bytes], subscribers: int, buffer: int) -> tuple[int, float]:
    """The real polling thread over the HTTP seam (in-memory transport): entries, seconds."""
    queue = list(pages)
    lock = threading.Lock()

    def server(request: httpx.Request) -> httpx.Response:
        with lock:
            body = queue.pop(0) if queue else b'{"data": [], "meta": {"next_token": ""}}'
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    total = sum(len(json.loads(p)["data"]) for p in pages)
    done = threading.Event()
    counts = [0] * subscribers

    def counter(k: int) -> Callable[[Any], None]:
        def on_event(event: Any) -> None:
            if isinstance(event, LogBatch):
                counts[k] += len(event.entries)
                if k == 0 and counts[0] >= total:
                    done.set()
        return on_event

    hub = LogStreams(http=httpx.MockTransport(server), base_url="http://bench.invalid",
                     token="bench-token", buffer_size=buffer)
    started = time.perf_counter()
    subs = [hub.subscribe(APP, counter(k)) for k in range(subscribers)]
    done.wait(600)
    elapsed = time.perf_counter() - started
    for sub in subs:
        sub.close()
    return counts[0], elapsed


def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    """``(result, cpu seconds, wall seconds)``."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    n = fn()
    return n, time.process_time() - cpu, time.perf_counter() - wall


def peak_kib(fn: Callable[[], int]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--buffer", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)

    pages = make_pages(args.entries, args.page_size)
    half = pages[: len(pages) // 2]
    base_times, subj_times, base_wall, subj_wall = [], [], [], []
    baseline(pages)  # warm-up: first-touch costs (model class setup, caches) for both
    subject(pages[:10], args.subscribers, args.buffer)
    for _ in range(args.runs):
        n_base, t_base, w_base = timed(lambda: baseline(pages))
        n_subj, t_subj, w_subj = timed(lambda: subject(pages, args.subscribers, args.buffer))
        assert n_base == n_subj == args.entries, (n_base, n_subj)
        base_times.append(t_base)
        subj_times.append(t_subj)
        base_wall.append(w_base)
        subj_wall.append(w_subj)
    t_base, t_subj = min(base_times), min(subj_times)
    rate_base, rate_subj = args.entries / t_base, args.entries / t_subj
    ratio = rate_subj / rate_base
    median_ratio = statistics.median(base_times) / statistics.median(subj_times)
    wall_ratio = min(base_wall) / min(subj_wall)
    n_e2e, t_e2e = end_to_end(pages, args.subscribers, args.buffer)
    peak_full = peak_kib(lambda: subject(pages, args.subscribers, args.buffer))
    peak_half = peak_kib(lambda: subject(half, args.subscribers, args.buffer))

    print(f"{args.entries:,} log entries in {len(pages):,} pages, {args.subscribers} "
          f"subscribers, ring buffer {args.buffer:,}, best of {args.runs} interleaved runs")
    print(f"{'':10}{'what':48}{'cpu time':>10}{'entries/s':>14}")
    print(f"{'baseline':10}{'json.loads of every page':48}{t_base * 1000:>8.1f}ms"
          f"{rate_base:>14,.0f}")
    print(f"{'subject':10}{'parse + LogEntry + dedupe + ring + dispatch':48}"
          f"{t_subj * 1000:>8.1f}ms{rate_subj:>14,.0f}")
    verdict = "ok" if ratio >= args.target else "UNDER TARGET"
    print(f"{'ratio':10}{'subject / baseline throughput':48}{ratio:>10.2f}x   "
          f"target >= {args.target:.2f}x -> {verdict}")
    print(f"{'':10}{'(ratio of the medians; of best wall clock)':48}{median_ratio:>10.2f}x"
          f"{wall_ratio:>8.2f}x")
    print(f"{'context':10}{'same pages, polling thread + HTTP seam (wall)':48}"
          f"{t_e2e * 1000:>8.1f}ms{n_e2e / t_e2e:>14,.0f}")
    print(f"memory    tracemalloc peak while dispatching: {peak_full:,.0f} KiB for "
          f"{args.entries:,} entries, {peak_half:,.0f} KiB for {args.entries // 2:,} "
          f"(bounded: it does not grow with the input)")
    if args.check and ratio < args.target:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
