"""The public DataFrame builders: exact columns, sorting, filters, the catalog cache, the
live ``stream`` (throttled redraws, complete final frame) and Ctrl-C cancelling jobs."""

from __future__ import annotations

import itertools
import math
import os
import signal
import threading
from typing import Any

import pytest

import atlas_nb as atlas
from atlas_nb.errors import Unauthorized
from atlas_nb.models import GpuType, Job
from atlas_nb.notebook import frames
from atlas_nb.notebook.catalog_cache import CatalogCache
from atlas_nb.notebook.commands.jobs import wait_job
from atlas_nb.notebook.joblog import JobLog


def _gpu(provider: str, canonical: str | None, price: float | None, spot: float | None = None,
         count: int = 1, regions: tuple[str, ...] = ("r1",)) -> GpuType:
    return GpuType(provider=provider, id=f"{provider}-{canonical}-{count}", canonical=canonical,
                   memory_gb=80.0, gpu_count=count, price_per_hour=price,
                   spot_price_per_hour=spot, stock="high", regions=regions)


CATALOG = [
    _gpu("runpod", "h100_sxm", 2.69, 1.5),
    _gpu("vast", "h100_pcie", 1.9, 0.8),
    _gpu("lambda_labs", "h100_sxm", 23.92, None, count=8, regions=("us-east-1", "us-west-2")),
    _gpu("runpod", "rtx_4090", 0.69, 0.35),
    _gpu("fly", "a100_80g", 3.5, None),
    _gpu("vast", None, 0.1, None),
    _gpu("vast", "l40s", None, None),
]


class TestGpus:
    def test_columns_and_sort(self) -> None:
        df = frames.gpus(CATALOG)
        assert list(df.columns) == ["provider", "gpu", "gpu_count", "memory_gb",
                                    "price_per_hour", "spot_price_per_hour", "stock",
                                    "regions", "id"]
        assert df["price_per_hour"].tolist()[:6] == [0.1, 0.69, 1.9, 2.69, 3.5, 23.92]
        assert math.isnan(df["price_per_hour"].iloc[-1])  # unknown prices sort last
        assert df.set_index("id").loc["lambda_labs-h100_sxm-8", "regions"] == \
            "us-east-1, us-west-2"

    def test_family_exact_provider_and_price_filters(self) -> None:
        assert set(frames.gpus(CATALOG, gpu="h100")["gpu"]) == {"h100_sxm", "h100_pcie"}
        assert frames.gpus(CATALOG, gpu="h100_sxm")["provider"].tolist() == ["runpod",
                                                                            "lambda_labs"]
        assert frames.gpus(CATALOG, gpu=["a100", "rtx4090"])["gpu"].tolist() == ["rtx_4090",
                                                                                "a100_80g"]
        assert frames.gpus(CATALOG, provider="vast")["provider"].unique().tolist() == ["vast"]
        assert frames.gpus(CATALOG, max_price=2.0)["price_per_hour"].max() <= 2.0
        assert len(frames.gpus(CATALOG, limit=2)) == 2

    def test_spot_keeps_spot_offers_sorted_by_spot_price(self) -> None:
        df = frames.gpus(CATALOG, spot=True, max_price=1.0)
        assert df["spot_price_per_hour"].tolist() == [0.35, 0.8]

    def test_failures_are_reported_not_dropped(self) -> None:
        def fetch(name: str) -> list[GpuType]:
            if name == "vast":
                raise Unauthorized("no API key for vast", provider="vast")
            if name == "fly":
                raise RuntimeError("module missing")
            return [g for g in CATALOG if g.provider == name]

        df = frames.gpus(provider=["runpod", "vast", "fly"], cache=CatalogCache(fetch))
        assert set(df["provider"]) == {"runpod"}
        assert df.attrs["failures"]["vast"] == "[vast] no API key for vast"
        assert "RuntimeError: module missing" in df.attrs["failures"]["fly"]


class TestCatalogCache:
    def test_ttl_refresh_and_failures_not_cached(self) -> None:
        calls: list[str] = []
        now = [0.0]
        broken = {"vast"}

        def fetch(name: str) -> list[GpuType]:
            calls.append(name)
            if name in broken:
                raise Unauthorized("nope", provider=name)
            return [g for g in CATALOG if g.provider == name]

        cache = CatalogCache(fetch, clock=lambda: now[0])
        first = cache.get(["runpod", "vast"], ttl=60)
        assert sorted(calls) == ["runpod", "vast"] and set(first.failures) == {"vast"}
        now[0] = 59.0
        broken.clear()
        second = cache.get(["runpod", "vast"], ttl=60)
        assert sorted(calls) == ["runpod", "vast", "vast"]  # only the failed one again
        assert not second.failures and len(second.items) == 5
        now[0] = 61.0
        cache.get(["runpod"], ttl=60)
        assert calls.count("runpod") == 2  # expired
        cache.get(["runpod"], ttl=60, refresh=True)
        assert calls.count("runpod") == 3

    def test_a_sandbox_and_the_real_cloud_never_share_entries(self) -> None:
        calls: list[str | None] = []

        def fetch(name: str) -> list[GpuType]:
            calls.append(atlas.sandbox.active_url())
            return []

        cache = CatalogCache(fetch)
        cache.get(["runpod"])
        atlas.sandbox.attach("http://127.0.0.1:9")
        try:
            cache.get(["runpod"])
        finally:
            atlas.sandbox.detach("http://127.0.0.1:9")
        cache.get(["runpod"])
        assert calls == [None, "http://127.0.0.1:9"]


