"""The sandbox's control API (``S/_control``) and its client: faults, clock, GPU stock.

In-process first (``sb.control()``, no socket), then against a sandbox in another process,
with the effects observed through provider calls, as a failover test would.
"""

from __future__ import annotations

import inspect
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb import sandbox
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.control import Control, ControlError
from atlas_nb.sandbox.faults import Faults
from atlas_nb.sandbox.runpod.graphql import NO_CAPACITY
from atlas_nb.sandbox.server import Sandbox

RUNPOD = {"Authorization": f"Bearer {sandbox.sandbox_key('runpod')}"}
H100_SXM = "NVIDIA H100 80GB HBM3"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(start_server=False, attach=False, clock=ManualClock(),
                 provision_delay_s=10, start_delay_s=10) as box:
        yield box


@pytest.fixture
def ctl(sb: Sandbox) -> Iterator[Control]:
    with sb.control() as control:
        yield control


def _pod(http: httpx.Client, gpu: str = "NVIDIA L4", count: int = 1) -> httpx.Response:
    return http.post("/runpod/rest/v2/pods",
                     json={"name": "c", "image": "i", "gpu": {"id": gpu, "count": count}})


# -- faults ----------------------------------------------------------------------------------
def test_a_rule_posted_as_json_acts_and_reports_like_an_in_process_one(
    sb: Sandbox, ctl: Control
) -> None:
    rule = ctl.faults("runpod/rest:POST /v2/pods", error_rate={503: 1.0}, count=1)
    assert rule.data["error_rate"] == {"503": 1.0} and rule.data["count"] == 1
    assert [r.route for r in sb.faults.rules] == ["runpod/rest:POST /v2/pods"]
    with sb.client(headers=RUNPOD) as http:
        assert _pod(http).status_code == 503
        assert _pod(http).status_code == 201  # count=1: spent
    assert rule.matched == 1 and rule.injected == {503: 1} and rule.exhausted
    rule.clear()
    rule.clear()  # already gone: no error
    assert sb.faults.rules == [] and ctl.faults.rules == []


def test_every_fault_parameter_travels_and_rebuilds_the_same_rule(
    sb: Sandbox, ctl: Control
) -> None:
    """Generic: whatever ``Faults.__call__`` takes, the control API takes (no per-kind code)."""
    local = sb.faults("vast:PUT /api/v0/asks/*", latency_ms=5, error_rate={500: 0.25},
                      rate_limit_429=0.25, retry_after_s=3, drop_rate=0.1, seed=7, count=4)
    params = set(inspect.signature(Faults.__call__).parameters) - {"self"}
    sent = {k: v for k, v in local.to_dict().items() if k in params}
    local.clear()
    remote = ctl.faults(**sent)
    assert {k: remote.data[k] for k in sent} == sent  # the same rule, rebuilt over HTTP
    seen = ctl.faults.rules
    assert [r.id for r in seen] == [remote.id]
    with sb.client() as http:
        for name in params:  # every parameter is accepted (a refusal would say "unknown")
            r = http.post("/_control/faults", json={name: None} if name != "route" else {})
            assert "unknown fault parameter" not in r.text, name


def test_scripted_rules_and_rules_added_in_process_are_listed(sb: Sandbox, ctl: Control) -> None:
    in_process = sb.faults("fly:*", latency_ms=1)
    scripted = ctl.faults("runpod/rest:GET /v2/pods", sequence=[500, "pass"])
    ids = [r.id for r in ctl.faults.rules]
    assert len(set(ids)) == 2 and ids[1] == scripted.id
    with sb.client(headers=RUNPOD) as http:
        assert [http.get("/runpod/rest/v2/pods").status_code for _ in range(3)] == [500, 200, 200]
    assert scripted.injected == {500: 1}
    ctl.faults.clear()
    assert sb.faults.rules == [] and in_process.matched == 0


