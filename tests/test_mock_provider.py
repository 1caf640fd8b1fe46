"""providers/mock.py: realistic state changes in memory, thread safe, no network."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import atlas_nb
from atlas_nb import CAPABILITIES, ComputeRequest, JobRequest, Provider
from atlas_nb.gpus import GPUS
from atlas_nb.providers.mock import MockProvider


@pytest.fixture
def mock() -> MockProvider:
    return MockProvider()


def spawn(mock: MockProvider, **kw: Any) -> atlas_nb.Compute:
    return mock.spawn_compute(ComputeRequest(**{"image": "img:1", **kw}))


class TestComputes:
    def test_is_a_provider(self, mock: MockProvider) -> None:
        assert isinstance(mock, Provider)
        assert mock.name == "mock"
        assert repr(mock) == "MockProvider()"
        assert MockProvider(api_key="ignored", base_url="x", http=None).name == "mock"

    def test_capabilities_are_known_names(self, mock: MockProvider) -> None:
        caps = mock.capabilities()
        assert caps <= CAPABILITIES
        assert {"stop_start", "serverless", "spot"} <= caps

    def test_spawn_runs_immediately_by_default(self, mock: MockProvider) -> None:
        c = spawn(mock, gpu="h100", gpu_count=2, ports=[(8000, "http"), (22, "tcp")],
                  name="atlas-x", region_hints=["eu-1"])
        assert c.status == "running" and c.ready
        assert c.provider == "mock" and c.name == "atlas-x" and c.region == "eu-1"
        assert c.gpu_type == "h100" and c.gpu_count == 2
        assert c.cost_per_hour == pytest.approx(2 * 2.99)
        assert c.url == f"https://{c.id}-8000.mock.local"
        tcp = next(p for p in c.ports if p.protocol == "tcp")
        assert tcp.url == "tcp://203.0.113.7:40022" and tcp.external == 40022
        assert c.created_at is not None and c.created_at.tzinfo is not None

    def test_spot_and_cpu_prices(self, mock: MockProvider) -> None:
        assert spawn(mock, gpu="h100_sxm", spot=True).cost_per_hour == pytest.approx(1.99)
        assert spawn(mock, gpu="a10", spot=True).cost_per_hour == pytest.approx(0.6)  # no spot
        cpu = spawn(mock)
        assert cpu.gpu_type is None and cpu.gpu_count == 0 and cpu.cost_per_hour > 0

    def test_provisioning_until_the_delay_passes(self, mock: MockProvider,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(MockProvider, "provision_delay_s", 3600.0)
        c = spawn(mock, ports=[8000])
        assert c.status == "provisioning" and not c.ready
        assert c.ports[0].url is None
        assert mock.get_compute(c.id).status == "provisioning"

    def test_get_and_unknown_ids(self, mock: MockProvider) -> None:
        c = spawn(mock)
        assert mock.get_compute(c.id) == c
        with pytest.raises(atlas_nb.NotFound) as info:
            mock.get_compute("mock-nope")
        assert info.value.provider == "mock" and "mock-nope" in info.value.message
        with pytest.raises(atlas_nb.ValidationError):
            mock.get_compute("")
        for op in (mock.stop, mock.start):
            with pytest.raises(atlas_nb.NotFound):
                op("mock-nope")

    def test_list_filters(self, mock: MockProvider, monkeypatch: pytest.MonkeyPatch) -> None:
        a = spawn(mock, gpu="h100_sxm", name="atlas-a", region_hints="us-1")
        b = spawn(mock, gpu="l40s", name="atlas-b", region_hints="eu-1")
        c = spawn(mock, name="other-c")
        monkeypatch.setattr(MockProvider, "provision_delay_s", 3600.0)
        d = spawn(mock, gpu="h100_pcie", name="atlas-d")
        ids = lambda cs: {x.id for x in cs}  # noqa: E731
        assert ids(mock.list_compute()) == {a.id, b.id, c.id, d.id}
        assert ids(mock.list_compute(name="atlas-")) == {a.id, b.id, d.id}
        assert ids(mock.list_compute(status="running")) == {a.id, b.id, c.id}
        assert ids(mock.list_compute(status="provisioning")) == {d.id}
        assert ids(mock.list_compute(gpu="l40s")) == {b.id}
        assert ids(mock.list_compute(region="eu-1")) == {b.id}
        assert ids(mock.list_compute(name="atlas-", status="running", region="us-1")) == {a.id}
        assert mock.list_compute(name="zzz") == []

    def test_stop_start(self, mock: MockProvider) -> None:
        c = spawn(mock)
        assert mock.stop(c.id).status == "stopped"
        assert mock.get_compute(c.id).status == "stopped"
        assert mock.stop(c.id).status == "stopped"  # stopping a stopped compute is fine
        assert mock.start(c.id).status == "running"
        assert mock.start(c.id).status == "running"

    def test_cannot_stop_a_provisioning_or_terminated_compute(
        self, mock: MockProvider, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(MockProvider, "provision_delay_s", 3600.0)
        c = spawn(mock)
        with pytest.raises(atlas_nb.ProviderError) as info:
            mock.stop(c.id)
        assert info.value.status == 409
        mock.terminate(c.id)
        with pytest.raises(atlas_nb.ProviderError):
            mock.start(c.id)

    def test_terminate_is_idempotent(self, mock: MockProvider) -> None:
        c = spawn(mock, gpu="h100")
        assert mock.terminate(c.id) is None
        assert mock.terminate(c.id) is None
        assert mock.terminate("never-existed") is None
        gone = mock.get_compute(c.id)
        assert gone.status == "terminated" and gone.cost_per_hour == 0.0

    def test_pod_env_is_what_the_container_sees(self, mock: MockProvider) -> None:
        c = spawn(mock, env={"MODEL": "llama", "N": 2})
        assert MockProvider.pod_env(c.id) == {"MODEL": "llama", "N": "2"}
        assert "llama" not in repr(c) and "MODEL" not in str(c.raw)
        with pytest.raises(atlas_nb.NotFound):
            MockProvider.pod_env("nope")

    def test_reset_forgets_everything(self, mock: MockProvider) -> None:
        c = spawn(mock)
        job = mock.run_job(JobRequest(endpoint="e"))
        MockProvider.reset()
        assert mock.list_compute() == []
        with pytest.raises(atlas_nb.NotFound):
            mock.get_compute(c.id)
        with pytest.raises(atlas_nb.NotFound):
            mock.get_job(job.id, endpoint="e")

    def test_state_is_shared_across_instances(self) -> None:
        c = spawn(MockProvider())
        assert MockProvider().get_compute(c.id).id == c.id

    def test_many_threads_spawn_unique_ids(self, mock: MockProvider) -> None:
        out: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(16)

        def worker() -> None:
            start.wait()
            mine = [spawn(mock, name="t").id for _ in range(25)]
            mine += [mock.run_job(JobRequest(endpoint="e")).id for _ in range(5)]
            with lock:
                out.extend(mine)

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(out) == 16 * 30
        assert len(set(out)) == len(out)
        assert len(mock.list_compute(name="t")) == 16 * 25


class TestJobs:
    def test_async_job_progresses_over_polls(self, mock: MockProvider) -> None:
        job = mock.run_job(JobRequest(endpoint="ep", input={"prompt": "hi"}))
        assert job.status == "in_queue" and not job.done
        assert job.endpoint == "ep" and job.provider == "mock"
        first = mock.get_job(job.id, endpoint="ep")
        assert first.status == "in_progress"
        second = mock.get_job(job.id, endpoint="ep")
        assert second.status == "completed" and second.done
        assert second.output == {"echo": {"prompt": "hi"}}
        assert second.execution_time_ms is not None and second.delay_time_ms is not None
        assert mock.get_job(job.id, endpoint="ep") == second  # final: no more changes

    def test_sync_job_returns_completed(self, mock: MockProvider) -> None:
        job = mock.run_job(JobRequest(endpoint="ep", input=[1, 2], mode="sync",
                                      timeout_ms=10_000))
        assert job.status == "completed" and job.output == {"echo": [1, 2]}

    def test_unknown_job_or_endpoint(self, mock: MockProvider) -> None:
        job = mock.run_job(JobRequest(endpoint="ep"))
        with pytest.raises(atlas_nb.NotFound):
            mock.get_job("job-nope", endpoint="ep")
        with pytest.raises(atlas_nb.NotFound):
            mock.get_job(job.id, endpoint="other-ep")
        with pytest.raises(atlas_nb.NotFound):
            mock.cancel_job("job-nope", endpoint="ep")
        with pytest.raises(atlas_nb.NotFound):
            mock.stream_job("job-nope", endpoint="ep")

    def test_cancel_queued(self, mock: MockProvider) -> None:
        job = mock.run_job(JobRequest(endpoint="ep"))
        assert mock.cancel_job(job.id, endpoint="ep").status == "cancelled"
        assert mock.get_job(job.id, endpoint="ep").status == "cancelled"

    def test_cancel_running(self, mock: MockProvider) -> None:
        job = mock.run_job(JobRequest(endpoint="ep"))
        assert mock.get_job(job.id, endpoint="ep").status == "in_progress"
        assert mock.cancel_job(job.id, endpoint="ep").status == "cancelled"
        assert mock.get_job(job.id, endpoint="ep").status == "cancelled"

    def test_cancel_after_completion_changes_nothing(self, mock: MockProvider) -> None:
        job = mock.run_job(JobRequest(endpoint="ep", mode="sync"))
        assert mock.cancel_job(job.id, endpoint="ep").status == "completed"

    def test_stream_yields_chunks_then_ends(self, mock: MockProvider) -> None:
        job = mock.run_job(JobRequest(endpoint="ep", input="x"))
        chunks = list(mock.stream_job(job.id, endpoint="ep"))
        assert chunks == [{"token": i, "echo": "x"} for i in range(3)]
        assert mock.get_job(job.id, endpoint="ep").status == "completed"

    def test_stream_of_a_cancelled_job_raises(self, mock: MockProvider) -> None:
        job = mock.run_job(JobRequest(endpoint="ep"))
        stream = mock.stream_job(job.id, endpoint="ep")
        assert next(stream) == {"token": 0, "echo": None}
        mock.cancel_job(job.id, endpoint="ep")
        with pytest.raises(atlas_nb.ProviderError, match="cancelled"):
            next(stream)

    def test_cancel_after_the_last_chunk_still_raises(self, mock: MockProvider) -> None:
        job = mock.run_job(JobRequest(endpoint="ep"))
        stream = mock.stream_job(job.id, endpoint="ep")
        assert len([next(stream) for _ in range(3)]) == 3
        mock.cancel_job(job.id, endpoint="ep")
        with pytest.raises(atlas_nb.ProviderError, match="cancelled"):
            next(stream)


def test_catalog_has_prices_and_canonical_names(mock: MockProvider) -> None:
    gpus = mock.list_gpu_types()
    assert len(gpus) >= 5
    for g in gpus:
        assert g.provider == "mock"
        assert g.canonical in GPUS and g.id == g.canonical
        assert g.price_per_hour is not None and g.price_per_hour > 0
        assert g.spot_price_per_hour is None or 0 < g.spot_price_per_hour < g.price_per_hour
        assert g.display_name == GPUS[g.canonical].display
        assert g.memory_gb == GPUS[g.canonical].memory_gb
    assert {"h100", "a100_80g"} <= {g.canonical for g in gpus}
