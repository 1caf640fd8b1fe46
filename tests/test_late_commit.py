"""A create the server commits after the client gave up (issue 13, item 8).

The sandbox's ``"late:<ms>"`` fault drops the client's connection at once, as a client
timeout would, and applies the create ``ms`` later. ``create_once`` must not resend
before that commit shows: it waits ``CreateRetry.settle_s`` after the failure, looks the
compute up by name and marker, and finds it. One spawn, one compute upstream, on every
cloud. Without the settling wait the lookup runs before the commit and the resend makes
a duplicate with the same name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb.providers.base import BaseProvider
from atlas_nb.providers.fly import Fly
from atlas_nb.providers.lambda_labs import LambdaLabs
from atlas_nb.providers.runpod import CREATE_ATTEMPTS, RunPod
from atlas_nb.providers.vast import Vast
from atlas_nb.sandbox import sandbox_key, start
from atlas_nb.sandbox.server import Sandbox

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

LATE_MS = 100
"""The commit lands this long after the drop; well inside the 1 s settling wait."""

CREATE_ROUTES = {
    "runpod": "runpod/rest:POST /v2/pods",
    "vast": "vast/rest:PUT /api/v0/asks/*",
    "lambda_labs": "lambda_labs/rest:POST /api/v1/instance-operations/launch",
    "fly": "fly/machines:POST /v1/apps/*/machines",
}

APP = "late-app"


def _sleep(seconds: float) -> None:
    """A real sleep (the late commit needs real time to land), capped so that waits that
    do not matter here (a launch interval, a backoff) stay short."""
    time.sleep(min(seconds, 1.0))


@pytest.fixture(params=sorted(CREATE_ROUTES))
def cloud(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sb(cloud: str) -> Iterator[Sandbox]:
    options: dict[str, Any] = {"lambda_labs": {"launch_interval_s": 0}}
    with start(clouds=[cloud], start_server=False, validate=True, provision_delay_s=0,
               start_delay_s=0, options={k: v for k, v in options.items() if k == cloud}) as box:
        yield box
        assert box.violations == [], "\n".join(box.violations)


@pytest.fixture
def creates() -> list[httpx.Request]:
    """The create requests the provider sent."""
    return []


@pytest.fixture
def provider(sb: Sandbox, cloud: str, creates: list[httpx.Request]) -> Iterator[BaseProvider]:
    def record(request: httpx.Request) -> None:
        if request.method in ("POST", "PUT") and any(
            part in request.url.path for part in ("/v2/pods", "/asks/", "/launch", "/machines")
        ):
            creates.append(request)

    with sb.client(event_hooks={"request": [record]}) as http:
        made: dict[str, Callable[[], BaseProvider]] = {
            "runpod": lambda: RunPod(http=http, sleep=_sleep),
            "vast": lambda: Vast(http=http, sleep=_sleep),
            "lambda_labs": lambda: LambdaLabs(http=http, sleep=_sleep),
            "fly": lambda: Fly(APP, http=http, sleep=_sleep),
        }
        if cloud == "fly":
            with sb.client(headers={"Authorization": f"Bearer {sandbox_key('fly')}"}) as c:
                r = c.post(f"{sb.url}/fly/machines/v1/apps",
                           json={"name": APP, "org_slug": "personal"})
                assert r.status_code == 201, r.text
        yield made[cloud]()


def _request(cloud: str, name: str) -> atlas.ComputeRequest:
    gpu = None if cloud == "fly" else "h100"
    opts: dict[str, Any] = ({"launch_interval_s": 0, "ssh_key_names": ["my-key"]}
                           if cloud == "lambda_labs" else {})
    return atlas.ComputeRequest(gpu=gpu, image="ghcr.io/me/srv:1", name=name,
                                provider_opts=opts)


def _named(provider: BaseProvider, name: str) -> list[atlas.Compute]:
    return [c for c in provider.list_compute(name=name)
            if c.name == name and c.status != "terminated"]


def test_a_create_committed_after_the_client_gave_up_is_found_not_duplicated(
    sb: Sandbox, cloud: str, provider: BaseProvider, creates: list[httpx.Request]
) -> None:
    rule = sb.faults(CREATE_ROUTES[cloud], sequence=[f"late:{LATE_MS}"])
    name = f"late-{cloud.replace('_', '-')}"
    made = provider.spawn_compute(_request(cloud, name))
    assert rule.injected == {f"late:{LATE_MS}": 1}
    upstream = _named(provider, name)
    assert [c.id for c in upstream] == [made.id], f"{len(upstream)} computes named {name!r}"
    assert len(creates) == 1  # found by the lookup after the settling wait: never resent


def test_a_create_that_never_commits_is_sent_again(
    sb: Sandbox, cloud: str, provider: BaseProvider, creates: list[httpx.Request]
) -> None:
    sb.faults(CREATE_ROUTES[cloud], sequence=["drop"])  # dropped, nothing applied
    name = f"dropped-{cloud.replace('_', '-')}"
    made = provider.spawn_compute(_request(cloud, name))
    assert [c.id for c in _named(provider, name)] == [made.id]
    assert len(creates) == 2


@pytest.mark.parametrize("cloud", ["runpod"])  # create_once is shared: one cloud shows it
def test_a_late_commit_of_the_last_try_is_found_before_giving_up(
    sb: Sandbox, cloud: str, provider: BaseProvider, creates: list[httpx.Request]
) -> None:
    sb.faults(CREATE_ROUTES[cloud], sequence=[503] * (CREATE_ATTEMPTS - 1) + [f"late:{LATE_MS}"])
    made = provider.spawn_compute(_request(cloud, "last-try"))
    assert [c.id for c in _named(provider, "last-try")] == [made.id]
    assert len(creates) == CREATE_ATTEMPTS


@pytest.mark.parametrize("cloud", ["runpod"])
def test_the_settling_wait_is_the_providers_create_settle_s(sb: Sandbox, cloud: str) -> None:
    sleeps: list[float] = []
    sb.faults(CREATE_ROUTES["runpod"], sequence=[503])
    with sb.client() as http:
        rp = RunPod(http=http, sleep=sleeps.append)
        rp.create_settle_s = 0.25
        rp.spawn_compute(_request("runpod", "settled"))
    assert sleeps == [0.5]  # the backoff was longer than the settling wait
    sleeps.clear()
    sb.faults(CREATE_ROUTES["runpod"], sequence=[503])
    with sb.client() as http:
        rp = RunPod(http=http, sleep=sleeps.append)
        rp.create_settle_s = 3.0
        rp.spawn_compute(_request("runpod", "settled-longer"))
    assert sleeps == [3.0]
