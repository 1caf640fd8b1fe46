"""The RunPod provider against the in-process sandbox: what it sends, how it retries, how it maps
RunPod's answers and errors. Pods, spot rentals and the catalog are the sandbox's RunPod cloud
(REST v2, GraphQL); serverless jobs run on a manual endpoint whose jobs the test moves by hand
(``sb.runpod.drive``). Scripted failures are sandbox faults (``sb.faults``); every exchange is
checked against RunPod's vendored REST v2 spec. A manual clock steps pods through their
lifecycle; no sockets, no sleeping (``sleep=`` records) unless a test says otherwise.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb import sandbox, telemetry
from atlas_nb.facade import spawn_many
from atlas_nb.providers import resolve
from atlas_nb.providers.runpod import CREATE_ATTEMPTS, RunPod, wire
from atlas_nb.sandbox import sandbox_key, start
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.server import Sandbox

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

KEY = sandbox_key("runpod")
CREATE = "runpod/rest:POST /v2/pods"
GRAPHQL = "runpod/graphql:POST /graphql"
EP = "ep1"  # a manual endpoint: its jobs move only when the test drives them
BOOT_S = 30.0  # a new pod reads PROVISIONING until the clock moves this far
H100 = "NVIDIA H100 80GB HBM3"
RTX_4090 = "NVIDIA GeForce RTX 4090"


class Recorder(list[httpx.Request]):
    """Every request the provider sent, in order (an httpx event hook)."""

    def sent(self, method: str, pattern: str) -> list[httpx.Request]:
        """Requests of ``method`` whose path under its API mount fully matches ``pattern``."""
        return [r for r in self if r.method == method and re.fullmatch(pattern, _rel(r))]


def _rel(request: httpx.Request) -> str:
    """``/runpod/rest/v2/pods`` -> ``/v2/pods``: the path as RunPod itself would see it."""
    return re.sub(r"^/runpod/[^/]+", "", request.url.path)


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with start(clouds=["runpod"], start_server=False, validate=True, clock=ManualClock(),
               provision_delay_s=BOOT_S, start_delay_s=0,
               options={"runpod": {"stream_wait_s": 0}}) as box:
        box.runpod.add_manual_endpoint(EP)
        yield box
        assert box.violations == [], "\n".join(box.violations)


@pytest.fixture
def sent(sb: Sandbox) -> Iterator[Recorder]:
    record = Recorder()
    yield record
    for request in record:  # the key travels in the header only, never in a URL
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert KEY not in str(request.url) and "api_key" not in str(request.url)


@pytest.fixture
def http(sb: Sandbox, sent: Recorder) -> Iterator[httpx.Client]:
    with sb.client(event_hooks={"request": [sent.append]}) as client:
        yield client


@pytest.fixture
def rp(http: httpx.Client, sleeps: list[float]) -> RunPod:
    return RunPod(http=http, sleep=sleeps.append)


def boot(sb: Sandbox) -> None:
    """Let every pod made so far reach RUNNING."""
    assert isinstance(sb.clock, ManualClock)
    sb.clock.advance(BOOT_S)


def make_pod(sb: Sandbox, *, name: str, gpu: str | None = H100, env: dict[str, str] | None = None,
             ports: tuple[str, ...] = (), data_center: str = "US-TX-3") -> str:
    """Create a pod straight on the sandbox's REST API (not through the provider, not recorded)."""
    body: dict[str, Any] = {"name": name, "image": "i:1", "env": env or {}, "ports": list(ports),
                            "dataCenterIds": [data_center]}
    body |= {"gpu": {"id": gpu, "count": 1}} if gpu else {"cpu": {"id": "cpu3c-2-4",
                                                                   "vcpuCount": 2}}
    with sb.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        r = client.post(f"{sb.url}/runpod/rest/v2/pods", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def driven(sleeps: list[float], *steps: Callable[[], object]) -> Callable[[float], None]:
    """A ``sleep`` that records each pause, then plays the next step: the job's worker moving
    on while the provider waits, so each poll sees exactly one step further."""
    pending = list(steps)

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if pending:
            pending.pop(0)()

    return sleep


def _interrupt(_: float) -> None:
    raise KeyboardInterrupt


# -- capabilities, keys -----------------------------------------------------------------------
def test_capabilities_are_what_the_code_backs(rp: RunPod) -> None:
    assert atlas.capabilities(rp) == {"spot", "serverless", "network_volumes", "http_proxy",
                                      "raw_tcp", "stop_start", "webhooks"}
    assert "symmetric_ports" not in rp.capabilities() and "logs" not in rp.capabilities()


def test_key_only_in_the_authorization_header(rp: RunPod, sent: Recorder) -> None:
    events: list[dict[str, Any]] = []
    telemetry.attach("rp-test", "*", lambda ev, data: events.append(dict(data)))
    try:
        c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", image="i:1", spot=True)
        atlas.list_gpu_types(provider=rp)
        atlas.get_compute(c.id, provider=rp)
    finally:
        telemetry.detach("rp-test")
    assert {_rel(r) for r in sent} >= {"/graphql", f"/v2/pods/{c.id}", "/v2/catalog/gpus"}
    for r in sent:  # the ``sent`` fixture checks every request's header and URL as well
        assert r.headers["authorization"] == f"Bearer {KEY}"
        assert KEY not in str(r.url) and "api_key" not in str(r.url)
    assert events and KEY not in json.dumps(events, default=str)
    assert KEY not in repr(rp)


def test_wrong_key_is_unauthorized_without_echoing_it(sb: Sandbox) -> None:
    with sb.client() as other:  # not recorded: this key is meant to be wrong
        rp = RunPod(api_key="wrong-key-abcdef", http=other)
        with pytest.raises(atlas.Unauthorized) as info:
            rp.get_compute("pod0001")
    assert "wrong-key-abcdef" not in str(info.value) and info.value.hint


# -- spawn ------------------------------------------------------------------------------------
def test_spawn_sends_a_v2_create_and_returns_the_compute(sb: Sandbox, rp: RunPod,
                                                         sent: Recorder) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", image="me/srv:1",
                            ports=[(8000, "http"), (22, "tcp")], env={"MODEL": "x"})
    (create,) = sent.sent("POST", "/v2/pods")
    body = json.loads(create.content)
    assert body["name"].startswith("atlas-") and len(body["name"]) > len("atlas-") + 8
    assert body["gpu"] == {"id": RTX_4090, "count": 1}
    assert body["env"]["MODEL"] == "x" and body["env"][wire.REQUEST_ID_ENV]
    assert list(sb.runpod.pods) == [c.id]
    assert (c.provider, c.status, c.name) == ("runpod", "provisioning", body["name"])
    assert isinstance(c.cost_per_hour, float) and c.gpu_type == "rtx_4090"
    http, tcp = c.ports
    assert http.url == f"https://{c.id}-8000.proxy.runpod.net" and tcp.url is None


