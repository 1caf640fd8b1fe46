"""RunPod serverless streams (issue 14, item 14): both answer forms, a deadline, no junk polled.

RunPod's operation reference shows ``GET /stream/{id}`` answering a bare array of
``{"output": ...}`` items (https://docs.runpod.io/serverless/endpoints/operation-reference,
"/stream"); runpod-python reads ``{"status", "stream": [...]}`` (runpod/endpoint/runner.py,
``Job.stream``). The provider reads both; the sandbox serves runpod-python's form unless its
``stream_form`` knob says ``"array"``. Jobs run on a manual endpoint the test moves by hand;
a ``sleep`` that fails past a budget turns "polled forever" into a failure, not a hang.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb.providers.runpod import RunPod, serverless
from atlas_nb.sandbox import sandbox_key, start
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.server import Sandbox

KEY = sandbox_key("runpod")
EP = "ep1"
POLL_BUDGET = 40  # pauses a test allows before it calls the stream "polled forever"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with start(clouds=["runpod"], start_server=False, validate=True, clock=ManualClock(),
               options={"runpod": {"stream_wait_s": 0}}) as box:
        box.runpod.add_manual_endpoint(EP)
        yield box
        assert box.violations == [], "\n".join(box.violations)


@pytest.fixture
def sent() -> list[httpx.Request]:
    return []


@pytest.fixture
def http(sb: Sandbox, sent: list[httpx.Request]) -> Iterator[httpx.Client]:
    with sb.client(event_hooks={"request": [sent.append]}) as client:
        yield client


def paths(sent: list[httpx.Request], op: str) -> list[str]:
    return [r.url.path for r in sent if f"/v2/{EP}/{op}" in r.url.path]


def budgeted(*steps: Callable[[], object], limit: int = POLL_BUDGET) -> Callable[[float], None]:
    """A ``sleep`` that plays the next step (the worker moving on) at each pause and fails
    the test once ``limit`` pauses have passed: a stream that never ends is a failure."""
    pending = list(steps)
    count = [0]

    def sleep(_seconds: float) -> None:
        count[0] += 1
        if count[0] > limit:
            pytest.fail(f"stream_job still polling after {limit} pauses")
        if pending:
            pending.pop(0)()

    return sleep


def scripted(stream: list[Any], status: list[dict[str, Any]]) -> httpx.MockTransport:
    """A RunPod answering ``/stream`` and ``/status`` from scripts (the last answer repeats);
    a ``bytes`` item is sent raw, anything else as JSON."""

    def answer(request: httpx.Request) -> httpx.Response:
        script = stream if "/stream/" in request.url.path else status
        if "/cancel/" in request.url.path:
            return httpx.Response(200, json={"id": "j1", "status": "CANCELLED"})
        body = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(body, bytes):
            return httpx.Response(200, content=body, headers={"content-type": "text/html"})
        return httpx.Response(200, json=body)

    return httpx.MockTransport(answer)


def scripted_rp(stream: list[Any], status: list[dict[str, Any]]) -> RunPod:
    return RunPod(api_key=KEY, base_url="http://runpod.test", http=scripted(stream, status),
                  sleep=budgeted())


# -- the sandbox serves both forms ------------------------------------------------------------
def test_the_sandbox_serves_runpod_pythons_form_by_default(sb: Sandbox,
                                                           http: httpx.Client) -> None:
    job = atlas.run_job(provider=RunPod(http=http), endpoint=EP, input=1)
    sb.runpod.drive(EP, job.id).start().emit("a")
    body = http.get(f"{sb.url}/runpod/serverless/v2/{EP}/stream/{job.id}",
                    headers={"Authorization": f"Bearer {KEY}"}).json()
    assert body == {"status": "IN_PROGRESS", "stream": [{"output": "a"}]}


def test_the_sandbox_serves_the_docs_bare_array_on_request(sb: Sandbox,
                                                           http: httpx.Client) -> None:
    sb.runpod.serverless.stream_form = "array"
    job = atlas.run_job(provider=RunPod(http=http), endpoint=EP, input=1)
    sb.runpod.drive(EP, job.id).start().emit("a", {"b": 2})
    url = f"{sb.url}/runpod/serverless/v2/{EP}/stream/{job.id}"
    auth = {"Authorization": f"Bearer {KEY}"}
    assert http.get(url, headers=auth).json() == [{"output": "a"}, {"output": {"b": 2}}]
    assert http.get(url, headers=auth).json() == []


def test_the_stream_form_is_also_an_option_and_is_checked() -> None:
    with start(clouds=["runpod"], start_server=False,
               options={"runpod": {"stream_form": "array"}}) as box:
        assert box.runpod.serverless.stream_form == "array"
    with pytest.raises(ValueError, match="stream_form"), start(
        clouds=["runpod"], start_server=False, options={"runpod": {"stream_form": "ndjson"}}
    ):
        pass


# -- the provider reads both forms -------------------------------------------------------------
def test_stream_reads_the_bare_array_form(sb: Sandbox, http: httpx.Client,
                                          sent: list[httpx.Request]) -> None:
    sb.runpod.serverless.stream_form = "array"
    rp = RunPod(http=http, sleep=budgeted(
        lambda: sb.runpod.drive(EP).start(),
        lambda: sb.runpod.drive(EP).emit("a", "b"),
        lambda: sb.runpod.drive(EP).emit("c").complete(),
    ))
    job = atlas.run_job(provider=rp, endpoint=EP, input=1)
    assert list(atlas.stream_job(job, provider=rp)) == ["a", "b", "c"]
    assert paths(sent, "status")  # a bare array has no status: /status tells when it ends


def test_stream_reads_the_docs_example_items() -> None:
    # The operation reference's /stream example: items carry ``metrics`` beside ``output``.
    item = {"metrics": {"output_tokens": 1, "stream_index": 2, "scenario": "stream"},
            "output": {"input_tokens": 0, "output_tokens": 1, "text": [" How"]}}
    rp = scripted_rp([[item], []], [{"id": "j1", "status": "COMPLETED"}])
    assert list(atlas.stream_job("j1", endpoint=EP, provider=rp)) == [item["output"]]


def test_a_bare_array_stream_drains_chunks_that_land_after_its_status() -> None:
    # /status says COMPLETED after an empty answer; chunks emitted in between still come.
    rp = scripted_rp([[{"output": 1}], [], [{"output": 2}], [{"output": 3}], []],
                     [{"id": "j1", "status": "COMPLETED", "output": [1, 2, 3]}])
    assert list(atlas.stream_job("j1", endpoint=EP, provider=rp)) == [1, 2, 3]


def test_a_bare_array_stream_raises_the_jobs_error(sb: Sandbox, http: httpx.Client) -> None:
    sb.runpod.serverless.stream_form = "array"
    rp = RunPod(http=http, sleep=budgeted(
        lambda: sb.runpod.drive(EP).emit(2).fail("CUDA out of memory"),
    ))
    job = atlas.run_job(provider=rp, endpoint=EP, input=1)
    sb.runpod.drive(EP, job.id).start().emit(1)
    got: list[Any] = []
    with pytest.raises(atlas.ProviderError, match="failed: CUDA out of memory"):
        for chunk in atlas.stream_job(job, provider=rp):
            got.append(chunk)
    assert got == [1, 2]


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"", "ok", 42, {},
                                  {"status": "IN_PROGRESS", "stream": "a"}])
def test_an_answer_that_is_not_a_stream_is_an_error(body: Any) -> None:
    rp = scripted_rp([body], [{"id": "j1", "status": "IN_PROGRESS"}])
    with pytest.raises(atlas.ProviderError, match=r"/stream answer") as info:
        list(atlas.stream_job("j1", endpoint=EP, provider=rp))
    assert "j1" in info.value.message and info.value.hint


# -- the deadline ------------------------------------------------------------------------------
def test_a_stream_past_its_deadline_times_out_and_cancels_the_job(
    sb: Sandbox, http: httpx.Client, sent: list[httpx.Request]
) -> None:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    job = atlas.run_job(provider=RunPod(http=http), endpoint=EP, input=1)
    sb.runpod.drive(EP, job.id).start().emit("a")
    chunks = serverless.stream(RunPod(http=http).client("serverless"), job.id, EP,
                               sleep=sleep, timeout_s=5, clock=lambda: clock[0])
    got: list[Any] = []
    with pytest.raises(atlas.Timeout, match=r"after 5 ?s.*cancelled") as info:
        for chunk in chunks:
            got.append(chunk)
    assert got == ["a"]  # what came before the deadline was delivered
    assert "timeout_s" in (info.value.hint or "")
    assert len(paths(sent, "cancel")) == 1
    assert sb.runpod.drive(EP, job.id).status == "CANCELLED"


def test_the_facade_passes_timeout_s(sb: Sandbox, http: httpx.Client,
                                     sent: list[httpx.Request]) -> None:
    import time

    rp = RunPod(http=http, sleep=lambda s: time.sleep(min(s, 0.01)))
    job = atlas.run_job(provider=rp, endpoint=EP, input=1)
    sb.runpod.drive(EP, job.id).start()
    with pytest.raises(atlas.Timeout):
        list(atlas.stream_job(job, provider=rp, timeout_s=0.05))
    assert sb.runpod.drive(EP, job.id).status == "CANCELLED"


def test_the_default_deadline_is_generous_but_finite(sb: Sandbox, http: httpx.Client) -> None:
    assert serverless.DEFAULT_STREAM_TIMEOUT_S >= 3600  # six times RunPod's 600 s default
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += 60.0  # each pause stands for a minute

    job = atlas.run_job(provider=RunPod(http=http), endpoint=EP, input=1)
    chunks = serverless.stream(RunPod(http=http).client("serverless"), job.id, EP,
                               sleep=sleep, clock=lambda: clock[0])
    with pytest.raises(atlas.Timeout):
        list(chunks)
    assert clock[0] >= serverless.DEFAULT_STREAM_TIMEOUT_S
    assert sb.runpod.drive(EP, job.id).status == "CANCELLED"


@pytest.mark.parametrize("bad", [0, -1, "60", True, math.nan])
def test_timeout_s_is_checked_before_anything_is_sent(sb: Sandbox, http: httpx.Client,
                                                      sent: list[httpx.Request],
                                                      bad: Any) -> None:
    rp = RunPod(http=http)
    with pytest.raises(atlas.ValidationError, match="timeout_s"):
        atlas.stream_job("j1", endpoint=EP, provider=rp, timeout_s=bad)
    assert sent == []


def test_no_deadline_on_request(sb: Sandbox, http: httpx.Client) -> None:
    rp = RunPod(http=http, sleep=budgeted(lambda: sb.runpod.drive(EP).emit(1).complete()))
    job = atlas.run_job(provider=rp, endpoint=EP, input=1)
    sb.runpod.drive(EP, job.id).start()
    assert list(atlas.stream_job(job, provider=rp, timeout_s=math.inf)) == [1]
    assert json.dumps(sb.runpod.job(EP, job.id))  # the job is still there, completed
