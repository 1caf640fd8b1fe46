"""The RunPod serverless test knobs: manual endpoints moved by a ``JobDriver``, ``runsync_wait_s``
and ``stream_batch``. Whatever a knob does, the answers keep RunPod's runtime shapes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from atlas_nb.sandbox import sandbox_key
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.server import Sandbox

AUTH = {"Authorization": f"Bearer {sandbox_key('runpod')}"}


@pytest.fixture
def box() -> Iterator[Sandbox]:
    with Sandbox(clouds=["runpod"], start_server=False, attach=False, clock=ManualClock(),
                 options={"runpod": {"stream_wait_s": 0}}) as sb:
        sb.runpod.add_manual_endpoint("hand")
        yield sb


@pytest.fixture
def http(box: Sandbox) -> Iterator[httpx.Client]:
    with box.client(base_url=f"{box.url}/runpod/serverless/v2", headers=AUTH) as client:
        yield client


def test_a_manual_job_moves_only_when_driven(box: Sandbox, http: httpx.Client) -> None:
    clock = box.clock
    assert isinstance(clock, ManualClock)
    job_id = http.post("/hand/run", json={"input": {"n": 2}}).json()["id"]
    assert http.get(f"/hand/status/{job_id}").json() == {"id": job_id, "status": "IN_QUEUE"}
    assert http.get("/hand/health").json()["jobs"]["inQueue"] == 1
    worker = box.runpod.drive("hand")  # the newest job
    assert (worker.id, worker.input, worker.status) == (job_id, {"n": 2}, "IN_QUEUE")
    clock.advance(0.25)
    worker.start().emit("a", "b")
    running = http.get(f"/hand/status/{job_id}").json()
    assert running == {"id": job_id, "status": "IN_PROGRESS", "delayTime": 250}
    assert http.get(f"/hand/stream/{job_id}").json() == {
        "status": "IN_PROGRESS", "stream": [{"output": "a"}, {"output": "b"}]}
    clock.advance(1.5)
    worker.emit("c").complete()  # a generator's output: its chunks
    done = http.get(f"/hand/status/{job_id}").json()
    assert done == {"id": job_id, "status": "COMPLETED", "delayTime": 250,
                    "executionTime": 1500, "output": ["a", "b", "c"]}
    assert http.get(f"/hand/stream/{job_id}").json() == {
        "status": "COMPLETED", "stream": [{"output": "c"}]}
    assert http.get("/hand/health").json()["jobs"]["completed"] == 1


def test_steps_the_state_does_not_allow_are_refused(box: Sandbox, http: httpx.Client) -> None:
    job_id = http.post("/hand/run", json={"input": 1}).json()["id"]
    worker = box.runpod.drive("hand", job_id)
    with pytest.raises(ValueError, match="it is IN_QUEUE"):
        worker.complete(1)
    worker.start()
    with pytest.raises(ValueError, match="it is IN_PROGRESS"):
        worker.start()
    http.post(f"/hand/cancel/{job_id}")
    with pytest.raises(ValueError, match="it is CANCELLED"):
        worker.emit("late")  # a worker's late output after a cancel is dropped
    assert http.get(f"/hand/stream/{job_id}").json() == {"status": "CANCELLED", "stream": []}


def test_a_failed_manual_job_can_be_retried_and_driven_again(box: Sandbox,
                                                             http: httpx.Client) -> None:
    job_id = http.post("/hand/run", json={"input": 1}).json()["id"]
    worker = box.runpod.drive("hand", job_id).start().fail("CUDA out of memory")
    body = http.get(f"/hand/status/{job_id}").json()
    assert (body["status"], body["error"]) == ("FAILED", "CUDA out of memory")
    assert http.post(f"/hand/retry/{job_id}").json() == {"id": job_id, "status": "IN_QUEUE"}
    worker.start().complete({"ok": True})
    assert http.get(f"/hand/status/{job_id}").json()["output"] == {"ok": True}


def test_a_manual_job_times_out_on_the_clock(box: Sandbox, http: httpx.Client) -> None:
    clock = box.clock
    assert isinstance(clock, ManualClock)
    job_id = http.post("/hand/run", json={"input": 1, "policy": {"executionTimeout": 5000}}
                       ).json()["id"]
    worker = box.runpod.drive("hand", job_id).start()
    clock.advance(5)
    assert worker.status == "TIMED_OUT"
    assert "executionTimeout" in http.get(f"/hand/status/{job_id}").json()["error"]


def test_drive_needs_a_manual_endpoint_with_a_job(box: Sandbox, http: httpx.Client) -> None:
    with pytest.raises(LookupError, match="no jobs"):
        box.runpod.drive("hand")
    with pytest.raises(ValueError, match="manual"):
        box.runpod.drive("echo")
    http.post("/echo/runsync", json={"input": 1})  # starts echo's worker thread
    with pytest.raises(ValueError, match="worker threads"):
        box.runpod.add_manual_endpoint("echo")


def test_runsync_wait_s_answers_an_unfinished_job_sooner(box: Sandbox, http: httpx.Client) -> None:
    box.runpod.serverless.runsync_wait_s = 0
    began = time.monotonic()
    body = http.post("/hand/runsync", params={"wait": 60_000}, json={"input": 1}).json()
    assert body["status"] == "IN_QUEUE" and body["id"].startswith("sync-")
    assert time.monotonic() - began < 5


def test_stream_batch_spreads_the_tail_over_several_answers(box: Sandbox,
                                                            http: httpx.Client) -> None:
    box.runpod.serverless.stream_batch = 2
    job_id = http.post("/hand/run", json={"input": 1}).json()["id"]
    box.runpod.drive("hand", job_id).start().emit(1, 2, 3).complete()
    answers = [http.get(f"/hand/stream/{job_id}").json() for _ in range(3)]
    assert answers == [
        {"status": "COMPLETED", "stream": [{"output": 1}, {"output": 2}]},
        {"status": "COMPLETED", "stream": [{"output": 3}]},
        {"status": "COMPLETED", "stream": []},
    ]


def test_the_knobs_are_also_options() -> None:
    with Sandbox(clouds=["runpod"], start_server=False, attach=False,
                 options={"runpod": {"runsync_wait_s": 0.5, "stream_batch": 3}}) as sb:
        assert (sb.runpod.serverless.runsync_wait_s, sb.runpod.serverless.stream_batch) == (0.5, 3)