def test_each_spawn_gets_its_own_name_and_marker(rp: RunPod, sent: Recorder) -> None:
    for _ in range(3):
        rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1"))
    bodies = [json.loads(r.content) for r in sent.sent("POST", "/v2/pods")]
    assert len({b["name"] for b in bodies}) == 3
    assert len({b["env"][wire.REQUEST_ID_ENV] for b in bodies}) == 3


def test_bearer_token_reaches_env_but_not_raw(sb: Sandbox, rp: RunPod) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="h100", image="i:1", auth="bearer",
                            env={"HF_TOKEN": "hf_secret_value"})
    assert c.auth is not None
    assert sb.runpod.pod_env(c.id)["ATLAS_PRESHARED_KEY"] == c.auth.token
    boot(sb)
    for seen in (c, atlas.get_compute(c.id, provider=rp), *atlas.list_compute(provider=rp)):
        text = json.dumps(seen.raw) + repr(seen)
        assert c.auth.token not in text and "hf_secret_value" not in text


def test_running_pod_has_urls_for_every_port(sb: Sandbox, rp: RunPod) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="h100", image="i:1", ports=["8000/http", "22/tcp"])
    boot(sb)
    ready = atlas.wait_ready(c.id, provider=rp, timeout_s=5, sleep=lambda s: None)
    live = {p["private"]: p for p in sb.runpod.pods[c.id]["runtime"]["ports"]}
    assert ready.ready and ready.public_ip == live[22]["ip"]
    assert [p.url for p in ready.ports] == [f"https://{c.id}-8000.proxy.runpod.net",
                                            f"tcp://{live[22]['ip']}:{live[22]['public']}"]