def test_bad_rules_are_refused_whole_with_a_reason(sb: Sandbox, ctl: Control) -> None:
    with pytest.raises(ControlError) as unknown:
        ctl.faults("*", explode=True)
    assert unknown.value.status == 400 and "unknown fault parameter(s) ['explode']" in str(
        unknown.value)
    with pytest.raises(ControlError, match=r"add up to at most 1\.0") as bad:
        ctl.faults("*", drop_rate=0.8, error_rate={500: 0.8})
    assert bad.value.status == 400
    with sb.client() as http:
        both = http.post("/_control/faults", json=[{"route": "a"}, {"route": "b", "count": -1}])
        assert both.status_code == 400 and sb.faults.rules == []  # none of a bad batch stays
        assert http.post("/_control/faults", content=b"{").status_code == 400
        assert http.get("/_control/faults/99").json() == {"error": "no fault rule 99"}
        assert http.put("/_control/faults").status_code == 405
        assert http.get("/_control/nope").status_code == 404
        assert http.get("/_control").json()["faults"] == "/_control/faults"
        assert http.get("/").json()["control"] == "/_control"


def test_control_requests_are_never_faulted_or_counted(sb: Sandbox, ctl: Control) -> None:
    sb.faults("*", drop_rate=1.0)
    assert len(ctl.faults.rules) == 1
    assert ctl.stats()["requests"] == 0
    ctl.faults.clear()
    with sb.client(headers=RUNPOD) as http:
        http.get("/runpod/rest/v2/pods")
    assert ctl.stats()["requests"] == 1
    ctl.reset_stats()
    assert sb.stats()["requests"] == 0


def test_violations_read_and_clear(sb: Sandbox, ctl: Control) -> None:
    sb._report("runpod/rest GET /v2/pods: response 200: a test violation")
    assert ctl.violations == ["runpod/rest GET /v2/pods: response 200: a test violation"]
    ctl.clear_violations()
    assert sb.violations == []


# -- clock -----------------------------------------------------------------------------------
def test_a_manual_clock_moves_over_http_and_lifecycles_follow(sb: Sandbox, ctl: Control) -> None:
    assert ctl.clock.manual and ctl.clock.time() == sb.clock.time()
    with sb.client(headers=RUNPOD) as http:
        pod = _pod(http).json()
        assert http.get(f"/runpod/rest/v2/pods/{pod['id']}").json()["status"] == "PROVISIONING"
        before = sb.clock.time()
        assert ctl.clock.advance(15) == before + 15 == sb.clock.time()
        assert http.get(f"/runpod/rest/v2/pods/{pod['id']}").json()["status"] == "STARTING"
        ctl.clock.advance(10)
        assert http.get(f"/runpod/rest/v2/pods/{pod['id']}").json()["status"] == "RUNNING"
    with sb.client() as http:
        assert http.post("/_control/clock", json={"advance_s": -1}).status_code == 400
        assert http.post("/_control/clock", json={"advance_s": True}).status_code == 400


def test_the_wall_clock_cannot_be_moved() -> None:
    with Sandbox(start_server=False, attach=False, clouds=["runpod"]) as box, \
            box.control() as ctl:
        assert not ctl.clock.manual
        with pytest.raises(ControlError, match="manual clock") as refused:
            ctl.clock.advance(5)
        assert refused.value.status == 409


# -- capacity --------------------------------------------------------------------------------
def test_runpod_out_of_h100s_fails_as_runpod_does(sb: Sandbox, ctl: Control) -> None:
    ctl.capacity.set("runpod", "h100", 0)  # the family: every H100 form factor
    assert ctl.capacity.snapshot() == {"runpod": {"h100": 0}} == sb.capacity.snapshot()
    with sb.client(headers=RUNPOD) as http:
        refused = _pod(http, H100_SXM)
        assert refused.status_code == 400 and "no capacity" in refused.json()["detail"]
        deploy = http.post("/runpod/graphql/graphql", json={"query": (
            'mutation { podFindAndDeployOnDemand(input: {gpuTypeId: "NVIDIA H100 PCIe", '
            'name: "od", imageName: "i", containerDiskInGb: 10}) { id } }')}).json()
        assert deploy["errors"][0]["message"] == NO_CAPACITY
        listed = http.get("/runpod/rest/v2/catalog/gpus",
                          params={"include": "AVAILABILITY", "product": "POD"})
        stock = {g["id"]: g["availability"] for g in listed.json()["gpus"]}
        assert stock[H100_SXM] == stock["NVIDIA H100 PCIe"] == "NONE"
        assert stock["NVIDIA L4"] != "NONE"
        assert _pod(http, "NVIDIA L4").status_code == 201  # other GPUs are untouched
        ctl.capacity.clear("runpod", "h100")
        assert ctl.capacity.snapshot() == {}
        assert _pod(http, H100_SXM).status_code == 201


