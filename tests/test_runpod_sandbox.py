"""The RunPod provider against the sandbox's RunPod cloud over loopback: faults, jobs, spot,
parallel spawns. Contract validation is on except for the 200-create fault runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import atlas_nb as atlas
from atlas_nb import sandbox
from atlas_nb.facade import spawn_many
from atlas_nb.providers.runpod import RunPod
from atlas_nb.sandbox.server import Sandbox

IMAGE = "atlas/test:1"


def _no_sleep(_: float) -> None:
    pass


def _interrupt(_: float) -> None:
    raise KeyboardInterrupt


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with sandbox.start(provision_delay_s=0.05, start_delay_s=0.05) as box:
        yield box
        assert box.violations == [], "\n".join(box.violations)


@pytest.fixture(autouse=True)
def _no_faults(sb: Sandbox) -> Iterator[None]:
    yield
    sb.faults.clear()


# -- no duplicate pods ------------------------------------------------------------------------
def test_200_creates_with_lost_answers_make_no_duplicates_and_lose_none() -> None:
    with sandbox.start(validate=False, seed=11, provision_delay_s=0.05) as box:
        rule = box.faults("runpod/rest:POST /v2/pods", lost_response_rate=0.3)
        computes = spawn_many(count=200, provider=RunPod(sleep=_no_sleep), gpu="rtx_4090",
                              image=IMAGE)
        returned = [c.id for c in computes]
        assert len(set(returned)) == 200, "two spawns returned the same pod"
        assert set(box.runpod.pods) == set(returned), (
            f"duplicates: {len(box.runpod.pods) - 200}" if len(box.runpod.pods) > 200
            else "pods created but not returned")
        assert rule.injected["lost"] >= 40, f"too few faults to prove anything: {rule!r}"
        assert box.stats()["routes"]["runpod/rest POST /v2/pods"] == 200  # no create replayed


def test_drops_and_5xx_are_retried_without_duplicates() -> None:
    with sandbox.start(validate=False, seed=5, provision_delay_s=0.05) as box:
        rule = box.faults("runpod/rest:POST /v2/pods", drop_rate=0.15, lost_response_rate=0.15,
                          error_rate={503: 0.15, 500: 0.05})
        rp = RunPod(sleep=_no_sleep)
        returned, failures = [], 0
        for _ in range(100):
            try:
                returned.append(rp.spawn_compute(atlas.ComputeRequest(gpu="rtx_4090",
                                                                      image=IMAGE)).id)
            except atlas.AtlasError:
                failures += 1  # three refusals in a row: allowed, as long as nothing was made
        assert len(set(returned)) == len(returned)
        assert set(box.runpod.pods) == set(returned)
        assert len(returned) >= 90 and {"drop", "lost", 503}.issubset(rule.injected), rule


# -- pods -------------------------------------------------------------------------------------
def test_tcp_port_gets_its_public_address_once_running(sb: Sandbox) -> None:
    c = atlas.spawn_compute(provider="runpod", gpu="rtx_4090", image=IMAGE,
                            ports=[(8000, "http"), (22, "tcp")])
    try:
        assert [p.url for p in c.ports][1] is None
        ready = atlas.wait_ready(c.id, provider="runpod", timeout_s=10)
        live = {p["private"]: p for p in sb.runpod.pods[c.id]["runtime"]["ports"]}
        http, tcp = ready.ports
        assert http.url == f"https://{c.id}-8000.proxy.runpod.net"
        assert tcp.url == f"tcp://{live[22]['ip']}:{live[22]['public']}"
        assert ready.public_ip == live[22]["ip"]
    finally:
        atlas.terminate(c.id, provider="runpod")


def test_secrets_reach_the_pod_but_never_raw(sb: Sandbox) -> None:
    c = atlas.spawn_compute(provider="runpod", gpu="rtx_4090", image=IMAGE, auth="bearer",
                            env={"HF_TOKEN": "hf_never_in_raw_123"})
    try:
        assert c.auth is not None
        env = sb.runpod.pod_env(c.id)
        assert env["ATLAS_PRESHARED_KEY"] == c.auth.token
        assert env["HF_TOKEN"] == "hf_never_in_raw_123" and env["ATLAS_REQUEST_ID"]
        listed = [x for x in atlas.list_compute(provider="runpod") if x.id == c.id]
        for seen in (c, atlas.get_compute(c.id, provider="runpod"), *listed):
            text = json.dumps(seen.raw) + repr(seen)
            assert "hf_never_in_raw" not in text and c.auth.token not in text
    finally:
        atlas.terminate(c.id, provider="runpod")


def test_list_filters_against_the_cloud(sb: Sandbox) -> None:
    a = atlas.spawn_compute(provider="runpod", gpu="rtx_4090", image=IMAGE, name="flt-a",
                            region_hints=["EU-RO-1"])
    b = atlas.spawn_compute(provider="runpod", gpu="a6000", image=IMAGE, name="flt-b")
    try:
        def names(**kw: Any) -> set[str | None]:
            return {c.name for c in atlas.list_compute(provider="runpod", name="flt-", **kw)}

        assert names() == {"flt-a", "flt-b"}
        assert names(gpu="rtx_4090") == {"flt-a"} and names(gpu="a6000") == {"flt-b"}
        assert names(region=a.region) >= {"flt-a"} and a.region == "EU-RO-1"
        atlas.wait_ready(a.id, provider="runpod", timeout_s=10)
        assert "flt-a" in names(status="running") and names(status="stopped") == set()
        atlas.terminate(b.id, provider="runpod")
        assert names() == {"flt-a"}  # a terminated pod leaves the list
    finally:
        atlas.terminate(a.id, provider="runpod")
        atlas.terminate(b.id, provider="runpod")


def test_stop_twice_and_start(sb: Sandbox) -> None:
    c = atlas.spawn_compute(provider="runpod", gpu="rtx_4090", image=IMAGE)
    try:
        atlas.wait_ready(c.id, provider="runpod", timeout_s=10)
        assert atlas.stop(c.id, provider="runpod").status == "stopped"
        assert atlas.stop(c.id, provider="runpod").status == "stopped"  # a 409, absorbed
        assert atlas.start(c.id, provider="runpod").status in ("provisioning", "running")
        assert atlas.wait_ready(c.id, provider="runpod", timeout_s=10).status == "running"
    finally:
        atlas.terminate(c.id, provider="runpod")


def test_spot_pod_is_rented_over_graphql_with_a_bid(sb: Sandbox) -> None:
    c = atlas.spawn_compute(provider="runpod", gpu="rtx_4090", gpu_count=2, image=IMAGE,
                            spot=True, max_price_per_hour=1.0, ports=[(8000, "http")])
    try:
        pod = sb.runpod.pods[c.id]
        assert pod.get("interruptible") is True and pod["gpu"]["count"] == 2
        assert c.status in ("provisioning", "running") and c.ports[0].url
        assert sb.runpod.store.get(c.id).bid_per_gpu == 0.5
    finally:
        atlas.terminate(c.id, provider="runpod")


def test_catalog_has_spot_prices_and_canonical_names(sb: Sandbox) -> None:
    types = atlas.list_gpu_types(provider="runpod")
    known = [g for g in types if g.canonical]
    assert known and all(isinstance(g.price_per_hour, float) for g in known if g.price_per_hour)
    assert any(g.spot_price_per_hour for g in types)
    h100 = [g for g in types if g.canonical == "h100_sxm"]
    assert h100 and {g.cloud_type for g in types} <= {"secure", "community"}


# -- parallel spawns --------------------------------------------------------------------------
def test_spawn_many_runs_in_parallel_within_16_connections(sb: Sandbox) -> None:
    sb.faults("runpod/rest:POST /v2/pods", latency_ms=20)
    sb.reset_stats()
    computes = spawn_many(count=40, provider="runpod", gpu="rtx_4090", image=IMAGE,
                          name="many")
    try:
        assert [c.name for c in computes] == [f"many-{i}" for i in range(1, 41)]
        stats = sb.stats()
        assert stats["max_concurrent_requests"] > 1
        assert stats["max_concurrent_connections"] <= 16
    finally:
        for c in computes:
            atlas.terminate(c.id, provider="runpod")


def test_spawn_many_is_all_or_nothing(sb: Sandbox) -> None:
    sb.runpod.set_availability("NVIDIA A40", "NONE")
    try:
        requests: list[dict[str, Any]] = [
            {"gpu": "rtx_4090", "image": IMAGE, "name": f"aon-{i}"} for i in range(5)]
        requests.append({"gpu": "a40", "image": IMAGE, "name": "aon-x"})
        with pytest.raises(atlas.AtlasError):
            spawn_many(requests, provider="runpod")
        made = [p for p in sb.runpod.pods.values() if p["name"].startswith("aon-")]
        assert len(made) == 5 and {p["status"] for p in made} == {"TERMINATED"}
    finally:
        sb.runpod.set_availability("NVIDIA A40", "HIGH")


# -- jobs -------------------------------------------------------------------------------------
def test_stream_yields_chunks_and_raises_failures(sb: Sandbox) -> None:
    job = atlas.run_job(provider="runpod", endpoint="stream", input={"text": "a b c d"})
    assert list(atlas.stream_job(job, provider="runpod")) == ["a", "b", "c", "d"]
    bad = atlas.run_job(provider="runpod", endpoint="fail", input={"message": "CUDA OOM"})
    with pytest.raises(atlas.ProviderError, match="failed: CUDA OOM"):
        list(atlas.stream_job(bad.id, endpoint="fail", provider="runpod"))


def test_sync_run_times_out_at_the_deadline(sb: Sandbox) -> None:
    with pytest.raises(atlas.Timeout, match="not finished after 400 ms"):
        atlas.run_job(provider="runpod", endpoint="slow", input={"seconds": 5}, mode="sync",
                      timeout_ms=400)
    for job in list(sb.runpod.serverless.endpoints["slow"].jobs.values()):
        atlas.cancel_job(job.id, endpoint="slow", provider="runpod")  # free the worker


def test_ctrl_c_in_a_sync_run_cancels_the_remote_job(sb: Sandbox) -> None:
    before = set(sb.runpod.serverless.endpoints["slow"].jobs)
    with pytest.raises(KeyboardInterrupt):  # under 1 s: /run, then the poll is interrupted
        RunPod(sleep=_interrupt).run_job(atlas.JobRequest(
            endpoint="slow", input={"seconds": 5}, mode="sync", timeout_ms=900))
    (new,) = set(sb.runpod.serverless.endpoints["slow"].jobs) - before
    assert sb.runpod.job("slow", new)["status"] == "CANCELLED"  # type: ignore[index]