def test_bad_request_is_caught_before_sending(rp: RunPod, sent: Recorder) -> None:
    with pytest.raises(atlas.ValidationError, match="udp"):
        atlas.spawn_compute(provider=rp, gpu="h100", image="i:1", ports=[(53, "udp")])
    with pytest.raises(atlas.Unsupported, match="a10"):
        atlas.spawn_compute(provider=rp, gpu="a10", image="i:1")
    assert sent == []


def test_on_demand_price_cap_is_checked_against_the_catalog(sb: Sandbox, rp: RunPod,
                                                            sent: Recorder) -> None:
    two = 2 * sb.runpod.catalog.gpus[H100]["price"]["secure"]
    with pytest.raises(atlas.ValidationError,
                       match=rf"\${two:.2f}/h.*max_price_per_hour=5"):
        atlas.spawn_compute(provider=rp, gpu="h100", gpu_count=2, image="i:1",
                            cloud_type="secure", max_price_per_hour=5.0)
    assert two > 5 and sent.sent("POST", "/v2/pods") == []
    assert sb.runpod.catalog.gpus[RTX_4090]["price"]["community"] <= 0.5
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", image="i:1", cloud_type="community",
                            max_price_per_hour=0.5)
    assert c.id in sb.runpod.pods and sb.runpod.pods[c.id]["cloud"] == "COMMUNITY"


# -- no duplicate pods ------------------------------------------------------------------------
def test_lost_create_answer_is_found_not_replayed(sb: Sandbox, rp: RunPod,
                                                  sent: Recorder) -> None:
    sb.faults(CREATE, sequence=["lost"])  # the pod is made, then the connection drops
    c = rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1"))
    assert len(sent.sent("POST", "/v2/pods")) == 1
    assert list(sb.runpod.pods) == [c.id]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_after_the_pod_was_made_is_found(sb: Sandbox, rp: RunPod, sent: Recorder,
                                             status: int) -> None:
    sb.faults(CREATE, sequence=[f"applied:{status}"])
    c = rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1", name="mine"))
    assert len(sent.sent("POST", "/v2/pods")) == 1 and list(sb.runpod.pods) == [c.id]


def test_5xx_without_a_pod_is_retried_after_a_lookup(
    sb: Sandbox, rp: RunPod, sent: Recorder, sleeps: list[float]
) -> None:
    sb.faults(CREATE, sequence=[503, 500])  # refused, nothing made
    c = rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1"))
    assert len(sent.sent("POST", "/v2/pods")) == 3 and list(sb.runpod.pods) == [c.id]
    assert len(sent.sent("GET", "/v2/pods")) == 2  # one lookup before each retry
    assert sleeps == [1.0, 1.0]  # backoff 0.5, 1.0 s, each at least CreateRetry.settle_s


def test_a_same_named_pod_without_our_marker_is_not_taken(sb: Sandbox, rp: RunPod) -> None:
    other = make_pod(sb, name="shared-name", gpu=None, env={wire.REQUEST_ID_ENV: "someone-else"})
    sb.faults(CREATE, sequence=[503])
    c = rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1", name="shared-name"))
    assert c.id != other and len(sb.runpod.pods) == 2


def test_rate_limited_create_waits_and_retries_without_lookup(
    sb: Sandbox, rp: RunPod, sent: Recorder, sleeps: list[float]
) -> None:
    sb.faults(CREATE, sequence=[429], retry_after_s=7)
    rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1"))
    assert sleeps == [7.0] and sent.sent("GET", "/v2/pods") == [] and len(sb.runpod.pods) == 1


def test_4xx_is_final(sb: Sandbox, rp: RunPod, sent: Recorder) -> None:
    sb.faults(CREATE, sequence=[400])
    with pytest.raises(atlas.ValidationError, match="injected fault"):
        rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1"))
    assert len(sent.sent("POST", "/v2/pods")) == 1 and sent.sent("GET", "/v2/pods") == []
    assert sb.runpod.pods == {}


