"""facade.py: the module-level API over the mock and over user-defined providers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import atlas_nb
from atlas_nb import Compute, ComputeRequest, Job, JobRequest, PortMapping
from atlas_nb import providers as registry
from atlas_nb.auth import token_valid
from atlas_nb.providers.mock import MockProvider

Sleeps = list[float]  # the conftest `sleeps` fixture: records, never sleeps


class Minimal:
    """A user's own provider: no base class, only the core methods (duck typing)."""

    name = "minimal"

    def __init__(self) -> None:
        self.computes: dict[str, Compute] = {}

    def capabilities(self) -> frozenset[str]:
        return frozenset()

    def spawn_compute(self, request: ComputeRequest) -> Compute:
        c = Compute(id=f"min-{len(self.computes)}", provider=self.name, status="running",
                    image=request.image, name=request.name)
        self.computes[c.id] = c
        return c

    def get_compute(self, compute_id: str) -> Compute:
        if compute_id not in self.computes:
            raise atlas_nb.NotFound(f"no {compute_id}", provider=self.name)
        return self.computes[compute_id]

    def list_compute(self, **filters: Any) -> list[Compute]:
        return list(self.computes.values())

    def terminate(self, compute_id: str) -> None:
        self.computes.pop(compute_id, None)


class Scripted(Minimal):
    """get_compute walks through a script of statuses (the last one repeats)."""

    name = "scripted"

    def __init__(self, *statuses: str, ports: tuple[PortMapping, ...] = (),
                 reachable: bool = True) -> None:
        super().__init__()
        self.script = list(statuses)
        self.ports = ports
        self.reachable = reachable
        self.polls = 0

    def get_compute(self, compute_id: str) -> Compute:
        status = self.script[min(self.polls, len(self.script) - 1)]
        self.polls += 1
        ports = tuple(p.model_copy(update={"url": f"https://{compute_id}-{p.internal}.x"})
                      if status == "running" and self.reachable else p for p in self.ports)
        return Compute(id=compute_id, provider=self.name, status=status, ports=ports,
                       raw={"state": status})


class Interrupted(MockProvider):
    """The mock, except that its stream is interrupted by Ctrl-C after the first chunk."""

    cancels: list[tuple[str, str]]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.cancels = []

    def stream_job(self, job_id: str, *, endpoint: str) -> Iterator[Any]:
        inner = super().stream_job(job_id, endpoint=endpoint)

        def chunks() -> Iterator[Any]:
            yield next(inner)
            raise KeyboardInterrupt

        return chunks()

    def cancel_job(self, job_id: str, *, endpoint: str) -> Job:
        self.cancels.append((job_id, endpoint))
        return super().cancel_job(job_id, endpoint=endpoint)


