"""The Lambda Cloud provider against an in-memory Lambda (``httpx.MockTransport``) shaped like
the v1.8.3 spec. The fake validates every launch body and every instance it returns against
the spec's schemas, so a drift on either side fails here."""

from __future__ import annotations

import copy
import itertools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

import atlas_nb as atlas
from atlas_nb import telemetry
from atlas_nb._http import RetryPolicy
from atlas_nb.providers.lambda_labs import LAUNCH_ATTEMPTS, LambdaLabs, wire
from atlas_nb.providers.lambda_labs.launch_gate import LaunchGate, account_of
from atlas_nb.sandbox.lambda_labs_instances import container_env

KEY = "lambda-test-key-0123456789"
BASE = "http://lambda.test"
SPEC = json.loads((Path(atlas.__file__).parent / "sandbox" / "specs" / "lambda"
                   / "lambda-cloud-api-openapi-1.8.3.json").read_text(encoding="utf-8"))
LAUNCH = "/api/v1/instance-operations/launch"

Fault = Callable[[httpx.Request], httpx.Response | None] | None


def _validator(schema: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**SPEC, "$ref": f"#/components/schemas/{schema}"})


def _type(name: str, gpus: int, cents: int, regions: list[str], desc: str) -> dict[str, Any]:
    return {
        "instance_type": {"name": name, "description": f"{gpus}x {desc}", "gpu_description": desc,
                          "price_cents_per_hour": cents,
                          "specs": {"vcpus": 30, "memory_gib": 200, "storage_gib": 1400,
                                    "gpus": gpus}},
        "regions_with_capacity_available": [{"name": r, "description": r} for r in regions],
    }


def _error(status: int, code: str, message: str, suggestion: str = "Try again.") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message,
                                                  "suggestion": suggestion}})