def test_gives_up_after_bounded_attempts(sb: Sandbox, rp: RunPod, sent: Recorder) -> None:
    sb.faults(CREATE, sequence=["drop"] * CREATE_ATTEMPTS)  # closed before reaching RunPod
    with pytest.raises(atlas.TransportError) as info:
        rp.spawn_compute(atlas.ComputeRequest(gpu="h100", image="i:1"))
    assert len(sent.sent("POST", "/v2/pods")) == CREATE_ATTEMPTS and sb.runpod.pods == {}
    assert info.value.hint and "safe to try again" in info.value.hint


# -- spot ------------------------------------------------------------------------------------
def _rent_inputs(sent: Recorder) -> list[dict[str, Any]]:
    bodies = [json.loads(r.content) for r in sent.sent("POST", "/graphql")]
    return [b["variables"]["input"] for b in bodies if "podRentInterruptable" in b["query"]]


def test_spot_bid_comes_from_the_cap_per_gpu(sb: Sandbox, rp: RunPod, sent: Recorder) -> None:
    c = atlas.spawn_compute(provider=rp, gpu="rtx_4090", gpu_count=2, image="i:1", spot=True,
                            max_price_per_hour=0.9, ports=[(8000, "http")])
    (data,) = _rent_inputs(sent)
    assert data["bidPerGpu"] == 0.45 and data["gpuCount"] == 2
    assert data["gpuTypeId"] == RTX_4090 and data["ports"] == "8000/http"
    env = sb.runpod.pod_env(c.id)
    assert {"key": wire.REQUEST_ID_ENV, "value": env[wire.REQUEST_ID_ENV]} in data["env"]
    assert sb.runpod.pods[c.id]["interruptible"] is True
    assert sent.sent("GET", f"/v2/pods/{c.id}")  # read back over REST


def test_spot_bid_defaults_to_the_catalog_minimum(sb: Sandbox, rp: RunPod,
                                                  sent: Recorder) -> None:
    atlas.spawn_compute(provider=rp, gpu="h100_sxm", image="i:1", spot=True)
    (data,) = _rent_inputs(sent)
    lowest = sb.runpod.catalog.lowest_price(sb.runpod.catalog.gpus[H100], 1, None)
    assert data["bidPerGpu"] == lowest["minimumBidPrice"]


def test_graphql_errors_become_provider_errors(sb: Sandbox, rp: RunPod) -> None:
    sb.runpod.set_availability(H100, "NONE")  # RunPod answers the rental with a GraphQL error
    with pytest.raises(atlas.ProviderError, match="no longer any instances available"):
        atlas.spawn_compute(provider=rp, gpu="h100", image="i:1", spot=True,
                            max_price_per_hour=5.0)
    assert sb.runpod.pods == {}


def test_lost_spot_answer_is_found_not_replayed(sb: Sandbox, rp: RunPod, sent: Recorder) -> None:
    sb.faults(GRAPHQL, sequence=["lost"])  # with a cap, the first GraphQL call is the rental
    c = atlas.spawn_compute(provider=rp, gpu="h100", image="i:1", spot=True,
                            max_price_per_hour=2.0)
    assert len(_rent_inputs(sent)) == 1 and list(sb.runpod.pods) == [c.id]


# -- get / list / stop / start / terminate ------------------------------------------------------
def test_unknown_id_is_not_found(rp: RunPod) -> None:
    with pytest.raises(atlas.NotFound):
        atlas.get_compute("nope", provider=rp)


def test_list_filters_client_side(sb: Sandbox, rp: RunPod) -> None:
    a = make_pod(sb, name="atlas-a", gpu=H100)
    boot(sb)  # a runs; the two below are still provisioning
    b = make_pod(sb, name="atlas-b", gpu=RTX_4090)
    make_pod(sb, name="other", gpu=None)

    def ids(**kw: Any) -> set[str]:
        return {c.id for c in atlas.list_compute(provider=rp, **kw)}

    assert len(ids()) == 3
    assert ids(name="atlas-") == {a, b}
    assert ids(status="running") == {a}
    assert ids(gpu="h100") == {a} and ids(gpu="4090") == {b}
    assert ids(region="US-TX-3") == ids() and ids(region="EU-RO-1") == set()
    with pytest.raises(atlas.ValidationError, match="unknown status"):
        atlas.list_compute(provider=rp, status="RUNNING")


