"""The Lambda Cloud provider against the in-process sandbox: what it launches, how it spaces
and retries launches without duplicates, how it maps Lambda's answers and errors.

One ``ManualClock`` is the only time: the sandbox's lifecycles and its 12 s launch limit,
the provider's launch gate and its ``sleep`` (which records, then advances it). Scripted
failures are sandbox faults (``sb.faults``); every exchange is checked against the vendored
v1.8.3 spec (``sb.violations == []``), so a drift on either side fails here."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb import telemetry
from atlas_nb._http import RetryPolicy
from atlas_nb.providers.lambda_labs import LAUNCH_ATTEMPTS, LambdaLabs, wire
from atlas_nb.providers.lambda_labs.launch_gate import LaunchGate, account_of
from atlas_nb.sandbox import sandbox_key, start
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.server import Sandbox

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

KEY = sandbox_key("lambda_labs")
REST = "/lambda_labs/rest"
LAUNCH = "/api/v1/instance-operations/launch"
LAUNCHES = f"lambda_labs:POST {LAUNCH}"
BOOT_S, TERMINATE_S, RETENTION_S = 60.0, 3.0, 60.0
CAPACITY = {"gpu_1x_h100_sxm5": ["us-south-2"], "gpu_8x_h100_sxm5": []}
"""Over the sandbox's default capacity: one H100 region, and no 8x H100 anywhere."""


class Recorder(list[httpx.Request]):
    """Every request the provider sent, in order (an httpx event hook)."""

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.url.path.removeprefix(REST)) for r in self]

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self if (r.method, r.url.path) == (method, REST + path)]

    def launched(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.sent("POST", LAUNCH)]


class Make(Protocol):
    def __call__(self, *, sleep: Callable[[float], None] | None = None,
                 retry: RetryPolicy | None = None) -> LambdaLabs: ...


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sb(clock: ManualClock) -> Iterator[Sandbox]:
    with start(clouds=["lambda_labs"], start_server=False, validate=True, clock=clock,
               provision_delay_s=BOOT_S, start_delay_s=BOOT_S,
               options={"lambda_labs": {"capacity": CAPACITY, "terminate_delay_s": TERMINATE_S,
                                        "terminated_retention_s": RETENTION_S}}) as box:
        yield box
        assert box.violations == [], "\n".join(box.violations)


@pytest.fixture
def sent(sb: Sandbox) -> Iterator[Recorder]:
    record = Recorder()
    yield record
    for request in record:  # the key travels in the header only, never in a URL
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert KEY not in str(request.url)


@pytest.fixture
def http(sb: Sandbox, sent: Recorder) -> Iterator[httpx.Client]:
    with sb.client(event_hooks={"request": [sent.append]}) as client:
        yield client


@pytest.fixture
def gate(clock: ManualClock) -> LaunchGate:
    """This test's launch gate (one per process in real life: every provider shares it)."""
    return LaunchGate(clock.time)