class Clock:
    """A monotonic clock for the launch gate and a ``sleep`` that advances it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeLambda:
    """Instance types, launch/terminate/restart, list/get/rename, in memory."""

    def __init__(self) -> None:
        self._launch_schema = _validator("InstanceLaunchRequest")
        self._instance_schema = _validator("Instance")
        self.types: dict[str, Any] = {
            "gpu_1x_a10": _type("gpu_1x_a10", 1, 129, ["us-east-1", "us-west-1"],
                                "A10 (24 GB PCIe)"),
            "gpu_1x_h100_sxm5": _type("gpu_1x_h100_sxm5", 1, 429, ["us-south-2"],
                                      "H100 (80 GB SXM5)"),
            "gpu_8x_h100_sxm5": _type("gpu_8x_h100_sxm5", 8, 3192, [], "H100 (80 GB SXM5)"),
            "cpu_4x_general": _type("cpu_4x_general", 0, 20, ["us-west-1"], "N/A"),
        }
        self.instances: dict[str, dict[str, Any]] = {}
        self.user_data: dict[str, str] = {}
        self.requests: list[httpx.Request] = []
        self.faults: dict[tuple[str, str], list[Fault]] = {}
        self._ids = itertools.count(1)

    def provider(self, clock: Clock | None = None, gate: LaunchGate | None = None,
                 sleep: Callable[[float], None] | None = None,
                 retry: RetryPolicy | None = None) -> LambdaLabs:
        clock = clock or Clock()
        return LambdaLabs(api_key=KEY, base_url=BASE, http=httpx.MockTransport(self.handle),
                          sleep=sleep or clock.sleep, gate=gate or LaunchGate(clock), retry=retry)

    def fault(self, method: str, path: str, *fns: Fault) -> None:
        self.faults.setdefault((method, path), []).extend(fns)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    def launched(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.sent("POST", LAUNCH)]

    def set_status(self, instance_id: str, status: str) -> None:
        inst = self.instances[instance_id]
        inst["status"] = status
        if status == "active":
            inst.update(ip="198.51.100.7", private_ip="10.0.0.7", hostname="198.51.100.7",
                        jupyter_token="j" * 32,
                        jupyter_url="https://jupyter-x.lambdaspaces.com/?token=" + "j" * 32)

    # -- the API ---------------------------------------------------------------------------
    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return _error(401, "global/invalid-api-key", "API key was invalid or deleted.")
        queue = self.faults.get((request.method, request.url.path))
        if queue:
            fault = queue.pop(0)
            answer = fault(request) if fault else None
            if answer is not None:
                return answer
        return self.serve(request)

    def _data(self, payload: Any) -> httpx.Response:
        return httpx.Response(200, json={"data": payload})

    def _valid(self, inst: dict[str, Any]) -> dict[str, Any]:
        errors = [e.message for e in self._instance_schema.iter_errors(inst)]
        assert not errors, f"the fake made an invalid Instance: {errors}"
        return copy.deepcopy(inst)

    def serve(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        if (method, path) == ("GET", "/api/v1/instance-types"):
            return self._data(copy.deepcopy(self.types))
        if (method, path) == ("GET", "/api/v1/instances"):
            return self._data([self._valid(i) for i in self.instances.values()
                               if i["status"] != "terminated"])
        if path.startswith("/api/v1/instances/"):
            inst = self.instances.get(path.rsplit("/", 1)[1])
            if inst is None:
                return _error(404, "global/object-does-not-exist",
                              "Specified instance does not exist.")
            if method == "POST":
                inst["name"] = json.loads(request.content)["name"]
            return self._data(self._valid(inst))
        body = json.loads(request.content)
        if path == LAUNCH:
            return self._launch(body)
        if path.endswith(("/terminate", "/restart")):
            found = [self.instances.get(i) for i in body["instance_ids"]]
            if None in found:
                return _error(404, "global/object-does-not-exist",
                              "Specified instance does not exist.")
            action = "terminated" if path.endswith("/terminate") else "restarted"
            for inst in found:
                assert inst is not None
                inst["status"] = "terminating" if action == "terminated" else "booting"
            return self._data({f"{action}_instances": [self._valid(i) for i in found
                                                       if i is not None]})
        return _error(404, "global/object-does-not-exist", f"no route {method} {path}")

    def _launch(self, body: dict[str, Any]) -> httpx.Response:
        errors = [e.message for e in self._launch_schema.iter_errors(body)]
        assert not errors, f"the provider sent an invalid InstanceLaunchRequest: {errors}"
        item = self.types.get(body["instance_type_name"])
        if item is None:
            return _error(404, "global/object-does-not-exist", "Instance type does not exist.")
        regions = [r["name"] for r in item["regions_with_capacity_available"]]
        if body["region_name"] not in regions:
            return _error(400, "instance-operations/launch/insufficient-capacity",
                          "Not enough capacity to fulfill launch request.")
        iid = f"{next(self._ids):032x}"
        self.user_data[iid] = body.get("user_data", "")
        self.instances[iid] = {
            "id": iid, "name": body["name"], "status": "booting",
            "ssh_key_names": body["ssh_key_names"], "file_system_names": [],
            "region": {"name": body["region_name"], "description": "somewhere"},
            "instance_type": copy.deepcopy(item["instance_type"]),
            "actions": {a: {"available": True}
                        for a in ("migrate", "rebuild", "restart", "cold_reboot", "terminate")},
            "tags": body.get("tags", []),
        }
        return self._data({"instance_ids": [iid]})


@pytest.fixture
def fake() -> FakeLambda:
    return FakeLambda()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _spawn(provider: LambdaLabs, **fields: Any) -> atlas.Compute:
    fields.setdefault("image", "ghcr.io/me/srv:1")
    fields.setdefault("provider_opts", {"ssh_key_names": ["my-key"]})
    return atlas.spawn_compute(provider=provider, **fields)


def _rate_limited(request: httpx.Request) -> httpx.Response:
    return httpx.Response(429, text="error code: 1015")


# -- spawn ----------------------------------------------------------------------------------------
def test_spawn_launches_a_spec_valid_request_and_returns_the_instance(
    fake: FakeLambda, clock: Clock
) -> None:
    c = _spawn(fake.provider(clock), gpu="h100", ports=[(8000, "http")], auth="bearer",
               env={"MODEL": "llama"}, name="job-1")
    [body] = fake.launched()
    assert (body["instance_type_name"], body["region_name"]) == ("gpu_1x_h100_sxm5", "us-south-2")
    assert body["ssh_key_names"] == ["my-key"] and body["name"] == "job-1"
    assert (c.id, c.name, c.status, c.region) == ("1".zfill(32), "job-1", "provisioning",
                                                  "us-south-2")
    assert (c.gpu_type, c.gpu_count, c.cost_per_hour) == ("h100_sxm", 1, 4.29)
    assert [(p.internal, p.url) for p in c.ports] == [(8000, None)]
    assert c.auth is not None
    env = container_env(fake.user_data[c.id])
    assert env == {"MODEL": "llama", "ATLAS_PRESHARED_KEY": c.auth.token}
    assert clock.sleeps == []  # the first launch does not wait


def test_ready_instance_has_urls_on_its_public_ip(fake: FakeLambda) -> None:
    provider = fake.provider()
    c = _spawn(provider, gpu="a10", ports=[(8000, "http"), (9000, "tcp")])
    fake.set_status(c.id, "active")
    ready = atlas.wait_ready(c.id, provider=provider, timeout_s=5)
    assert [p.url for p in ready.ports] == ["http://198.51.100.7:8000", "tcp://198.51.100.7:9000"]
    assert ready.url == "http://198.51.100.7:8000" and ready.public_ip == "198.51.100.7"


def test_secrets_stay_out_of_raw_repr_and_telemetry(fake: FakeLambda) -> None:
    provider = fake.provider()
    seen: list[str] = []
    telemetry.attach("lambda-test", "*", lambda event, data: seen.append(json.dumps(data)))
    try:
        c = _spawn(provider, gpu="a10", auth="bearer")
        fake.set_status(c.id, "active")
        got = [c, atlas.get_compute(c.id, provider=provider),
               *atlas.list_compute(provider=provider)]
    finally:
        telemetry.detach("lambda-test")
    assert c.auth is not None
    for secret in (c.auth.token, "j" * 32, KEY):
        for compute in got:
            assert secret not in json.dumps(compute.raw) and secret not in repr(compute)
        assert not any(secret in line for line in seen)
    assert "user_data" not in json.dumps([x.raw for x in got])


def test_cpu_spawn_picks_a_cpu_type(fake: FakeLambda) -> None:
    c = _spawn(fake.provider(), gpu=None)
    assert fake.launched()[0]["instance_type_name"] == "cpu_4x_general"
    assert (c.gpu_type, c.gpu_count) == (None, 0)
    assert "--gpus" not in fake.user_data[c.id]


def test_provider_opts_merge_into_the_body(fake: FakeLambda) -> None:
    _spawn(fake.provider(), gpu="a10", region_hints=["us-west-1"],
           provider_opts={"ssh_key_names": ["k"], "firewall_rulesets": [{"id": "fw"}],
                          "tags": [{"key": "team", "value": "ml"}], "launch_interval_s": 0})
    [body] = fake.launched()
    assert body["region_name"] == "us-west-1" and body["firewall_rulesets"] == [{"id": "fw"}]
    assert {"key": "team", "value": "ml"} in body["tags"]
    assert "launch_interval_s" not in body


# -- ssh key --------------------------------------------------------------------------------------
def test_no_ssh_key_says_how_to_set_one_and_sends_nothing(fake: FakeLambda) -> None:
    with pytest.raises(atlas.ValidationError) as info:
        _spawn(fake.provider(), gpu="a10", provider_opts={})
    text = str(info.value)
    assert "ssh_key_name" in text and str(atlas.config.config_path()) in text
    assert "provider_opts={'ssh_key_names': ['my-key']}" in text
    assert fake.requests == []


@pytest.mark.parametrize("configured", ["cfg-key", ["cfg-key"]])
def test_ssh_key_from_the_config_file(fake: FakeLambda, config_file: Path,
                                      configured: Any) -> None:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps({"providers": {"lambda_labs": {"ssh_key_name": configured}}}))
    _spawn(fake.provider(), gpu="a10", provider_opts={})
    assert fake.launched()[0]["ssh_key_names"] == ["cfg-key"]


def test_more_than_one_ssh_key_is_refused(fake: FakeLambda) -> None:
    with pytest.raises(atlas.ValidationError, match="exactly one SSH key"):
        _spawn(fake.provider(), gpu="a10", provider_opts={"ssh_key_names": ["a", "b"]})


@pytest.mark.parametrize(
    ("fields", "kind", "match"),
    [
        ({"spot": True}, atlas.Unsupported, "no spot"),
        ({"cloud_type": "community"}, atlas.ValidationError, "own data centers"),
        ({"volume_gb": 50}, atlas.ValidationError, "file_system_names"),
        ({"network_volume_id": "fs"}, atlas.ValidationError, "file_system_names"),
        ({"template_id": "t", "image": None}, atlas.ValidationError, "no templates"),
        ({"provider_opts": {"ssh_key_names": ["k"], "user_data": "#!"}}, atlas.ValidationError,
         "user_data"),
        ({"name": "n" * 65}, atlas.ValidationError, "at most 64"),
        ({"provider_opts": {"ssh_key_names": ["k"], "name": "x"}}, atlas.ValidationError,
         "pass name="),
        ({"ports": [(22, "tcp")]}, atlas.ValidationError, "port 22"),
        ({"env": {"A": "x\ny"}}, atlas.ValidationError, "line break"),
        ({"cpus": 64}, atlas.ValidationError, "cpus>=64"),
        ({"gpu": "mi300x"}, atlas.Unsupported, "does not offer mi300x"),
        ({"gpu_count": 3}, atlas.Unsupported, "counts 1"),
        ({"provider_opts": {"ssh_key_names": ["k"], "launch_interval_s": -1}},
         atlas.ValidationError, "launch_interval_s"),
    ],
)
def test_requests_lambda_cannot_express_are_refused_before_launch(
    fake: FakeLambda, fields: dict[str, Any], kind: type, match: str
) -> None:
    with pytest.raises(kind, match=match):
        _spawn(fake.provider(), **{"gpu": "a10", **fields})
    assert fake.sent("POST", LAUNCH) == []


# -- capacity -------------------------------------------------------------------------------------
def test_insufficient_capacity_names_the_regions_that_have_some(fake: FakeLambda) -> None:
    with pytest.raises(atlas.ProviderError) as info:
        _spawn(fake.provider(), gpu="a10",
               provider_opts={"ssh_key_names": ["k"], "region_name": "us-south-1"})
    err = info.value
    assert err.status == 400 and wire.error_code(err.raw) == wire.INSUFFICIENT_CAPACITY
    assert "no capacity for gpu_1x_a10 in us-south-1" in err.message
    assert "us-east-1, us-west-1" in err.message
    assert err.hint == "pass region_hints=['us-east-1', 'us-west-1']"
    assert len(fake.sent("POST", LAUNCH)) == 1  # a refusal is final: never retried


def test_no_capacity_anywhere_fails_before_launching(fake: FakeLambda) -> None:
    with pytest.raises(atlas.ProviderError, match="no capacity for gpu_8x_h100_sxm5"):
        _spawn(fake.provider(), gpu="h100", gpu_count=8)
    assert fake.sent("POST", LAUNCH) == []


def test_unknown_ssh_key_is_a_validation_error_with_a_hint(fake: FakeLambda) -> None:
    fake.fault("POST", LAUNCH, lambda r: _error(404, "global/object-does-not-exist",
                                                "SSH key 'nope' does not exist."))
    with pytest.raises(atlas.ValidationError, match="SSH key 'nope'") as info:
        _spawn(fake.provider(), gpu="a10")
    assert info.value.hint is not None and "ssh_key_name" in info.value.hint


# -- launch retries: never a duplicate ------------------------------------------------------------
def test_429_waits_looks_up_then_retries_once(fake: FakeLambda, clock: Clock) -> None:
    fake.fault("POST", LAUNCH, _rate_limited)
    c = _spawn(fake.provider(clock), gpu="a10")
    assert len(fake.sent("POST", LAUNCH)) == 2 and len(fake.instances) == 1
    assert clock.sleeps == [LambdaLabs.launch_interval_s]  # no Retry-After: the interval
    assert [(r.method, r.url.path) for r in fake.requests] == [
        ("GET", "/api/v1/instance-types"),
        ("POST", LAUNCH),  # 429
        ("GET", "/api/v1/instances"),  # looked before retrying
        ("POST", LAUNCH),
        ("GET", f"/api/v1/instances/{c.id}"),
    ]


def test_429_after_the_instance_appeared_returns_it_without_relaunching(
    fake: FakeLambda, clock: Clock
) -> None:
    def launched_then_429(request: httpx.Request) -> httpx.Response:
        fake.serve(request)  # e.g. an earlier attempt whose answer was lost
        return _rate_limited(request)

    fake.fault("POST", LAUNCH, launched_then_429)
    c = _spawn(fake.provider(clock), gpu="a10", name="mine")
    assert len(fake.sent("POST", LAUNCH)) == 1 and list(fake.instances) == [c.id]


def test_retry_after_is_honoured(fake: FakeLambda, clock: Clock) -> None:
    fake.fault("POST", LAUNCH, lambda r: httpx.Response(429, text="slow down",
                                                        headers={"Retry-After": "3"}))
    _spawn(fake.provider(clock), gpu="a10", provider_opts={"ssh_key_names": ["k"],
                                                           "launch_interval_s": 0.5})
    assert clock.sleeps == [3.0]


def test_endless_429_gives_up_with_rate_limited(fake: FakeLambda, clock: Clock) -> None:
    fake.fault("POST", LAUNCH, *[_rate_limited] * LAUNCH_ATTEMPTS)
    with pytest.raises(atlas.RateLimited) as info:
        _spawn(fake.provider(clock), gpu="a10")
    assert len(fake.sent("POST", LAUNCH)) == LAUNCH_ATTEMPTS and fake.instances == {}
    assert info.value.hint is not None and "safe to try again" in info.value.hint


def test_lost_answer_finds_the_instance_instead_of_launching_again(
    fake: FakeLambda, clock: Clock
) -> None:
    def applied_then_lost(request: httpx.Request) -> httpx.Response:
        fake.serve(request)
        raise httpx.RemoteProtocolError("connection closed", request=request)

    fake.fault("POST", LAUNCH, applied_then_lost)
    c = _spawn(fake.provider(clock), gpu="a10")
    assert len(fake.sent("POST", LAUNCH)) == 1 and list(fake.instances) == [c.id]


def test_lost_answer_with_a_users_name_matches_on_the_marker(
    fake: FakeLambda, clock: Clock
) -> None:
    old = _spawn(fake.provider(clock), gpu="a10", name="svc")  # same name, other launch

    def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    fake.fault("POST", LAUNCH, dropped)
    new = _spawn(fake.provider(clock), gpu="a10", name="svc")
    assert new.id != old.id and len(fake.instances) == 2
    assert len(fake.sent("POST", LAUNCH)) == 3


def test_5xx_is_retried_after_a_lookup(fake: FakeLambda, clock: Clock) -> None:
    fake.fault("POST", LAUNCH, lambda r: _error(503, "provider/internal-unavailable",
                                                "Provider unavailable"))
    _spawn(fake.provider(clock), gpu="a10")
    assert len(fake.sent("POST", LAUNCH)) == 2 and len(fake.instances) == 1


# -- the launch gate ------------------------------------------------------------------------------
def test_gate_spaces_launches_per_account_in_call_order() -> None:
    clock = Clock()
    gate = LaunchGate(clock)
    assert [gate.reserve("a", 12.0) for _ in range(3)] == [0.0, 12.0, 24.0]
    assert gate.reserve("b", 12.0) == 0.0  # another key has its own slots
    clock.now += 30
    assert gate.reserve("a", 12.0) == 6.0
    gate.defer("b", 40.0)
    assert gate.reserve("b", 12.0) == 40.0
    assert account_of(BASE, KEY) != account_of(BASE, KEY + "x") and KEY not in account_of(BASE, KEY)


def test_second_launch_waits_the_interval(fake: FakeLambda, clock: Clock) -> None:
    provider = fake.provider(clock)
    _spawn(provider, gpu="a10")
    _spawn(provider, gpu="a10")
    assert clock.sleeps == [12.0]
    _spawn(provider, gpu="a10", provider_opts={"ssh_key_names": ["k"], "launch_interval_s": 0})
    assert clock.sleeps == [12.0, 12.0]  # its own slot was reserved 12 s after the last


def test_a_waiting_launch_blocks_no_other_call(fake: FakeLambda) -> None:
    """While one thread waits for its launch slot, get/list/terminate go through."""
    clock = Clock()
    gate = LaunchGate(clock)
    released = threading.Event()
    waiting = threading.Event()

    def blocking_sleep(seconds: float) -> None:
        waiting.set()
        assert released.wait(10), "the test never released the launch"

    provider = fake.provider(clock, gate=gate, sleep=blocking_sleep)
    first = _spawn(provider, gpu="a10")
    gate.reserve(account_of(BASE, KEY), 12.0)  # another launch holds the next slot
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(_spawn(provider, gpu="a10")))
    worker.start()
    try:
        assert waiting.wait(10)
        assert atlas.get_compute(first.id, provider=provider).id == first.id
        assert [c.id for c in atlas.list_compute(provider=provider)] == [first.id]
        atlas.terminate(first.id, provider=provider)
        assert len(fake.sent("POST", LAUNCH)) == 1  # the second launch is still waiting
    finally:
        released.set()
        worker.join(10)
    assert len(result) == 1 and len(fake.sent("POST", LAUNCH)) == 2


# -- get / list / terminate / extras --------------------------------------------------------------
def test_get_unknown_is_not_found(fake: FakeLambda) -> None:
    with pytest.raises(atlas.NotFound, match="does not exist"):
        atlas.get_compute("f" * 32, provider=fake.provider())


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [(401, "global/invalid-api-key", atlas.Unauthorized),
     (403, "global/account-inactive", atlas.Forbidden),
     (500, "global/internal-error", atlas.ProviderError)],
)
def test_error_envelopes_map_to_kinds(fake: FakeLambda, status: int, code: str,
                                      kind: type) -> None:
    fake.fault("GET", "/api/v1/instances", *[lambda r: _error(status, code, "Nope.")] * 4)
    provider = fake.provider(retry=RetryPolicy(attempts=1))
    with pytest.raises(kind) as info:
        atlas.list_compute(provider=provider)
    assert info.value.provider == "lambda_labs" and info.value.status == status
    assert wire.error_code(info.value.raw) == code


def test_bad_key_says_how_to_fix_it(fake: FakeLambda) -> None:
    provider = LambdaLabs(api_key="wrong-key-123", base_url=BASE,
                          http=httpx.MockTransport(fake.handle))
    with pytest.raises(atlas.Unauthorized) as info:
        atlas.list_compute(provider=provider)
    assert info.value.hint and "lambda_labs" in info.value.hint
    assert "wrong-key-123" not in str(info.value)


def test_list_filters(fake: FakeLambda, clock: Clock) -> None:
    provider = fake.provider(clock)
    a = _spawn(provider, gpu="a10", name="web-a")
    h = _spawn(provider, gpu="h100", name="web-h")
    _spawn(provider, gpu=None, name="cpu")
    fake.set_status(a.id, "active")

    def ids(**f: Any) -> list[str]:
        return [c.id for c in atlas.list_compute(provider=provider, **f)]

    assert ids(name="web-") == [a.id, h.id]
    assert ids(status="running") == [a.id]
    assert ids(gpu="h100") == [h.id] and ids(gpu="h100_sxm") == [h.id]
    assert ids(region="us-south-2") == [h.id]
    with pytest.raises(atlas.ValidationError, match="unknown status"):
        atlas.list_compute(provider=provider, status="exited")


def test_terminate_is_idempotent(fake: FakeLambda) -> None:
    provider = fake.provider()
    c = _spawn(provider, gpu="a10")
    atlas.terminate(c.id, provider=provider)
    atlas.terminate(c.id, provider=provider)
    assert atlas.get_compute(c.id, provider=provider).status == "terminated"  # terminating
    del fake.instances[c.id]
    atlas.terminate(c.id, provider=provider)  # gone: 404 is fine
    with pytest.raises(atlas.ValidationError):
        atlas.terminate("", provider=provider)


def test_terminate_refused_as_invalid_is_fine_once_terminated(fake: FakeLambda) -> None:
    provider = fake.provider()
    c = _spawn(provider, gpu="a10")
    fake.instances[c.id]["status"] = "terminated"
    fake.fault("POST", "/api/v1/instance-operations/terminate",
               lambda r: _error(400, "global/invalid-parameters", "Already terminated."))
    atlas.terminate(c.id, provider=provider)
    fake.instances[c.id]["status"] = "active"
    fake.fault("POST", "/api/v1/instance-operations/terminate",
               lambda r: _error(400, "global/invalid-parameters", "Cannot terminate."))
    with pytest.raises(atlas.ValidationError, match="Cannot terminate"):
        atlas.terminate(c.id, provider=provider)


def test_stop_and_start_are_unsupported(fake: FakeLambda) -> None:
    provider = fake.provider()
    assert "stop_start" not in atlas.capabilities(provider)
    assert atlas.capabilities(provider) == frozenset({"raw_tcp", "symmetric_ports"})
    with pytest.raises(atlas.Unsupported, match="terminate it instead"):
        atlas.stop("x", provider=provider)
    with pytest.raises(atlas.Unsupported):
        atlas.start("x", provider=provider)
    with pytest.raises(atlas.Unsupported):
        atlas.run_job(provider=provider, endpoint="e", input={})


def test_restart_and_rename(fake: FakeLambda) -> None:
    provider = fake.provider()
    c = _spawn(provider, gpu="a10", name="old")
    fake.set_status(c.id, "active")
    assert provider.restart(c.id).status == "provisioning"
    assert provider.rename(c.id, "new").name == "new"
    assert json.loads(fake.sent("POST", f"/api/v1/instances/{c.id}")[0].content) == {"name": "new"}
    with pytest.raises(atlas.NotFound):
        provider.restart("f" * 32)


def test_gpu_catalog(fake: FakeLambda) -> None:
    types = {g.id: g for g in atlas.list_gpu_types(provider=fake.provider())}
    assert set(types) == {"gpu_1x_a10", "gpu_1x_h100_sxm5", "gpu_8x_h100_sxm5"}
    assert types["gpu_1x_a10"].price_per_hour == 1.29
    assert types["gpu_1x_a10"].regions == ("us-east-1", "us-west-1")
    assert types["gpu_8x_h100_sxm5"].stock == "none"


def test_launched_but_not_yet_readable_returns_what_is_known(fake: FakeLambda) -> None:
    fake.fault("GET", f"/api/v1/instances/{1:032x}",
               lambda r: _error(404, "global/object-does-not-exist", "Not yet."))
    c = _spawn(fake.provider(), gpu="a10", ports=[(8000, "http")], name="early")
    assert (c.id, c.status, c.name, c.region) == (f"{1:032x}", "provisioning", "early",
                                                  "us-east-1")
    assert (c.cost_per_hour, c.gpu_count, c.ports[0].internal) == (1.29, 1, 8000)
    assert len(fake.sent("POST", LAUNCH)) == 1
