"""RunPod's serverless runtime in the sandbox: run, runsync, status, stream, cancel, retry, ..."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from atlas_nb.sandbox import sandbox_key
from atlas_nb.sandbox.server import Sandbox

AUTH = {"Authorization": f"Bearer {sandbox_key('runpod')}"}
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with Sandbox(
        clouds=["runpod"],
        start_server=False,
        attach=False,
        options={"runpod": {"stream_wait_s": 0.2}},
    ) as sb:
        yield sb


@pytest.fixture
def http(box: Sandbox) -> Iterator[httpx.Client]:
    with box.client(base_url=f"{box.url}/runpod/serverless/v2", headers=AUTH) as client:
        yield client


def wait_final(http: httpx.Client, endpoint: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        body: dict[str, Any] = http.get(f"/{endpoint}/status/{job_id}").json()
        if body["status"] in FINAL:
            return body
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish")


def test_run_then_status(http: httpx.Client) -> None:
    queued = http.post("/echo/run", json={"input": {"prompt": "hi"}})
    assert queued.status_code == 200
    body = queued.json()
    assert body["status"] == "IN_QUEUE" and body["id"].endswith("-u1")
    done = wait_final(http, "echo", body["id"])
    assert done["status"] == "COMPLETED" and done["output"] == {"echo": {"prompt": "hi"}}
    assert isinstance(done["delayTime"], int) and isinstance(done["executionTime"], int)


def test_runsync_returns_the_final_body(http: httpx.Client) -> None:
    body = http.post("/echo/runsync", json={"input": [1, 2]}).json()
    assert body["id"].startswith("sync-")
    assert (body["status"], body["output"]) == ("COMPLETED", {"echo": [1, 2]})


def test_runsync_wait_returns_the_unfinished_status_then_cancel(http: httpx.Client) -> None:
    body = http.post("/slow/runsync", params={"wait": 50}, json={"input": {"seconds": 5}}).json()
    assert body["status"] in {"IN_QUEUE", "IN_PROGRESS"}
    cancelled = http.post(f"/slow/cancel/{body['id']}").json()
    assert cancelled == {"id": body["id"], "status": "CANCELLED"}
    assert http.get(f"/slow/status/{body['id']}").json()["status"] == "CANCELLED"
    again = http.post(f"/slow/cancel/{body['id']}").json()
    assert again["status"] == "CANCELLED"  # cancelling a final job changes nothing


def test_stream_yields_generator_chunks_in_order(http: httpx.Client) -> None:
    job = http.post(
        "/stream/run", json={"input": {"text": "alpha beta gamma delta", "delay_s": 0.01}}
    )
    job_id = job.json()["id"]
    chunks: list[Any] = []
    statuses: list[str] = []
    for _ in range(200):
        body = http.get(f"/stream/stream/{job_id}").json()
        assert set(body) == {"status", "stream"}
        chunks += [item["output"] for item in body["stream"]]
        statuses.append(body["status"])
        if body["status"] in FINAL and not body["stream"]:
            break
    assert chunks == ["alpha", "beta", "gamma", "delta"]
    assert statuses[-1] == "COMPLETED"
    final = http.get(f"/stream/status/{job_id}").json()
    assert final["output"] == ["alpha", "beta", "gamma", "delta"]


def test_stream_of_a_plain_handler_gives_its_output_once(http: httpx.Client) -> None:
    job_id = http.post("/echo/runsync", json={"input": "x"}).json()["id"]
    first = http.get(f"/echo/stream/{job_id}").json()
    assert first == {"status": "COMPLETED", "stream": [{"output": {"echo": "x"}}]}
    assert http.get(f"/echo/stream/{job_id}").json() == {"status": "COMPLETED", "stream": []}


def test_failed_job_carries_the_error_and_can_be_retried(box: Sandbox, http: httpx.Client) -> None:
    before = http.get("/fail/health").json()["jobs"]
    failed = http.post("/fail/runsync", json={"input": {"message": "CUDA out of memory"}}).json()
    assert failed["status"] == "FAILED" and failed["error"] == "CUDA out of memory"
    streamed = http.get(f"/fail/stream/{failed['id']}").json()
    assert streamed == {"status": "FAILED", "stream": [], "error": "CUDA out of memory"}
    retried = http.post(f"/fail/retry/{failed['id']}")
    assert retried.json() == {"id": failed["id"], "status": "IN_QUEUE"}
    assert wait_final(http, "fail", failed["id"])["status"] == "FAILED"
    after = http.get("/fail/health").json()["jobs"]
    assert after["failed"] == before["failed"] + 2 and after["retried"] == before["retried"] + 1
    ok = http.post("/echo/runsync", json={"input": 1}).json()
    refused = http.post(f"/echo/retry/{ok['id']}")
    assert refused.status_code == 400 and "only FAILED or TIMED_OUT" in refused.json()["error"]


def test_execution_timeout_gives_timed_out(http: httpx.Client) -> None:
    body = http.post(
        "/slow/runsync", json={"input": {"seconds": 5}, "policy": {"executionTimeout": 100}}
    ).json()
    assert body["status"] == "TIMED_OUT" and "executionTimeout" in body["error"]
    assert body["executionTime"] == 100
    assert http.post(f"/slow/retry/{body['id']}").json()["status"] == "IN_QUEUE"
    http.post(f"/slow/cancel/{body['id']}")


def test_purge_queue_and_health_while_a_worker_is_busy(box: Sandbox, http: httpx.Client) -> None:
    gate = threading.Event()
    started = threading.Event()

    def hold(job: dict[str, Any]) -> Any:
        started.set()
        gate.wait(10)
        return "released"

    box.runpod.add_endpoint("hold", hold, workers=1)
    first = http.post("/hold/run", json={"input": 0}).json()["id"]
    assert started.wait(5)
    queued = [http.post("/hold/run", json={"input": i}).json()["id"] for i in (1, 2)]
    health = http.get("/hold/health").json()  # the server answers while a handler blocks
    assert health["jobs"]["inProgress"] == 1 and health["jobs"]["inQueue"] == 2
    assert health["workers"]["running"] == 1 and health["workers"]["idle"] == 0
    assert http.post("/hold/purge-queue").json() == {"removed": 2, "status": "completed"}
    assert [http.get(f"/hold/status/{j}").json()["status"] for j in queued] == ["CANCELLED"] * 2
    gate.set()
    assert wait_final(http, "hold", first)["output"] == "released"
    assert http.get("/hold/health").json()["jobs"]["completed"] == 1


def test_custom_generator_endpoint(box: Sandbox, http: httpx.Client) -> None:
    def tokens(job: dict[str, Any]) -> Iterator[dict[str, int]]:
        for i in range(int(job["input"]["n"])):
            yield {"token": i}

    box.runpod.add_endpoint("tokens", tokens)
    body = http.post("/tokens/runsync", json={"input": {"n": 3}}).json()
    assert body["output"] == [{"token": 0}, {"token": 1}, {"token": 2}]
    assert box.runpod.job("tokens", body["id"]) == body


def test_errors(box: Sandbox, http: httpx.Client) -> None:
    assert http.post("/nope/run", json={"input": 1}).status_code == 404
    missing = http.get("/echo/status/not-a-job")
    assert missing.status_code == 404 and missing.json() == {"error": "job not-a-job not found"}
    assert http.post("/echo/run", json={"prompt": "no input key"}).status_code == 400
    assert http.post("/echo/run", content=b"{").status_code == 400
    bad_policy = http.post("/echo/run", json={"input": 1, "policy": {"executionTimeout": "soon"}})
    assert bad_policy.status_code == 400
    with box.client(base_url=f"{box.url}/runpod/serverless/v2") as anon:
        assert anon.post("/echo/run", json={"input": 1}).status_code == 401
        bare = anon.post(
            "/echo/runsync", json={"input": 1}, headers={"Authorization": sandbox_key("runpod")}
        )
        assert bare.json()["status"] == "COMPLETED"  # the docs' curl examples send the bare key