@pytest.fixture
def make(http: httpx.Client, clock: ManualClock, gate: LaunchGate, sleeps: list[float]) -> Make:
    def tick(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    def provider(*, sleep: Callable[[float], None] | None = None,
                 retry: RetryPolicy | None = None) -> LambdaLabs:
        return LambdaLabs(http=http, sleep=sleep or tick, gate=gate, retry=retry)

    return provider


@pytest.fixture
def lam(make: Make) -> LambdaLabs:
    return make()


def _spawn(provider: LambdaLabs, **fields: Any) -> atlas.Compute:
    fields.setdefault("image", "ghcr.io/me/srv:1")
    fields.setdefault("provider_opts", {"ssh_key_names": ["my-key"]})
    return atlas.spawn_compute(provider=provider, **fields)


# -- spawn ----------------------------------------------------------------------------------------
def test_spawn_launches_a_spec_valid_request_and_returns_the_instance(
    sb: Sandbox, lam: LambdaLabs, sent: Recorder, sleeps: list[float]
) -> None:
    c = _spawn(lam, gpu="h100", ports=[(8000, "http")], auth="bearer", env={"MODEL": "llama"},
               name="job-1")
    [body] = sent.launched()
    assert (body["instance_type_name"], body["region_name"]) == ("gpu_1x_h100_sxm5", "us-south-2")
    assert body["ssh_key_names"] == ["my-key"] and body["name"] == "job-1"
    assert list(sb.lambda_labs.instances) == [c.id]
    assert (c.name, c.status, c.region) == ("job-1", "provisioning", "us-south-2")
    assert (c.gpu_type, c.gpu_count, c.cost_per_hour) == ("h100_sxm", 1, 4.29)
    assert [(p.internal, p.url) for p in c.ports] == [(8000, None)]
    assert c.auth is not None
    assert sb.lambda_labs.pod_env(c.id) == {"MODEL": "llama", "ATLAS_PRESHARED_KEY": c.auth.token}
    assert sleeps == []  # the first launch does not wait


def test_ready_instance_has_urls_on_its_public_ip(sb: Sandbox, lam: LambdaLabs,
                                                  clock: ManualClock) -> None:
    c = _spawn(lam, gpu="a10", ports=[(8000, "http"), (9000, "tcp")])
    clock.advance(BOOT_S)
    ready = atlas.wait_ready(c.id, provider=lam, timeout_s=5)
    ip = sb.lambda_labs.instances[c.id]["ip"]
    assert [p.url for p in ready.ports] == [f"http://{ip}:8000", f"tcp://{ip}:9000"]
    assert ready.url == f"http://{ip}:8000" and ready.public_ip == ip


def test_secrets_stay_out_of_raw_repr_and_telemetry(sb: Sandbox, lam: LambdaLabs,
                                                    clock: ManualClock) -> None:
    seen: list[str] = []
    telemetry.attach("lambda-test", "*", lambda event, data: seen.append(json.dumps(data)))
    try:
        c = _spawn(lam, gpu="a10", auth="bearer")
        clock.advance(BOOT_S)
        got = [c, atlas.get_compute(c.id, provider=lam), *atlas.list_compute(provider=lam)]
    finally:
        telemetry.detach("lambda-test")
    assert c.auth is not None
    jupyter = sb.lambda_labs.instances[c.id]["jupyter_token"]
    for secret in (c.auth.token, jupyter, KEY):
        for compute in got:
            assert secret not in json.dumps(compute.raw) and secret not in repr(compute)
        assert not any(secret in line for line in seen)
    assert "user_data" not in json.dumps([x.raw for x in got])


def test_cpu_spawn_picks_a_cpu_type(sb: Sandbox, lam: LambdaLabs, sent: Recorder) -> None:
    c = _spawn(lam, gpu=None)
    assert sent.launched()[0]["instance_type_name"] == "cpu_4x_general"
    assert (c.gpu_type, c.gpu_count) == (None, 0)
    assert "--gpus" not in (sb.lambda_labs.user_data(c.id) or "")


def test_provider_opts_merge_into_the_body(lam: LambdaLabs, sent: Recorder) -> None:
    _spawn(lam, gpu="a10", region_hints=["us-west-1"],
           provider_opts={"ssh_key_names": ["k"], "firewall_rulesets": [{"id": "fw"}],
                          "tags": [{"key": "team", "value": "ml"}], "launch_interval_s": 0})
    [body] = sent.launched()
    assert body["region_name"] == "us-west-1" and body["firewall_rulesets"] == [{"id": "fw"}]
    assert {"key": "team", "value": "ml"} in body["tags"]
    assert "launch_interval_s" not in body


# -- ssh key --------------------------------------------------------------------------------------
def test_no_ssh_key_says_how_to_set_one_and_sends_nothing(lam: LambdaLabs, sent: Recorder) -> None:
    with pytest.raises(atlas.ValidationError) as info:
        _spawn(lam, gpu="a10", provider_opts={})
    text = str(info.value)
    assert "ssh_key_name" in text and str(atlas.config.config_path()) in text
    assert "provider_opts={'ssh_key_names': ['my-key']}" in text
    assert sent == []


@pytest.mark.parametrize("configured", ["cfg-key", ["cfg-key"]])
def test_ssh_key_from_the_config_file(lam: LambdaLabs, sent: Recorder, config_file: Path,
                                      configured: Any) -> None:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps({"providers": {"lambda_labs": {"ssh_key_name": configured}}}))
    _spawn(lam, gpu="a10", provider_opts={})
    assert sent.launched()[0]["ssh_key_names"] == ["cfg-key"]


def test_more_than_one_ssh_key_is_refused(lam: LambdaLabs) -> None:
    with pytest.raises(atlas.ValidationError, match="exactly one SSH key"):
        _spawn(lam, gpu="a10", provider_opts={"ssh_key_names": ["a", "b"]})


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
    lam: LambdaLabs, sent: Recorder, fields: dict[str, Any], kind: type, match: str
) -> None:
    with pytest.raises(kind, match=match):
        _spawn(lam, **{"gpu": "a10", **fields})
    assert sent.sent("POST", LAUNCH) == []