def test_stop_start_use_the_action_endpoint(sb: Sandbox, rp: RunPod, sent: Recorder) -> None:
    pod = make_pod(sb, name="p", ports=("8000/http",))
    boot(sb)
    assert atlas.stop(pod, provider=rp).status == "stopped"
    assert atlas.stop(pod, provider=rp).status == "stopped"  # 409, but already there
    assert atlas.start(pod, provider=rp).status == "running"
    bodies = [json.loads(r.content) for r in sent.sent("POST", r"/v2/pods/[^/]+/action")]
    assert bodies == [{"action": "stop"}, {"action": "stop"}, {"action": "start"}]


def test_an_action_the_pods_state_refuses_is_a_conflict(sb: Sandbox, rp: RunPod) -> None:
    pod = make_pod(sb, name="p")
    sb.runpod.fail_pod(pod)  # ERROR: RunPod allows only start or terminate
    with pytest.raises(atlas.ProviderError, match="while it is failed") as info:
        atlas.stop(pod, provider=rp)
    assert info.value.status == 409
    atlas.terminate(pod, provider=rp)
    with pytest.raises(atlas.NotFound):  # RunPod forgets a terminated pod: 404, not 409
        atlas.start(pod, provider=rp)


def test_terminate_is_idempotent(sb: Sandbox, rp: RunPod) -> None:
    pod = make_pod(sb, name="p")
    boot(sb)
    assert atlas.terminate(pod, provider=rp) is None
    assert atlas.terminate(pod, provider=rp) is None
    assert atlas.terminate("never-existed", provider=rp) is None
    assert sb.runpod.pods[pod]["status"] == "TERMINATED"
    with pytest.raises(atlas.NotFound):  # gone from the API, as on RunPod
        atlas.get_compute(pod, provider=rp)


def test_catalog_has_on_demand_and_spot_prices(sb: Sandbox, rp: RunPod, sent: Recorder) -> None:
    sb.runpod.set_availability(H100, "LOW")
    rows = sb.runpod.catalog.gpus
    types = atlas.list_gpu_types(provider=rp)
    by_key = {(g.canonical, g.cloud_type): g for g in types}
    expected = {(wire.GPU_IDS.from_id(gid)[0], cloud) for gid, row in rows.items()
                for cloud in ("secure", "community") if row[cloud]}
    assert set(by_key) == expected >= {("rtx_4090", "secure"), ("rtx_4090", "community"),
                                       ("h100_sxm", "secure")}
    rtx, h100 = rows[RTX_4090], rows[H100]
    assert by_key["rtx_4090", "community"].price_per_hour == rtx["price"]["community"]
    assert by_key["rtx_4090", "community"].spot_price_per_hour == rtx["spotPrice"]["community"]
    assert by_key["h100_sxm", "secure"].spot_price_per_hour == h100["spotPrice"]["secure"]
    assert by_key["h100_sxm", "secure"].stock == "low"
    (catalog_get,) = sent.sent("GET", "/v2/catalog/gpus")
    assert dict(catalog_get.url.params) == {"include": "AVAILABILITY", "product": "POD"}


def test_stock_falls_back_to_graphql_without_rest_availability() -> None:
    # The sandbox always answers include=AVAILABILITY; a row without it is checked on the wire.
    rest = {"gpus": [{"id": H100, "name": "H100 SXM", "memory": 80, "secure": True,
                      "community": False, "price": {"secure": 2.69, "community": 0}}]}
    gql = [{"id": H100, "secureSpotPrice": 1.75,
            "lowestPrice": {"minimumBidPrice": 1.5, "stockStatus": "Low"}}]
    (h100,) = wire.gpu_types_from_wire(rest, gql)
    assert (h100.canonical, h100.stock, h100.spot_price_per_hour) == ("h100_sxm", "low", 1.75)


# -- jobs ------------------------------------------------------------------------------------
def test_async_job_and_get_job_by_job_or_id(sb: Sandbox, rp: RunPod, sent: Recorder) -> None:
    job = atlas.run_job(provider=rp, endpoint=EP, input={"p": 1},
                        webhook="https://hook.example/x")
    (run,) = sent.sent("POST", f"/v2/{EP}/run")
    assert json.loads(run.content) == {"input": {"p": 1}, "webhook": "https://hook.example/x"}
    assert (job.status, job.endpoint, job.provider) == ("in_queue", EP, "runpod")
    worker = sb.runpod.drive(EP, job.id).start()
    assert atlas.get_job(job, provider=rp).status == "in_progress"
    worker.complete({"echo": worker.input})
    done = atlas.get_job(job.id, endpoint=EP, provider=rp)
    assert done.status == "completed" and done.output == {"echo": {"p": 1}}
    with pytest.raises(atlas.ValidationError, match="endpoint"):
        atlas.get_job(job.id, provider=rp)
    with pytest.raises(atlas.NotFound):
        atlas.get_job("missing", endpoint=EP, provider=rp)