class TestProviderArgument:
    @pytest.mark.parametrize("provider", ["mock", "MOCK", MockProvider, MockProvider()],
                             ids=["name", "name-case", "class", "instance"])
    def test_name_class_or_instance(self, provider: Any) -> None:
        c = atlas_nb.spawn_compute(provider=provider, image="img:1")
        assert c.provider == "mock"
        assert atlas_nb.get_compute(c.id, provider=provider).id == c.id
        assert "stop_start" in atlas_nb.capabilities(provider)

    def test_duck_typed_class_and_instance(self) -> None:
        c = atlas_nb.spawn_compute(provider=Minimal, image="img:1", name="mine")
        assert (c.provider, c.name) == ("minimal", "mine")
        inst = Minimal()
        c = atlas_nb.spawn_compute(provider=inst, image="img:1")
        assert atlas_nb.get_compute(c.id, provider=inst) == c
        assert atlas_nb.list_compute(provider=inst) == [c]
        assert atlas_nb.capabilities(inst) == frozenset()

    @pytest.mark.parametrize(
        ("call", "op"),
        [(lambda p: atlas_nb.stop("x", provider=p), "stop"),
         (lambda p: atlas_nb.start("x", provider=p), "start"),
         (lambda p: atlas_nb.run_job(provider=p, endpoint="e"), "run_job"),
         (lambda p: atlas_nb.get_job("j", endpoint="e", provider=p), "get_job"),
         (lambda p: atlas_nb.cancel_job("j", endpoint="e", provider=p), "cancel_job"),
         (lambda p: atlas_nb.stream_job("j", endpoint="e", provider=p), "stream_job"),
         (lambda p: atlas_nb.list_gpu_types(provider=p), "list_gpu_types")],
        ids=["stop", "start", "run_job", "get_job", "cancel_job", "stream_job", "catalog"],
    )
    def test_missing_optional_ops_are_unsupported(self, call: Any, op: str) -> None:
        with pytest.raises(atlas_nb.Unsupported) as info:
            call(Minimal())
        assert info.value.provider == "minimal"
        assert op in info.value.message

    def test_class_gets_only_the_options_it_accepts(self) -> None:
        seen: dict[str, Any] = {}

        class TakesKey(Minimal):
            def __init__(self, api_key: str | None = None) -> None:
                super().__init__()
                seen["api_key"] = api_key

        atlas_nb.spawn_compute(provider=TakesKey, api_key="k-123", base_url="http://x",
                               image="img")
        assert seen == {"api_key": "k-123"}

    def test_not_a_provider(self) -> None:
        class Half:
            name = "half"

            def capabilities(self) -> frozenset[str]:
                return frozenset()

        with pytest.raises(atlas_nb.ValidationError) as info:
            atlas_nb.list_compute(provider=Half())
        msg = str(info.value)
        assert "Half is not an atlas_nb Provider" in msg
        assert "spawn_compute" in msg and "terminate" in msg

    def test_unknown_name_lists_the_known_ones(self) -> None:
        with pytest.raises(atlas_nb.ValidationError) as info:
            atlas_nb.list_compute(provider="azure")
        msg = str(info.value)
        assert "'azure'" in msg
        for name in ("fly", "lambda_labs", "mock", "runpod", "vast"):
            assert name in msg

    def test_register_a_name(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(registry, "_custom", {})  # keep the registry clean for other tests
        atlas_nb.register("mine", Minimal)
        c = atlas_nb.spawn_compute(provider="mine", image="img:1")
        assert c.provider == "minimal"


class TestComputeLifecycle:
    def test_spawn_get_list_stop_start_terminate(self, events: list[Any]) -> None:
        c = atlas_nb.spawn_compute(provider="mock", gpu="H100-SXM", image="img:1",
                                   ports=[(8000, "http")], name="atlas-demo")
        assert c.gpu_type == "h100_sxm" and c.status == "running"
        assert atlas_nb.get_compute(c.id, provider="mock") == c
        assert [x.id for x in atlas_nb.list_compute(provider="mock", status="running")] == [c.id]
        assert atlas_nb.list_compute(provider="mock", status="stopped") == []
        assert atlas_nb.stop(c.id, provider="mock").status == "stopped"
        assert [x.id for x in atlas_nb.list_compute(provider="mock", status="stopped")] == [c.id]
        assert atlas_nb.start(c.id, provider="mock").status == "running"
        assert atlas_nb.terminate(c.id, provider="mock") is None
        assert atlas_nb.terminate(c.id, provider="mock") is None  # idempotent
        assert atlas_nb.terminate("mock-never", provider="mock") is None
        assert atlas_nb.get_compute(c.id, provider="mock").status == "terminated"
        names = [e for e, _ in events]
        assert names == ["compute.spawn", "compute.get", "compute.stop", "compute.start",
                         "compute.terminate", "compute.terminate", "compute.terminate",
                         "compute.get"]

    def test_list_filters(self) -> None:
        a = atlas_nb.spawn_compute(provider="mock", gpu="h100", image="i", name="atlas-1")
        b = atlas_nb.spawn_compute(provider="mock", gpu="l40s", image="i", name="atlas-2",
                                   region_hints="eu-1")
        atlas_nb.spawn_compute(provider="mock", image="i", name="scratch")
        assert {c.id for c in atlas_nb.list_compute(provider="mock", name="atlas-")} == {
            a.id, b.id}
        assert [c.id for c in atlas_nb.list_compute(provider="mock", gpu="L40S")] == [b.id]
        assert [c.id for c in atlas_nb.list_compute(provider="mock", region="eu-1")] == [b.id]
        with pytest.raises(atlas_nb.ValidationError, match="unknown GPU"):
            atlas_nb.list_compute(provider="mock", gpu="l4000")

    def test_spawn_from_a_request_with_overrides(self) -> None:
        req = ComputeRequest(gpu="a10", image="img:1", ports=["8000/http"], env={"A": 1})
        c = atlas_nb.spawn_compute(req, provider="mock", name="over", gpu_count=2)
        assert (c.name, c.gpu_type, c.gpu_count) == ("over", "a10", 2)
        assert MockProvider.pod_env(c.id) == {"A": "1"}
        assert atlas_nb.spawn_compute(req, provider="mock").gpu_count == 1

    def test_bad_fields_fail_before_anything_is_sent(self) -> None:
        with pytest.raises(atlas_nb.ValidationError, match=r"ComputeRequest\.gpu_count"):
            atlas_nb.spawn_compute(provider="mock", image="img", gpu_count=0)
        assert atlas_nb.list_compute(provider="mock") == []

    def test_unknown_ids_raise_not_found(self) -> None:
        for call in (atlas_nb.get_compute, atlas_nb.stop, atlas_nb.start):
            with pytest.raises(atlas_nb.NotFound):
                call("mock-missing", provider="mock")
        with pytest.raises(atlas_nb.NotFound):
            atlas_nb.get_job("job-missing", endpoint="e", provider="mock")
        with pytest.raises(atlas_nb.NotFound):
            atlas_nb.cancel_job("job-missing", endpoint="e", provider="mock")
        with pytest.raises(atlas_nb.NotFound):
            atlas_nb.stream_job("job-missing", endpoint="e", provider="mock")

    def test_catalog(self) -> None:
        gpus = atlas_nb.list_gpu_types(provider="mock")
        assert gpus and all(g.price_per_hour and g.price_per_hour > 0 for g in gpus)
        assert all(g.canonical in atlas_nb.gpus.GPUS for g in gpus)

    def test_many_threads_through_the_facade(self) -> None:
        ids: list[str] = []
        lock = threading.Lock()

        def worker() -> None:
            got = [atlas_nb.spawn_compute(provider="mock", image="i").id for _ in range(20)]
            with lock:
                ids.extend(got)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(ids) == len(set(ids)) == 160


class TestAuth:
    def test_bearer_token_goes_to_the_pod_env_and_nowhere_else(self, events: list[Any]
                                                               ) -> None:
        c = atlas_nb.spawn_compute(provider="mock", image="img:1", auth="bearer",
                                   env={"MODEL": "m"}, ports=[(8000, "http")])
        assert c.auth is not None and c.auth.scheme == "bearer"
        token = c.auth.token
        assert len(token) >= 40
        env = MockProvider.pod_env(c.id)
        assert env == {"MODEL": "m", "ATLAS_PRESHARED_KEY": token}
        assert c.auth.hash is not None and token_valid(token, c.auth.hash)
        assert not token_valid(token + "x", c.auth.hash)
        assert c.auth.headers() == {"Authorization": f"Bearer {token}"}
        for text in (repr(c), str(c), repr(c.raw), c._repr_html_(), repr(events)):
            assert token not in text
        # a later get does not hand the token out again
        again = atlas_nb.get_compute(c.id, provider="mock")
        assert again.auth is None and token not in repr(again.raw)

    def test_each_spawn_mints_a_new_token(self) -> None:
        a = atlas_nb.spawn_compute(provider="mock", image="i", auth="bearer")
        b = atlas_nb.spawn_compute(provider="mock", image="i", auth="bearer")
        assert a.auth is not None and b.auth is not None
        assert a.auth.token != b.auth.token

    def test_signed_url_secret_goes_to_the_pod_env(self) -> None:
        c = atlas_nb.spawn_compute(provider="mock", image="img:1", auth="signed_url")
        assert c.auth is not None and c.auth.scheme == "signed_url"
        assert MockProvider.pod_env(c.id) == {"ATLAS_SIGNING_SECRET": c.auth.token}
        assert c.auth.token not in repr(c)

    def test_no_auth(self) -> None:
        c = atlas_nb.spawn_compute(provider="mock", image="img:1")
        assert c.auth is None
        assert MockProvider.pod_env(c.id) == {}


class TestWaitReady:
    def test_mock_with_a_provisioning_delay(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(MockProvider, "provision_delay_s", 0.4)
        naps: list[float] = []

        def nap(seconds: float) -> None:  # record, and let a little real time pass
            naps.append(seconds)
            time.sleep(min(seconds, 0.05))

        c = atlas_nb.spawn_compute(provider="mock", image="img:1", ports=[(8000, "http")])
        assert c.status == "provisioning"
        seen: list[str] = []
        ready = atlas_nb.wait_ready(c.id, provider="mock", timeout_s=60, poll_s=0.1,
                                    sleep=nap, on_progress=lambda x: seen.append(x.status))
        assert ready.status == "running" and ready.ready
        assert ready.url == f"https://{c.id}-8000.mock.local"
        assert seen[0] == "provisioning" and seen[-1] == "running"
        assert naps and all(0 < n <= 0.5 for n in naps)

    def test_polls_with_bounded_growing_delays(self, sleeps: Sleeps) -> None:
        p = Scripted(*["provisioning"] * 6, "running", ports=(PortMapping(internal=8000),))
        seen: list[str] = []
        ready = atlas_nb.wait_ready("s-1", provider=p, timeout_s=600, poll_s=1.0, sleep=sleeps,
                                    on_progress=lambda c: seen.append(c.status))
        assert ready.ready and ready.url == "https://s-1-8000.x"
        assert seen == ["provisioning"] * 6 + ["running"]
        assert len(sleeps) == 6
        assert sleeps == sorted(sleeps)  # backs off
        assert sleeps[0] <= 1.0 and max(sleeps) <= 5.0

    def test_running_without_reachable_ports_is_not_ready(self, sleeps: Sleeps) -> None:
        p = Scripted("running", ports=(PortMapping(internal=8000),), reachable=False)
        with pytest.raises(atlas_nb.Timeout, match="status running"):
            atlas_nb.wait_ready("s-1", provider=p, timeout_s=0, sleep=sleeps)
        assert p.polls == 1

    def test_timeout_at_the_deadline(self, monkeypatch: pytest.MonkeyPatch,
                                     sleeps: Sleeps) -> None:
        monkeypatch.setattr(MockProvider, "provision_delay_s", 3600.0)
        c = atlas_nb.spawn_compute(provider="mock", image="img:1")
        with pytest.raises(atlas_nb.Timeout) as info:
            atlas_nb.wait_ready(c.id, provider="mock", timeout_s=0, sleep=sleeps)
        err = info.value
        assert "not ready after 0s (status provisioning)" in err.message
        assert err.provider == "mock" and err.hint and "timeout_s" in err.hint
        assert sleeps == []

    def test_timeout_after_some_polls(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(MockProvider, "provision_delay_s", 3600.0)
        c = atlas_nb.spawn_compute(provider="mock", image="img:1")
        naps: list[float] = []

        def nap(seconds: float) -> None:
            naps.append(seconds)
            time.sleep(min(seconds, 0.02))

        with pytest.raises(atlas_nb.Timeout):
            atlas_nb.wait_ready(c.id, provider="mock", timeout_s=0.15, poll_s=0.05, sleep=nap)
        assert naps and all(n <= 0.15 for n in naps)

    @pytest.mark.parametrize("final", ["terminated", "failed"])
    def test_fails_fast_when_it_will_never_be_ready(self, sleeps: Sleeps, final: str) -> None:
        p = Scripted("provisioning", final)
        with pytest.raises(atlas_nb.ProviderError) as info:
            atlas_nb.wait_ready("s-1", provider=p, timeout_s=600, sleep=sleeps)
        assert final in info.value.message
        assert info.value.raw == {"state": final}
        assert len(sleeps) == 1

    def test_terminated_mock_compute(self, monkeypatch: pytest.MonkeyPatch,
                                     sleeps: Sleeps) -> None:
        monkeypatch.setattr(MockProvider, "provision_delay_s", 3600.0)
        c = atlas_nb.spawn_compute(provider="mock", image="img:1")
        atlas_nb.terminate(c.id, provider="mock")
        with pytest.raises(atlas_nb.ProviderError, match="terminated"):
            atlas_nb.wait_ready(c.id, provider="mock", sleep=sleeps)

    def test_unknown_id(self, sleeps: Sleeps) -> None:
        with pytest.raises(atlas_nb.NotFound):
            atlas_nb.wait_ready("mock-nope", provider="mock", sleep=sleeps)


class TestJobs:
    def test_run_poll_complete(self, events: list[Any]) -> None:
        job = atlas_nb.run_job(provider="mock", endpoint="abc123", input={"prompt": "hi"})
        assert job.status == "in_queue"
        statuses = [atlas_nb.get_job(job.id, provider="mock", endpoint="abc123").status,
                    atlas_nb.get_job(job).status]  # the Job carries provider and endpoint
        assert statuses == ["in_progress", "completed"]
        done = atlas_nb.get_job(job)
        assert done.output == {"echo": {"prompt": "hi"}}
        assert ("job.run", {"provider": "mock", "id": job.id, "endpoint": "abc123",
                            "mode": "async", "status": "in_queue"}) in events

    def test_sync_mode(self) -> None:
        job = atlas_nb.run_job(provider="mock", endpoint="e", input=1, mode="sync",
                               timeout_ms=60_000)
        assert job.status == "completed"

    def test_run_from_a_request(self) -> None:
        job = atlas_nb.run_job(JobRequest(endpoint="e", input="x"), provider="mock")
        assert job.endpoint == "e"

    def test_id_without_endpoint_is_a_validation_error(self) -> None:
        with pytest.raises(atlas_nb.ValidationError, match="endpoint"):
            atlas_nb.get_job("job-1", provider="mock")

    def test_cancel_queued_and_running(self) -> None:
        queued = atlas_nb.run_job(provider="mock", endpoint="e")
        assert atlas_nb.cancel_job(queued).status == "cancelled"
        running = atlas_nb.run_job(provider="mock", endpoint="e")
        assert atlas_nb.get_job(running).status == "in_progress"
        assert atlas_nb.cancel_job(running.id, provider="mock", endpoint="e").status == (
            "cancelled")
        assert atlas_nb.get_job(running).status == "cancelled"

    def test_stream_yields_several_chunks_then_ends(self) -> None:
        job = atlas_nb.run_job(provider="mock", endpoint="e", input="p")
        chunks = list(atlas_nb.stream_job(job))
        assert len(chunks) == 3 and [c["token"] for c in chunks] == [0, 1, 2]
        assert atlas_nb.get_job(job).status == "completed"

    def test_stream_of_a_cancelled_job_raises(self) -> None:
        job = atlas_nb.run_job(provider="mock", endpoint="e")
        atlas_nb.cancel_job(job)
        with pytest.raises(atlas_nb.ProviderError, match="cancelled"):
            list(atlas_nb.stream_job(job))

    def test_ctrl_c_during_a_stream_cancels_the_job_and_reraises(self) -> None:
        p = Interrupted()
        job = atlas_nb.run_job(provider=p, endpoint="e", input="p")
        got: list[Any] = []
        with pytest.raises(KeyboardInterrupt):
            for chunk in atlas_nb.stream_job(job, provider=p):
                got.append(chunk)
        assert len(got) == 1
        assert p.cancels == [(job.id, "e")]
        assert atlas_nb.get_job(job, provider="mock").status == "cancelled"

    def test_ctrl_c_still_propagates_when_the_cancel_fails(self) -> None:
        class CancelFails(Interrupted):
            def cancel_job(self, job_id: str, *, endpoint: str) -> Job:
                super().cancel_job(job_id, endpoint=endpoint)
                raise atlas_nb.TransportError("network down", provider="mock")

        p = CancelFails()
        job = atlas_nb.run_job(provider=p, endpoint="e")
        with pytest.raises(KeyboardInterrupt):
            list(atlas_nb.stream_job(job, provider=p))
        assert p.cancels == [(job.id, "e")]