# -- capacity -------------------------------------------------------------------------------------
def test_insufficient_capacity_names_the_regions_that_have_some(lam: LambdaLabs,
                                                                sent: Recorder) -> None:
    with pytest.raises(atlas.ProviderError) as info:
        _spawn(lam, gpu="a10", provider_opts={"ssh_key_names": ["k"], "region_name": "us-south-1"})
    err = info.value
    assert err.status == 400 and wire.error_code(err.raw) == wire.INSUFFICIENT_CAPACITY
    assert "no capacity for gpu_1x_a10 in us-south-1" in err.message
    assert "us-east-1, us-west-1" in err.message
    assert err.hint == "pass region_hints=['us-east-1', 'us-west-1']"
    assert len(sent.sent("POST", LAUNCH)) == 1  # a refusal is final: never retried


def test_no_capacity_anywhere_fails_before_launching(lam: LambdaLabs, sent: Recorder) -> None:
    with pytest.raises(atlas.ProviderError, match="no capacity for gpu_8x_h100_sxm5"):
        _spawn(lam, gpu="h100", gpu_count=8)
    assert sent.sent("POST", LAUNCH) == []


def test_unknown_ssh_key_is_a_validation_error_with_a_hint(sb: Sandbox, lam: LambdaLabs) -> None:
    sb.lambda_labs.ssh_keys = ["my-key"]
    with pytest.raises(atlas.ValidationError, match="SSH key 'nope'") as info:
        _spawn(lam, gpu="a10", provider_opts={"ssh_key_names": ["nope"]})
    assert info.value.hint is not None and "ssh_key_name" in info.value.hint
    assert sb.lambda_labs.instances == {}


# -- launch retries: never a duplicate ------------------------------------------------------------
def test_429_waits_looks_up_then_retries_once(sb: Sandbox, lam: LambdaLabs, sent: Recorder,
                                              sleeps: list[float]) -> None:
    sb.faults(LAUNCHES, sequence=[429], retry_after_s=None)  # Lambda's 429 has no Retry-After
    c = _spawn(lam, gpu="a10")
    assert len(sent.sent("POST", LAUNCH)) == 2 and len(sb.lambda_labs.instances) == 1
    assert sleeps == [LambdaLabs.launch_interval_s]  # no Retry-After: the interval
    assert sent.calls() == [
        ("GET", "/api/v1/instance-types"),
        ("POST", LAUNCH),  # 429
        ("GET", "/api/v1/instances"),  # looked before retrying
        ("POST", LAUNCH),
        ("GET", f"/api/v1/instances/{c.id}"),
    ]


def test_429_after_the_instance_appeared_returns_it_without_relaunching(
    sb: Sandbox, lam: LambdaLabs, sent: Recorder
) -> None:
    sb.faults(LAUNCHES, sequence=["applied:429"])  # e.g. an earlier attempt's answer was lost
    c = _spawn(lam, gpu="a10", name="mine")
    assert len(sent.sent("POST", LAUNCH)) == 1 and list(sb.lambda_labs.instances) == [c.id]


def test_retry_after_is_honoured(sb: Sandbox, lam: LambdaLabs, sleeps: list[float]) -> None:
    sb.faults(LAUNCHES, sequence=[429], retry_after_s=3)
    _spawn(lam, gpu="a10", provider_opts={"ssh_key_names": ["k"], "launch_interval_s": 0.5})
    assert sleeps == [3.0]


def test_endless_429_gives_up_with_rate_limited(sb: Sandbox, lam: LambdaLabs,
                                                sent: Recorder) -> None:
    sb.faults(LAUNCHES, sequence=[429] * LAUNCH_ATTEMPTS, retry_after_s=None)
    with pytest.raises(atlas.RateLimited) as info:
        _spawn(lam, gpu="a10")
    assert len(sent.sent("POST", LAUNCH)) == LAUNCH_ATTEMPTS and sb.lambda_labs.instances == {}
    assert info.value.hint is not None and "safe to try again" in info.value.hint


def test_lost_answer_finds_the_instance_instead_of_launching_again(
    sb: Sandbox, lam: LambdaLabs, sent: Recorder
) -> None:
    sb.faults(LAUNCHES, sequence=["lost"])  # applied, then the connection died
    c = _spawn(lam, gpu="a10")
    assert len(sent.sent("POST", LAUNCH)) == 1 and list(sb.lambda_labs.instances) == [c.id]