def test_sync_job_returns_the_runsync_answer(sb: Sandbox, rp: RunPod, sent: Recorder) -> None:
    clock = sb.clock
    assert isinstance(clock, ManualClock)
    got: list[atlas.Job] = []
    caller = threading.Thread(target=lambda: got.append(atlas.run_job(
        provider=rp, endpoint=EP, input="hi", mode="sync", timeout_ms=5000)))
    caller.start()
    deadline = time.monotonic() + 10
    while not sb.runpod.serverless.endpoints[EP].jobs and time.monotonic() < deadline:
        time.sleep(0.002)  # /runsync is holding its answer until the job ends
    worker = sb.runpod.drive(EP)
    clock.advance(0.003)
    worker.start()
    clock.advance(0.009)
    worker.complete({"echo": worker.input})
    caller.join(10)
    (job,) = got
    assert job.status == "completed" and job.output == {"echo": "hi"}
    assert (job.delay_time_ms, job.execution_time_ms) == (3, 9)
    (runsync,) = sent.sent("POST", f"/v2/{EP}/runsync")
    assert runsync.url.params["wait"] == "5000" and sent.sent("GET", r".*/status/.+") == []


def test_sync_job_polls_status_after_runsync(
    sb: Sandbox, http: httpx.Client, sent: Recorder, sleeps: list[float]
) -> None:
    sb.runpod.serverless.runsync_wait_s = 0  # /runsync answers with the job still queued
    rp = RunPod(http=http, sleep=driven(
        sleeps,
        lambda: sb.runpod.drive(EP).start(),  # 1st poll: IN_PROGRESS
        lambda: None,  # 2nd poll: still IN_PROGRESS
        lambda: sb.runpod.drive(EP).complete("done"),  # 3rd poll: COMPLETED
    ))
    job = atlas.run_job(provider=rp, endpoint=EP, input="hi", mode="sync", timeout_ms=60_000)
    assert job.status == "completed" and len(sent.sent("GET", rf"/v2/{EP}/status/.+")) == 3
    assert sleeps == sorted(sleeps) and sleeps[0] > 0  # backing off, never spinning


def test_sync_job_times_out_at_the_deadline(http: httpx.Client, sent: Recorder) -> None:
    rp = RunPod(http=http, sleep=time.sleep)  # nothing moves the job: it stays queued
    with pytest.raises(atlas.Timeout, match="not finished after 300 ms") as info:
        atlas.run_job(provider=rp, endpoint=EP, input="hi", mode="sync", timeout_ms=300)
    assert info.value.hint
    # under a second, /runsync cannot honour the deadline: /run + polling instead
    assert sent.sent("POST", f"/v2/{EP}/runsync") == []
    assert len(sent.sent("POST", f"/v2/{EP}/run")) == 1
    assert 1 <= len(sent.sent("GET", rf"/v2/{EP}/status/.+")) < 50


