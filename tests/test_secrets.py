"""A canary API key must never surface: not in telemetry, reprs, errors, ``raw`` or logs.

The key reaches the provider three ways (``api_key=``, the config file, the env var). The
fake server then does its worst: echoes the key in error bodies (JSON and text), in
success payloads, and the provider even puts it in a URL query (``?api_key=``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

import atlas_nb
from atlas_nb import Compute, ComputeRequest, GpuType
from atlas_nb.providers import BaseProvider, strip_secrets
from atlas_nb.providers.lambda_labs import wire as lambda_wire
from atlas_nb.providers.runpod import wire as runpod_wire

CANARY = "sk-CANARY-1234567890"
Events = list[tuple[str, dict[str, Any]]]


def _server(request: httpx.Request) -> httpx.Response:
    """A hostile API: it echoes whatever key it was given."""
    auth = request.headers.get("authorization", "")
    key = auth.removeprefix("Bearer ") or request.url.params.get("api_key", "")
    path = request.url.path
    if path == "/v1/pods" and request.method == "POST":
        body = {"id": "pod-1", "status": "RUNNING", "apiKey": key, "image": "img:1",
                "env": {"RUNPOD_API_KEY": key}, "note": f"created with {key}",
                "nested": [{"token": key}, {"echo": f"Bearer {key}"}]}
        return httpx.Response(201, json=body)
    if path == "/v1/pods/unauthorized":
        return httpx.Response(401, json={"error": {"code": "global/invalid-api-key",
                                                   "message": f"API key {key} was invalid",
                                                   "suggestion": f"rotate {key}"}})
    if path == "/v1/pods/text-error":
        return httpx.Response(500, text=f"upstream said: Authorization: Bearer {key}")
    if path == "/v1/pods/graphql-error":
        return httpx.Response(400, json={"errors": [{"message": f"bad api_key={key}"}]})
    if path == "/v1/pods/rate-limited":
        return httpx.Response(429, headers={"Retry-After": "0"},
                              json={"detail": f"slow down, {key}"})
    if path == "/v1/gpus":
        if request.url.params.get("fail"):
            return httpx.Response(403, json={"message": f"forbidden for {request.url}"})
        return httpx.Response(200, json=[{"id": "NVIDIA H100 PCIe", "key": key}])
    if path == "/v1/unreachable":
        raise httpx.ConnectError(f"cannot reach {request.url} with {auth}")
    return httpx.Response(404, json={"detail": f"no such thing (key {key})"})


class Leaky(BaseProvider):
    """A provider whose catalog call (wrongly) puts its key in the URL query."""

    name: ClassVar[str] = "runpod"  # so RUNPOD_API_KEY and providers.runpod apply
    apis: ClassVar[dict[str, str]] = {"rest": "https://api.leaky.test/v1"}

    @staticmethod
    def error_message(body: Any) -> str | None:
        # It answers in Lambda's and GraphQL's envelopes: read them as those providers do.
        return lambda_wire.error_message(body) or runpod_wire.error_message(body)

    def spawn_compute(self, request: ComputeRequest) -> Compute:
        body = self.client("rest").request("POST", "/pods", json={"image": request.image})
        return Compute(id=body["id"], provider=self.name, status="running",
                       raw=strip_secrets(body, (self.api_key(),)))

    def get_compute(self, compute_id: str) -> Compute:
        body = self.client("rest").request("GET", f"/pods/{compute_id}")
        return Compute(id=compute_id, provider=self.name, raw=body)

    def list_compute(self, **_filters: Any) -> list[Compute]:
        return []

    def terminate(self, compute_id: str) -> None:
        self.client("rest").request("DELETE", f"/pods/{compute_id}", ok=lambda s: s < 500)

    def list_gpu_types(self, *, fail: bool = False) -> list[GpuType]:
        body = self.client("rest").request(
            "GET", "/gpus", params={"api_key": self.api_key(), "fail": "1" if fail else None})
        return [GpuType(provider=self.name, id=g["id"],
                        raw=strip_secrets(g, (self.api_key(),))) for g in body]

    def unreachable(self) -> None:
        self.client("rest").request("GET", f"/unreachable?api_key={self.api_key()}")


@pytest.fixture(params=["api_key", "config", "env"])
def provider(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
             config_file: Path) -> Leaky:
    http = httpx.MockTransport(_server)
    no_sleep: list[float] = []
    if request.param == "api_key":
        return Leaky(api_key=CANARY, http=http, sleep=no_sleep.append)
    if request.param == "config":
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(f"providers:\n  runpod:\n    api_key: {CANARY}\n")
    else:
        monkeypatch.setenv("RUNPOD_API_KEY", CANARY)
    return Leaky(http=http, sleep=no_sleep.append)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def assert_clean(*things: Any) -> None:
    for thing in things:
        for text in (repr(thing), str(thing)):
            assert CANARY not in text, f"key leaked in {text!r}"


def assert_error_clean(err: atlas_nb.AtlasError) -> None:
    assert_clean(err, err.message, err.raw, err.args, err.hint, err._render_traceback_())
    assert CANARY not in "".join(str(a) for a in err.args)


def test_the_key_is_really_used(provider: Leaky) -> None:
    seen: list[str] = []

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return _server(request)

    provider._http = httpx.MockTransport(spy)
    provider.spawn_compute(ComputeRequest(image="img:1"))
    assert seen == [f"Bearer {CANARY}"]  # the canary was live: the checks below mean something


def test_spawn_result_and_provider_are_clean(provider: Leaky, events: Events,
                                             logs: pytest.LogCaptureFixture) -> None:
    c = provider.spawn_compute(ComputeRequest(image="img:1"))
    assert c.id == "pod-1"
    assert "env" not in c.raw and c.raw["apiKey"] == "REDACTED"
    assert c.raw["note"] == "REDACTED"
    assert_clean(c, c.raw, c.model_dump(), c._repr_html_(), provider, provider.client("rest"))
    assert_clean(events, logs.text)
    assert events, "telemetry was emitted"


@pytest.mark.parametrize(
    ("compute_id", "error"),
    [("unauthorized", atlas_nb.Unauthorized), ("text-error", atlas_nb.ProviderError),
     ("graphql-error", atlas_nb.ValidationError), ("rate-limited", atlas_nb.RateLimited),
     ("missing", atlas_nb.NotFound)],
)
def test_errors_that_echo_the_key_are_clean(provider: Leaky, events: Events,
                                            logs: pytest.LogCaptureFixture, compute_id: str,
                                            error: type[atlas_nb.AtlasError]) -> None:
    with pytest.raises(error) as info:
        provider.get_compute(compute_id)
    err = info.value
    assert "REDACTED" in err.message  # the echo was there, and was scrubbed
    assert_error_clean(err)
    assert_clean(events, logs.text)


def test_key_in_the_url_query_is_redacted(provider: Leaky, events: Events) -> None:
    gpus = provider.list_gpu_types()
    assert gpus[0].id == "NVIDIA H100 PCIe"
    assert_clean(gpus, [g.raw for g in gpus], events)
    urls = [data["url"] for name, data in events if name == "http.request"]
    assert urls and all("api_key=REDACTED" in u for u in urls)


def test_error_echoing_a_url_with_the_key_is_clean(provider: Leaky, events: Events) -> None:
    with pytest.raises(atlas_nb.Forbidden) as info:
        provider.list_gpu_types(fail=True)
    assert_error_clean(info.value)
    assert_clean(events)


def test_transport_error_with_the_key_in_the_url_is_clean(provider: Leaky,
                                                          events: Events) -> None:
    with pytest.raises(atlas_nb.TransportError) as info:
        provider.unreachable()
    err = info.value
    assert "unreachable" in err.message
    assert_error_clean(err)
    assert_clean(events)
    assert len([e for e, _ in events if e == "http.request"]) == 4  # all attempts reported


def test_through_the_facade(monkeypatch: pytest.MonkeyPatch, events: Events,
                            logs: pytest.LogCaptureFixture) -> None:
    http = httpx.MockTransport(_server)
    c = atlas_nb.spawn_compute(provider=Leaky, api_key=CANARY, http=http, image="img:1",
                               auth="bearer")
    assert c.auth is not None
    assert_clean(c, c.raw)
    with pytest.raises(atlas_nb.Unauthorized) as info:
        atlas_nb.get_compute("unauthorized", provider=Leaky, api_key=CANARY, http=http)
    assert_error_clean(info.value)
    monkeypatch.setenv("RUNPOD_API_KEY", CANARY)
    atlas_nb.terminate("pod-1", provider=Leaky, http=http)
    assert_clean(events, logs.text)
    assert {e for e, _ in events} >= {"http.request", "compute.spawn", "compute.terminate"}


def test_pod_token_stays_out_of_everything_but_auth(events: Events,
                                                    logs: pytest.LogCaptureFixture) -> None:
    c = atlas_nb.spawn_compute(provider="mock", image="img:1", auth="bearer",
                               ports=[(8000, "http")])
    assert c.auth is not None
    token = c.auth.token
    for text in (repr(c), str(c), repr(c.raw), c._repr_html_(), repr(events), logs.text):
        assert token not in text


def test_key_in_a_url_query_is_redacted_in_the_httpx_log(provider: Leaky,
                                                   logs: pytest.LogCaptureFixture) -> None:
    provider.list_gpu_types()
    assert "HTTP Request" in logs.text and "REDACTED" in logs.text  # the line is there, redacted
    assert_clean(logs.text)