def test_lost_answer_with_a_users_name_matches_on_the_marker(
    sb: Sandbox, lam: LambdaLabs, sent: Recorder
) -> None:
    old = _spawn(lam, gpu="a10", name="svc")  # same name, other launch
    sb.faults(LAUNCHES, sequence=["drop"])  # never reached Lambda
    new = _spawn(lam, gpu="a10", name="svc")
    assert new.id != old.id and len(sb.lambda_labs.instances) == 2
    assert len(sent.sent("POST", LAUNCH)) == 3


def test_5xx_is_retried_after_a_lookup(sb: Sandbox, lam: LambdaLabs, sent: Recorder) -> None:
    sb.faults(LAUNCHES, sequence=[503])
    _spawn(lam, gpu="a10")
    assert len(sent.sent("POST", LAUNCH)) == 2 and len(sb.lambda_labs.instances) == 1


# -- the launch gate ------------------------------------------------------------------------------
def test_gate_spaces_launches_per_account_in_call_order() -> None:
    clock = ManualClock()
    gate = LaunchGate(clock.time)
    assert [gate.reserve("a", 12.0) for _ in range(3)] == [0.0, 12.0, 24.0]
    assert gate.reserve("b", 12.0) == 0.0  # another key has its own slots
    clock.advance(30)
    assert gate.reserve("a", 12.0) == 6.0
    gate.defer("b", 40.0)
    assert gate.reserve("b", 12.0) == 40.0
    base = "https://cloud.lambda.ai"
    assert account_of(base, KEY) != account_of(base, KEY + "x") and KEY not in account_of(base, KEY)


def test_second_launch_waits_the_interval(lam: LambdaLabs, sleeps: list[float]) -> None:
    _spawn(lam, gpu="a10")
    _spawn(lam, gpu="a10")
    assert sleeps == [12.0]
    _spawn(lam, gpu="a10", provider_opts={"ssh_key_names": ["k"], "launch_interval_s": 0})
    assert sleeps == [12.0, 12.0]  # its own slot was reserved 12 s after the last


def test_a_waiting_launch_blocks_no_other_call(sb: Sandbox, make: Make, gate: LaunchGate,
                                               clock: ManualClock, sent: Recorder) -> None:
    """While one thread waits for its launch slot, get/list/terminate go through."""
    released = threading.Event()
    waiting = threading.Event()

    def blocking_sleep(seconds: float) -> None:
        waiting.set()
        assert released.wait(10), "the test never released the launch"
        clock.advance(seconds)  # the slot has come: the sandbox's limit agrees

    provider = make(sleep=blocking_sleep)
    first = _spawn(provider, gpu="a10")
    gate.reserve(account_of(f"{sb.url}{REST}", KEY), 12.0)  # another launch holds the next slot
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(_spawn(provider, gpu="a10")))
    worker.start()
    try:
        assert waiting.wait(10)
        assert atlas.get_compute(first.id, provider=provider).id == first.id
        assert [c.id for c in atlas.list_compute(provider=provider)] == [first.id]
        atlas.terminate(first.id, provider=provider)
        assert len(sent.sent("POST", LAUNCH)) == 1  # the second launch is still waiting
    finally:
        released.set()
        worker.join(10)
    assert len(result) == 1 and len(sent.sent("POST", LAUNCH)) == 2


# -- get / list / terminate / extras --------------------------------------------------------------
def test_get_unknown_is_not_found(lam: LambdaLabs) -> None:
    with pytest.raises(atlas.NotFound, match="does not exist"):
        atlas.get_compute("f" * 32, provider=lam)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [(401, "global/invalid-api-key", atlas.Unauthorized),
     (403, "global/account-inactive", atlas.Forbidden),
     (500, "global/internal-error", atlas.ProviderError)],
)
def test_error_envelopes_map_to_kinds(sb: Sandbox, make: Make, status: int, code: str,
                                      kind: type) -> None:
    sb.faults("lambda_labs:GET /api/v1/instances", sequence=[status] * 4)
    provider = make(retry=RetryPolicy(attempts=1))
    with pytest.raises(kind) as info:
        atlas.list_compute(provider=provider)
    assert info.value.provider == "lambda_labs" and info.value.status == status
    assert wire.error_code(info.value.raw) == code


def test_bad_key_says_how_to_fix_it(sb: Sandbox) -> None:
    with sb.client() as http:  # not recorded: this key is meant to be wrong
        provider = LambdaLabs(api_key="wrong-key-123", http=http)
        with pytest.raises(atlas.Unauthorized) as info:
            atlas.list_compute(provider=provider)
    assert info.value.hint and "lambda_labs" in info.value.hint
    assert "wrong-key-123" not in str(info.value)