def test_ls_columns_tracked_rows_and_untracked(orch: Any) -> None:
    tracked = orch.spawn(provider="mock", gpu="h100", image="img:1")
    loose = atlas.spawn_compute(provider="mock", gpu="a10", image="img:1")
    computes = atlas.list_compute(provider="mock")
    df = frames.ls(computes, tracked=orch.tracked())
    assert list(df.columns) == ["id", "provider", "name", "status", "gpu", "$/h", "accrued $",
                                "idle for", "tracked"]
    assert df["id"].tolist() == [tracked.id, loose.id]
    assert df["tracked"].tolist() == [True, False]
    row = df.iloc[0]
    assert row["$/h"] == 2.99 and row["accrued $"] >= 0 and row["idle for"].total_seconds() >= 0
    assert math.isnan(df.iloc[1]["accrued $"]) and str(df.iloc[1]["idle for"]) == "NaT"
    assert frames.ls(computes, tracked=orch.tracked(), tracked_only=True)["id"].tolist() == [
        tracked.id]
    assert frames.ls([], tracked=orch.tracked())["id"].tolist() == [tracked.id]
    assert frames.ls(computes, status="terminated").empty


def test_jobs_columns_and_refresh() -> None:
    log = JobLog()
    done = Job(id="j1", endpoint="e", provider="mock", status="completed", output={"x": 1},
               execution_time_ms=12, delay_time_ms=3)
    pending = Job(id="j2", endpoint="e", provider="mock", status="in_queue")
    log.record(done)
    log.record(pending)
    polled: list[str] = []

    def get(job: Job) -> Job:
        polled.append(job.id)
        return job.model_copy(update={"status": "in_progress"})

    df = frames.jobs(log, get=get)
    assert polled == ["j2"]  # finished jobs are not polled again
    assert list(df.columns) == ["id", "provider", "endpoint", "status", "submitted", "finished",
                                "delay_ms", "execution_ms", "chunks", "output", "error"]
    assert df["status"].tolist() == ["completed", "in_progress"]
    assert df.iloc[0]["execution_ms"] == 12 and df.iloc[0]["output"] == {"x": 1}
    assert str(df["submitted"].dtype).startswith("datetime64")
    assert frames.jobs(log, refresh=False)["status"].tolist() == ["completed", "in_progress"]


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def test_stream_throttles_redraws_and_returns_the_complete_frame() -> None:
    clock = FakeClock()
    job = atlas.run_job(provider="mock", endpoint="e", input=1)

    def chunks() -> Any:
        for i in range(250):  # one chunk every 10 ms for 2.5 s
            clock.t += 0.01
            yield {"token": i, "text": f"w{i}"}

    seen: list[tuple[float, int]] = []
    df = frames.stream(job, chunks=chunks(), show=False, log=JobLog(), clock=clock,
                       sleep=clock.sleep, on_frame=lambda f: seen.append((clock.t, len(f))))
    assert len(df) == 250 and df["token"].tolist() == list(range(250))
    assert list(df.columns[:2]) == ["seq", "t_s"]
    assert seen[-1][1] == 250  # the last redraw shows everything
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen)]
    assert min(gaps) >= 0.1 - 1e-9  # never more than 10 redraws per second
    assert 20 <= len(seen) <= 27


def test_stream_of_scalars_uses_a_chunk_column() -> None:
    job = atlas.run_job(provider="mock", endpoint="e", input=1)
    df = frames.stream(job, chunks=iter(["a", "b"]), show=False, log=JobLog())
    assert df.columns.tolist() == ["seq", "t_s", "chunk"] and df["chunk"].tolist() == ["a", "b"]
    empty = frames.stream(job, chunks=iter([]), show=False, log=JobLog())
    assert empty.empty and "chunk" in empty.columns


def test_ctrl_c_during_stream_cancels_the_remote_job(box: Any) -> None:
    job = atlas.run_job(provider="runpod", endpoint="slow", input={"seconds": 30})

    def chunks() -> Any:
        yield "first"
        raise KeyboardInterrupt

    log = JobLog()
    with pytest.raises(KeyboardInterrupt):
        frames.stream(job, chunks=chunks(), show=False, log=log)
    assert box.runpod.job("slow", job.id)["status"] == "CANCELLED"
    assert log.entries()[0].job.status == "cancelled"


def test_ctrl_c_while_waiting_for_a_sync_run_cancels_it(box: Any) -> None:
    job = atlas.run_job(provider="runpod", endpoint="slow", input={"seconds": 30})

    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wait_job(job, timeout_s=60, sleep=interrupted)
    assert box.runpod.job("slow", job.id)["status"] == "CANCELLED"


def _interrupt_soon(delay: float = 0.5) -> threading.Timer:
    """A real Ctrl-C: SIGINT to this process, delivered to the main thread."""
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.parametrize("line", ["run --provider runpod -e slow --sync -o j",
                                  "run --provider runpod -e slow --stream -o j"])
def test_ctrl_c_in_the_magic_cancels_the_remote_job(ip, box: Any, line: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT reaches only the main thread")
    timer = _interrupt_soon()
    try:
        with pytest.raises(KeyboardInterrupt):
            ip.run_cell_magic("atlas", line, '{"seconds": 30}')
    finally:
        timer.cancel()
    job = ip.user_ns["j"]
    assert box.runpod.job("slow", job.id)["status"] == "CANCELLED"