def test_a_stock_count_is_taken_by_each_create(sb: Sandbox, ctl: Control) -> None:
    ctl.capacity.set("runpod", "l4", 3)
    with sb.client(headers=RUNPOD) as http:
        assert _pod(http, "NVIDIA L4", count=2).status_code == 201
        assert ctl.capacity.get("runpod", "l4") == 1
        assert _pod(http, "NVIDIA L4", count=2).status_code == 400  # 2 wanted, 1 left
        assert _pod(http, "NVIDIA L4").status_code == 201
        assert _pod(http, "NVIDIA L4").status_code == 400
    assert ctl.capacity.get("runpod", "l4") == 0


def test_lambda_out_of_capacity_empties_regions_and_refuses_launches(
    sb: Sandbox, ctl: Control
) -> None:
    ctl.capacity.set("lambda_labs", "h100_sxm", 0)
    auth = {"Authorization": f"Bearer {sandbox.sandbox_key('lambda_labs')}"}
    with sb.client(base_url=f"{sb.url}/lambda_labs/rest/api/v1", headers=auth) as http:
        types = http.get("/instance-types").json()["data"]
        assert types["gpu_8x_h100_sxm5"]["regions_with_capacity_available"] == []
        assert types["gpu_1x_a10"]["regions_with_capacity_available"] != []
        r = http.post("/instance-operations/launch", json={
            "region_name": "us-east-1", "instance_type_name": "gpu_8x_h100_sxm5",
            "ssh_key_names": ["k"]})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "instance-operations/launch/insufficient-capacity"


def test_vast_offers_disappear_and_a_known_offer_is_gone(sb: Sandbox, ctl: Control) -> None:
    auth = {"Authorization": f"Bearer {sandbox.sandbox_key('vast')}"}
    with sb.client(base_url=f"{sb.url}/vast/rest/api/v0", headers=auth) as http:
        def h100s() -> list[dict[str, Any]]:
            offers = http.post("/bundles/", json={"limit": 0}).json()["offers"]
            return [o for o in offers if str(o["gpu_name"]).startswith("H100")]

        known = h100s()
        assert known, "the Vast catalog has H100 offers"
        ctl.capacity.set("vast", "h100", 0)
        assert h100s() == []
        r = http.put(f"/asks/{known[0]['id']}/", json={"image": "i"})
        assert r.status_code == 404 and r.json()["error"] == "no_such_ask"
        ctl.capacity.clear("vast")
        assert len(h100s()) == len(known)


def test_fly_out_of_a_gpu_kind_is_insufficient_capacity(sb: Sandbox, ctl: Control) -> None:
    ctl.capacity.set("fly", "a100_80g", 0)
    auth = {"Authorization": f"Bearer {sandbox.sandbox_key('fly')}"}
    guest = {"cpu_kind": "performance", "cpus": 8, "memory_mb": 32768,
             "gpu_kind": "a100-sxm4-80gb"}
    with sb.client(base_url=f"{sb.url}/fly/machines/v1", headers=auth) as http:
        assert http.post("/apps", json={"name": "gpu", "org_slug": "personal"}
                         ).status_code == 201
        r = http.post("/apps/gpu/machines",
                      json={"region": "iad", "config": {"image": "i", "guest": guest}})
        assert r.status_code == 412 and r.json()["status"] == "insufficient_capacity"
        ctl.capacity.set("fly", "a100_80g", 1)
        ok = http.post("/apps/gpu/machines",
                       json={"region": "iad", "config": {"image": "i", "guest": guest}})
        assert ok.status_code == 200, ok.text
    assert ctl.capacity.get("fly", "a100_80g") == 0