def test_list_filters(lam: LambdaLabs, clock: ManualClock) -> None:
    a = _spawn(lam, gpu="a10", name="web-a")
    clock.advance(BOOT_S)  # a is up; the next two still boot
    h = _spawn(lam, gpu="h100", name="web-h")
    _spawn(lam, gpu=None, name="cpu")

    def ids(**f: Any) -> list[str]:
        return [c.id for c in atlas.list_compute(provider=lam, **f)]

    assert ids(name="web-") == [a.id, h.id]
    assert ids(status="running") == [a.id]
    assert ids(gpu="h100") == [h.id] and ids(gpu="h100_sxm") == [h.id]
    assert ids(region="us-south-2") == [h.id]
    with pytest.raises(atlas.ValidationError, match="unknown status"):
        atlas.list_compute(provider=lam, status="exited")


def test_terminate_is_idempotent(lam: LambdaLabs, clock: ManualClock) -> None:
    c = _spawn(lam, gpu="a10")
    atlas.terminate(c.id, provider=lam)
    atlas.terminate(c.id, provider=lam)
    assert atlas.get_compute(c.id, provider=lam).status == "terminated"  # terminating
    clock.advance(TERMINATE_S + RETENTION_S)
    atlas.terminate(c.id, provider=lam)  # gone: 404 is fine
    with pytest.raises(atlas.ValidationError):
        atlas.terminate("", provider=lam)


def test_terminate_refused_as_invalid_is_fine_once_terminated(
    sb: Sandbox, lam: LambdaLabs, clock: ManualClock
) -> None:
    TERMINATE = "lambda_labs:POST /api/v1/instance-operations/terminate"
    c = _spawn(lam, gpu="a10")
    atlas.terminate(c.id, provider=lam)
    clock.advance(TERMINATE_S)  # terminated, still readable
    sb.faults(TERMINATE, sequence=[400])  # global/invalid-parameters
    atlas.terminate(c.id, provider=lam)
    live = _spawn(lam, gpu="a10")
    sb.faults(TERMINATE, sequence=[400])
    with pytest.raises(atlas.ValidationError, match="injected fault"):
        atlas.terminate(live.id, provider=lam)


def test_stop_and_start_are_unsupported(lam: LambdaLabs, sent: Recorder) -> None:
    assert "stop_start" not in atlas.capabilities(lam)
    assert atlas.capabilities(lam) == frozenset({"raw_tcp", "symmetric_ports"})
    with pytest.raises(atlas.Unsupported, match="terminate it instead"):
        atlas.stop("x", provider=lam)
    with pytest.raises(atlas.Unsupported):
        atlas.start("x", provider=lam)
    with pytest.raises(atlas.Unsupported):
        atlas.run_job(provider=lam, endpoint="e", input={})
    assert sent == []


def test_restart_and_rename(lam: LambdaLabs, sent: Recorder, clock: ManualClock) -> None:
    c = _spawn(lam, gpu="a10", name="old")
    clock.advance(BOOT_S)
    assert lam.restart(c.id).status == "provisioning"
    assert lam.rename(c.id, "new").name == "new"
    assert json.loads(sent.sent("POST", f"/api/v1/instances/{c.id}")[0].content) == {"name": "new"}
    with pytest.raises(atlas.NotFound):
        lam.restart("f" * 32)


def test_gpu_catalog(lam: LambdaLabs) -> None:
    types = {g.id: g for g in atlas.list_gpu_types(provider=lam)}
    assert {"gpu_1x_a10", "gpu_1x_h100_sxm5", "gpu_8x_h100_sxm5"} <= set(types)
    assert not any(t.startswith("cpu_") for t in types)
    assert types["gpu_1x_a10"].price_per_hour == 1.29
    assert types["gpu_1x_a10"].regions == ("us-east-1", "us-west-1")
    assert types["gpu_1x_h100_sxm5"].regions == ("us-south-2",)
    assert types["gpu_8x_h100_sxm5"].stock == "none"


def test_launched_but_not_yet_readable_returns_what_is_known(
    sb: Sandbox, lam: LambdaLabs, sent: Recorder
) -> None:
    sb.faults("lambda_labs:GET /api/v1/instances/*", sequence=[404])  # not yet readable
    c = _spawn(lam, gpu="a10", ports=[(8000, "http")], name="early")
    assert list(sb.lambda_labs.instances) == [c.id]
    assert (c.status, c.name, c.region) == ("provisioning", "early", "us-east-1")
    assert (c.cost_per_hour, c.gpu_count, c.ports[0].internal) == (1.29, 1, 8000)
    assert len(sent.sent("POST", LAUNCH)) == 1