def test_ctrl_c_during_a_sync_run_cancels_the_job(sb: Sandbox, http: httpx.Client,
                                                  sent: Recorder) -> None:
    sb.runpod.serverless.runsync_wait_s = 0  # /runsync answers IN_QUEUE
    rp = RunPod(http=http, sleep=_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atlas.run_job(provider=rp, endpoint=EP, input="hi", mode="sync", timeout_ms=60_000)
    (cancel,) = sent.sent("POST", rf"/v2/{EP}/cancel/.+")
    job = sb.runpod.drive(EP)
    assert cancel.url.path.endswith(job.id) and job.status == "CANCELLED"


def test_cancel_job(sb: Sandbox, rp: RunPod) -> None:
    job = atlas.run_job(provider=rp, endpoint=EP, input=1)
    assert atlas.cancel_job(job, provider=rp).status == "cancelled"
    assert atlas.get_job(job, provider=rp).status == "cancelled"
    assert sb.runpod.drive(EP, job.id).status == "CANCELLED"


def test_stream_unwraps_chunks_and_ends_after_draining(
    sb: Sandbox, http: httpx.Client, sent: Recorder, sleeps: list[float]
) -> None:
    sb.runpod.serverless.stream_batch = 1  # one chunk per answer: the tail spans several
    rp = RunPod(http=http, sleep=driven(
        sleeps,
        lambda: sb.runpod.drive(EP).start(),  # after IN_QUEUE []
        lambda: sb.runpod.drive(EP).emit("a", "b"),  # after IN_PROGRESS []
        lambda: None,  # after IN_PROGRESS ["a"]
        lambda: sb.runpod.drive(EP).emit({"t": 3}, "late").complete(),  # after ["b"]
    ))  # then COMPLETED [{"t": 3}], COMPLETED ["late"], COMPLETED []: drained, done
    job = atlas.run_job(provider=rp, endpoint=EP, input=1)
    chunks = list(atlas.stream_job(job, provider=rp))
    assert chunks == ["a", "b", {"t": 3}, "late"]
    assert len(sent.sent("GET", rf"/v2/{EP}/stream/.+")) == 7
    assert sleeps[0] < sleeps[1] and all(s > 0 for s in sleeps)  # backoff while empty
    assert len(sleeps) == 4  # no pause while draining after COMPLETED
    assert atlas.get_job(job, provider=rp).output == chunks


def test_stream_by_id_needs_the_endpoint(sb: Sandbox, rp: RunPod) -> None:
    job = atlas.run_job(provider=rp, endpoint=EP, input=1)
    sb.runpod.drive(EP, job.id).start().complete(1)  # a plain handler: one chunk, its output
    assert list(atlas.stream_job(job.id, endpoint=EP, provider=rp)) == [1]
    with pytest.raises(atlas.ValidationError):
        atlas.stream_job(job.id, provider=rp)


@pytest.mark.parametrize(
    ("status", "error", "match"),
    [("FAILED", atlas.ProviderError, "failed: CUDA out of memory"),
     ("TIMED_OUT", atlas.Timeout, "timed out"),
     ("CANCELLED", atlas.ProviderError, "was cancelled")],
)
def test_stream_raises_the_jobs_error(
    sb: Sandbox, http: httpx.Client, sleeps: list[float], status: str,
    error: type[Exception], match: str
) -> None:
    clock = sb.clock
    assert isinstance(clock, ManualClock)

    def end() -> None:
        worker = sb.runpod.drive(EP).emit(2)
        if status == "FAILED":
            worker.fail("CUDA out of memory")
        elif status == "TIMED_OUT":
            clock.advance(601)  # past the default executionTimeout of 600 s
        else:
            worker.cancel()
        assert worker.status == status

    rp = RunPod(http=http, sleep=driven(sleeps, end))
    job = atlas.run_job(provider=rp, endpoint=EP, input=1)
    sb.runpod.drive(EP, job.id).start().emit(1)
    got: list[Any] = []
    with pytest.raises(error, match=match):
        for chunk in atlas.stream_job(job, provider=rp):
            got.append(chunk)
    assert got == [1, 2]


def test_a_failed_stream_without_its_error_reads_it_from_status() -> None:
    # A /stream answer may carry no ``error`` (the sandbox's always does): /status has it.
    def answer(request: httpx.Request) -> httpx.Response:
        if "/stream/" in request.url.path:
            return httpx.Response(200, json={"status": "FAILED", "stream": [{"output": 1}]})
        return httpx.Response(200, json={"id": "j1", "status": "FAILED",
                                         "error": "CUDA out of memory"})

    rp = RunPod(api_key=KEY, base_url="http://runpod.test", http=httpx.MockTransport(answer),
                sleep=lambda _: None)
    got: list[Any] = []
    with pytest.raises(atlas.ProviderError, match="failed: CUDA out of memory"):
        for chunk in atlas.stream_job("j1", endpoint=EP, provider=rp):
            got.append(chunk)
    assert got == [1]


def test_ctrl_c_during_a_stream_cancels_the_job(sb: Sandbox, http: httpx.Client,
                                                sent: Recorder) -> None:
    rp = RunPod(http=http, sleep=_interrupt)
    job = atlas.run_job(provider=rp, endpoint=EP, input=1)
    with pytest.raises(KeyboardInterrupt):
        list(atlas.stream_job(job, provider=rp))
    assert len(sent.sent("POST", rf"/v2/{EP}/cancel/.+")) == 1
    assert sb.runpod.drive(EP, job.id).status == "CANCELLED"


# -- parallel spawns ----------------------------------------------------------------------------
def test_spawn_many_keeps_order_and_names(sb: Sandbox, rp: RunPod) -> None:
    computes = spawn_many(count=5, provider=rp, gpu="h100", image="i:1", name="batch")
    assert [c.name for c in computes] == [f"batch-{i}" for i in range(1, 6)]
    assert len({c.id for c in computes}) == 5 and set(sb.runpod.pods) == {c.id for c in computes}
    assert spawn_many(count=0, provider=rp, gpu="h100", image="i:1") == []


@pytest.mark.parametrize(("args", "fields", "needle"), [
    ({}, {"gpu": "h100", "image": "i:1"}, "either requests"),
    ({"requests": [{"image": "i:1"}], "count": 2}, {}, "either requests"),
    ({"count": -1}, {"image": "i:1"}, "count=-1"),
    ({"count": 2, "max_workers": 0}, {"image": "i:1"}, "max_workers=0"),
    ({"requests": [{"image": "i:1"}]}, {"gpu": "h100"}, "inside each request"),
    ({"requests": [{"image": "i:1", "gpu": "h100"}, {"gpu": "h100"}]}, {}, "image"),
])
def test_spawn_many_validates_everything_before_sending(
    rp: RunPod, sent: Recorder, args: dict[str, Any], fields: dict[str, Any], needle: str
) -> None:
    with pytest.raises(atlas.ValidationError, match=needle):
        spawn_many(provider=rp, **args, **fields)
    assert sent == []


def test_spawn_many_undoes_a_failed_batch(sb: Sandbox, rp: RunPod) -> None:
    sb.faults(CREATE, sequence=[None, None, 400, None])
    with pytest.raises(atlas.ValidationError, match="injected fault"):
        spawn_many(count=4, provider=rp, gpu="h100", image="i:1", max_workers=1)
    pods = sb.runpod.pods
    assert len(pods) == 3 and {p["status"] for p in pods.values()} == {"TERMINATED"}


def test_spawn_many_undoes_and_reraises_an_interrupt(sb: Sandbox, http: httpx.Client,
                                                     rp: RunPod) -> None:
    creates = 0

    def interrupt_second_create(request: httpx.Request) -> None:
        nonlocal creates
        if request.method == "POST" and _rel(request) == "/v2/pods":
            creates += 1
            if creates == 2:
                raise KeyboardInterrupt

    http.event_hooks["request"].append(interrupt_second_create)
    with pytest.raises(KeyboardInterrupt):
        spawn_many(count=3, provider=rp, gpu="h100", image="i:1", max_workers=1)
    pods = sb.runpod.pods
    assert pods and {p["status"] for p in pods.values()} == {"TERMINATED"}


# -- the hot path stays correct ----------------------------------------------------------------
def test_the_facade_reuses_one_runpod_that_follows_config(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = resolve("runpod")
    assert resolve("runpod") is shared and isinstance(shared, RunPod)
    assert resolve("runpod", api_key="k") is not shared  # per-call options: a fresh one
    monkeypatch.setenv("RUNPOD_API_KEY", "env-key-123456")
    assert shared.api_key() == "env-key-123456"
    assert shared.client("rest").base_url == "https://api.runpod.io"
    sandbox.attach("http://sandbox.test")
    assert shared.api_key() == sandbox.sandbox_key("runpod")
    assert shared.client("serverless").base_url == "http://sandbox.test/runpod/serverless"


def test_cookies_are_never_kept_between_calls() -> None:
    # The sandbox sets no cookies; one scripted answer that does, and two calls after it.
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"pods": []},
                              headers={"set-cookie": "session=abc123; Path=/"})

    rp = RunPod(api_key=KEY, base_url="http://runpod.test", http=httpx.MockTransport(answer))
    rp.list_compute()
    rp.list_compute()
    assert len(seen) == 2 and all("cookie" not in r.headers for r in seen)