def test_capacity_refuses_unknown_clouds_gpus_and_counts(sb: Sandbox, ctl: Control) -> None:
    for cloud, gpu, available, message in [
        ("nimbus", "h100", 0, "no cloud 'nimbus'"),
        ("runpod", "h1OO", 0, "did you mean h100"),
        ("runpod", "h100", -1, "whole number"),
    ]:
        with pytest.raises(ControlError, match=message) as refused:
            ctl.capacity.set(cloud, gpu, available)
        assert refused.value.status == 400
    with sb.client() as http:
        assert http.delete("/_control/capacity", params={"gpu": "h100"}).status_code == 400
    assert ctl.capacity.snapshot() == {}


# -- a sandbox in another process --------------------------------------------------------------
_CHILD = """
import sys, threading
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.server import Sandbox

with Sandbox(clock=ManualClock(), attach=False, provision_delay_s=60, start_delay_s=60) as sb:
    print("URL", sb.url, flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def _serve_elsewhere(argv: list[str], marker: str) -> Iterator[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ATLAS_NB_SANDBOX", None)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while True:
            found = re.search(marker, lines.get(timeout=60))
            if found:
                break
        yield found.group(1)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def cli_url() -> Iterator[str]:
    """``atlas-nb sandbox`` (``python -m atlas_nb.sandbox``) as a subprocess."""
    yield from _serve_elsewhere(
        [sys.executable, "-m", "atlas_nb.sandbox", "--provision-delay", "0", "--start-delay", "0"],
        r"listening on (http://\S+)")


def test_faults_injected_over_http_reach_a_provider_call_in_another_process(
    cli_url: str,
) -> None:
    sandbox.attach(cli_url)  # undone after the test by conftest
    with Control(cli_url) as ctl:
        rule = ctl.faults("runpod/rest:POST /v2/pods", error_rate={400: 1.0}, count=1)
        with pytest.raises(atlas.ValidationError, match="injected fault"):
            atlas.spawn_compute(provider="runpod", gpu="l4", image="atlas/test:1", name="ctl-a")
        assert rule.injected == {400: 1} and rule.exhausted
        made = atlas.spawn_compute(provider="runpod", gpu="l4", image="atlas/test:1",
                                   name="ctl-b")
        assert made.gpu_type == "l4"
        ctl.faults.clear()
        assert ctl.stats()["routes"]["runpod/rest POST /v2/pods"] == 2


def test_capacity_set_over_http_makes_a_provider_spawn_fail_for_stock(cli_url: str) -> None:
    sandbox.attach(cli_url)
    with Control(cli_url) as ctl:
        ctl.capacity.set("runpod", "h100", 0)
        try:
            with pytest.raises(atlas.AtlasError, match="no capacity"):
                atlas.spawn_compute(provider="runpod", gpu="h100", image="atlas/test:1",
                                    name="ctl-h100")
            rows = [g for g in atlas.list_gpu_types(provider="runpod")
                    if g.canonical in {"h100", "h100_sxm", "h100_pcie", "h100_nvl"}]
            assert rows and {g.stock for g in rows} == {"none"}
        finally:
            ctl.capacity.clear()
        made = atlas.spawn_compute(provider="runpod", gpu="h100", image="atlas/test:1",
                                   name="ctl-h100")
        assert made.gpu_type is not None and made.gpu_type.startswith("h100")


def test_a_manual_clock_in_another_process_moves_a_pod_to_running() -> None:
    for url in _serve_elsewhere([sys.executable, "-c", _CHILD], r"^URL (http://\S+)"):
        sandbox.attach(url)
        with Control(url) as ctl:
            assert ctl.clock.manual
            pod = atlas.spawn_compute(provider="runpod", gpu="l4", image="atlas/test:1",
                                      name="ctl-clock")
            assert atlas.get_compute(pod.id, provider="runpod").status == "provisioning"
            ctl.clock.advance(121)  # provision 60 s + start 60 s
            assert atlas.get_compute(pod.id, provider="runpod").status == "running"
