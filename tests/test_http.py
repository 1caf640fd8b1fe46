"""_http.py: retries only when safe, Retry-After, bounded jittered backoff, errors, telemetry."""

from __future__ import annotations

import contextlib
import email.utils
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import atlas_nb
from atlas_nb._http import (
    DEFAULT_TIMEOUT,
    REDACTED,
    HttpClient,
    RetryPolicy,
    client_for,
    decode,
    redact_text,
    redact_url,
    user_timeout,
)

Handler = Callable[[httpx.Request], httpx.Response]
Events = list[tuple[str, dict[str, Any]]]
BASE = "https://api.example.test/v1"
Sleeps = list[float]  # the conftest `sleeps` fixture: records, never sleeps


class Server:
    """A scripted MockTransport: answers (or raises) from a list, records every request."""

    def __init__(self, *answers: httpx.Response | Exception | int) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            return httpx.Response(answer, json={"message": f"status {answer}"})
        return answer

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def make(server: Server | httpx.MockTransport | Any, sleeps: Sleeps, **kw: Any) -> HttpClient:
    http = server.transport if isinstance(server, Server) else server
    return HttpClient(provider="runpod", api="rest", base_url=BASE + "/", http=http,
                      sleep=sleeps, **kw)


def http_events(events: Events) -> list[dict[str, Any]]:
    return [data for name, data in events if name == "http.request"]


class TestRetryAfter:
    def test_seconds_are_honoured(self, sleeps: Sleeps) -> None:
        server = Server(httpx.Response(429, headers={"Retry-After": "3"}),
                        httpx.Response(200, json={"ok": True}))
        assert make(server, sleeps).request("GET", "/pods") == {"ok": True}
        assert sleeps == [3.0]
        assert len(server.requests) == 2

    def test_http_date_is_honoured(self, sleeps: Sleeps) -> None:
        when = email.utils.formatdate(time.time() + 45, usegmt=True)
        server = Server(httpx.Response(503, headers={"Retry-After": when}), 200)
        make(server, sleeps).request("GET", "/pods")
        assert len(sleeps) == 1
        assert 30.0 < sleeps[0] <= 45.0  # whole seconds on the wire, and time passes
        assert len(server.requests) == 2

    def test_retry_after_is_capped(self, sleeps: Sleeps) -> None:
        server = Server(httpx.Response(429, headers={"Retry-After": "86400"}), 200)
        make(server, sleeps, retry=RetryPolicy(retry_after_max=20.0)).request("GET", "/x")
        assert sleeps == [20.0]

    def test_persistent_429_raises_rate_limited(self, sleeps: Sleeps) -> None:
        server = Server(httpx.Response(429, headers={"Retry-After": "2"},
                                       json={"detail": "slow down"}))
        with pytest.raises(atlas_nb.RateLimited) as info:
            make(server, sleeps).request("GET", "/pods")
        assert info.value.retry_after == 2.0
        assert info.value.message == "slow down"
        assert len(server.requests) == 4
        assert sleeps == [2.0, 2.0, 2.0]


class TestCreatesAreNeverReplayed:
    @pytest.mark.parametrize("idempotent", [None, False])
    @pytest.mark.parametrize(
        ("answer", "error"),
        [(503, atlas_nb.ProviderError), (500, atlas_nb.ProviderError),
         (httpx.Response(429, headers={"Retry-After": "1"}), atlas_nb.RateLimited),
         (408, atlas_nb.Timeout),
         (httpx.ConnectError("connection refused"), atlas_nb.TransportError),
         (httpx.ReadTimeout("read timed out"), atlas_nb.Timeout)],
        ids=["503", "500", "429", "408", "connect-error", "read-timeout"],
    )
    def test_post_is_sent_exactly_once(self, sleeps: Sleeps, events: Events, answer: Any,
                                       error: type[Exception], idempotent: bool | None) -> None:
        server = Server(answer, 201)
        with pytest.raises(error):
            make(server, sleeps).request("POST", "/pods", json={"name": "p"},
                                         idempotent=idempotent)
        assert len(server.requests) == 1
        assert sleeps == []
        assert len(http_events(events)) == 1

    def test_put_and_patch_are_not_retried_by_default(self, sleeps: Sleeps) -> None:
        for method in ("PUT", "PATCH"):
            server = Server(502, 200)
            with pytest.raises(atlas_nb.ProviderError):
                make(server, sleeps).request(method, "/asks/1")
            assert len(server.requests) == 1

    def test_post_marked_idempotent_is_retried(self, sleeps: Sleeps) -> None:
        server = Server(503, 503, httpx.Response(200, json={"stopped": True}))
        body = make(server, sleeps).request("POST", "/pods/p1/stop", idempotent=True)
        assert body == {"stopped": True}
        assert len(server.requests) == 3
        assert len(sleeps) == 2

    def test_get_marked_not_idempotent_is_not_retried(self, sleeps: Sleeps) -> None:
        server = Server(503, 200)
        with pytest.raises(atlas_nb.ProviderError):
            make(server, sleeps).request("GET", "/x", idempotent=False)
        assert len(server.requests) == 1


class TestSafeRetries:
    @pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
    def test_get_5xx_is_retried_a_bounded_number_of_times(self, sleeps: Sleeps,
                                                          status: int) -> None:
        server = Server(status)
        with pytest.raises(atlas_nb.AtlasError) as info:
            make(server, sleeps).request("GET", "/pods")
        assert info.value.status == status
        assert len(server.requests) == RetryPolicy().attempts == 4
        assert len(sleeps) == 3

    def test_attempts_follow_the_policy(self, sleeps: Sleeps) -> None:
        server = Server(500)
        with pytest.raises(atlas_nb.ProviderError):
            make(server, sleeps, retry=RetryPolicy(attempts=2)).request("GET", "/pods")
        assert len(server.requests) == 2
        server = Server(500)
        with pytest.raises(atlas_nb.ProviderError):
            make(server, sleeps).request("GET", "/pods", retry=RetryPolicy(attempts=6))
        assert len(server.requests) == 6

    def test_get_recovers(self, sleeps: Sleeps) -> None:
        server = Server(500, 502, httpx.Response(200, json=[1, 2]))
        assert make(server, sleeps).request("GET", "/pods") == [1, 2]
        assert len(server.requests) == 3

    def test_delete_is_retried(self, sleeps: Sleeps) -> None:
        server = Server(502, 503, httpx.Response(204))
        assert make(server, sleeps).request("DELETE", "/pods/p1") is None
        assert [r.method for r in server.requests] == ["DELETE"] * 3
        assert len(sleeps) == 2

    @pytest.mark.parametrize(("status", "error"),
                             [(400, atlas_nb.ValidationError), (401, atlas_nb.Unauthorized),
                              (403, atlas_nb.Forbidden), (404, atlas_nb.NotFound),
                              (409, atlas_nb.ProviderError), (501, atlas_nb.ProviderError)])
    def test_other_errors_are_not_retried(self, sleeps: Sleeps, status: int,
                                          error: type[Exception]) -> None:
        server = Server(status, 200)
        with pytest.raises(error):
            make(server, sleeps).request("GET", "/pods/p1")
        assert len(server.requests) == 1
        assert sleeps == []

    def test_transport_error_on_get_is_retried_then_raised(self, sleeps: Sleeps) -> None:
        server = Server(httpx.ConnectError("[Errno 111] Connection refused"))
        with pytest.raises(atlas_nb.TransportError) as info:
            make(server, sleeps).request("GET", "/pods", params={"limit": 5})
        err = info.value
        assert len(server.requests) == 4 and len(sleeps) == 3
        assert err.provider == "runpod" and err.status is None
        assert err.kind == "transport"
        assert "GET" in err.message and f"{BASE}/pods" in err.message
        assert "Connection refused" in err.message
        assert not isinstance(err, httpx.HTTPError)
        assert err.__cause__ is None and err.__suppress_context__

    def test_transport_error_then_success(self, sleeps: Sleeps) -> None:
        server = Server(httpx.RemoteProtocolError("reset"), httpx.Response(200, json={}))
        assert make(server, sleeps).request("GET", "/pods") == {}
        assert len(server.requests) == 2

    @pytest.mark.parametrize("exc", [httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow"),
                                     httpx.PoolTimeout("busy"), httpx.WriteTimeout("slow")])
    def test_timeouts_become_atlas_timeout(self, sleeps: Sleeps, exc: Exception) -> None:
        server = Server(exc)
        with pytest.raises(atlas_nb.Timeout) as info:
            make(server, sleeps).request("GET", "/pods")
        assert info.value.kind == "timeout"
        assert type(exc).__name__ in info.value.message
        assert len(server.requests) == 4

    def test_no_httpx_exception_escapes(self, sleeps: Sleeps) -> None:
        for exc in (httpx.ConnectError("x"), httpx.ReadError("x"), httpx.ProxyError("x"),
                    httpx.UnsupportedProtocol("x"), httpx.LocalProtocolError("x")):
            with pytest.raises(atlas_nb.AtlasError):
                make(Server(exc), sleeps).request("GET", "/x")


class TestBackoff:
    def test_bounded_and_growing(self) -> None:
        policy = RetryPolicy(backoff_base=0.5, backoff_max=4.0)
        for attempt in range(1, 30):
            ceiling = min(4.0, 0.5 * 2 ** (attempt - 1))
            for _ in range(20):
                delay = policy.delay(attempt, None)
                assert ceiling / 2 <= delay <= ceiling
        assert policy.delay(100, None) <= 4.0

    def test_jittered(self) -> None:
        policy = RetryPolicy()
        samples = {policy.delay(3, None) for _ in range(50)}
        assert len(samples) > 10  # not one fixed value: clients do not retry in lock-step

    def test_retry_after_wins_over_backoff(self) -> None:
        assert RetryPolicy().delay(1, 7.5) == 7.5
        assert RetryPolicy(retry_after_max=5).delay(1, 7.5) == 5

    def test_sleeps_between_attempts_stay_in_the_band(self, sleeps: Sleeps) -> None:
        policy = RetryPolicy(attempts=8, backoff_base=1.0, backoff_max=6.0)
        with pytest.raises(atlas_nb.ProviderError):
            make(Server(500), sleeps, retry=policy).request("GET", "/x")
        assert len(sleeps) == 7
        for attempt, slept in enumerate(sleeps, start=1):
            ceiling = min(6.0, 2.0 ** (attempt - 1))
            assert ceiling / 2 <= slept <= ceiling
        assert max(sleeps) <= 6.0


class TestHttpOption:
    def test_accepts_a_client(self, sleeps: Sleeps) -> None:
        server = Server(httpx.Response(200, json={"via": "client"}))
        client = httpx.Client(transport=server.transport, headers={"X-Mine": "yes"})
        assert client_for(client) is client
        with client:
            assert make(client, sleeps).request("GET", "/a") == {"via": "client"}
        assert server.requests[0].headers["x-mine"] == "yes"

    def test_accepts_a_transport_and_pools_its_client(self, sleeps: Sleeps) -> None:
        server = Server(200)
        transport = server.transport
        assert client_for(transport) is client_for(transport)
        make(transport, sleeps).request("GET", "/a")
        make(transport, sleeps).request("GET", "/b")
        assert [r.url.path for r in server.requests] == ["/v1/a", "/v1/b"]

    def test_accepts_a_dict_of_options(self, sleeps: Sleeps) -> None:
        server = Server(200)
        options = {"transport": server.transport, "headers": {"X-Opt": "1"}}
        assert client_for(options) is client_for(dict(options))
        make(options, sleeps).request("GET", "/a")
        assert server.requests[0].headers["x-opt"] == "1"

    def test_default_is_one_shared_client(self) -> None:
        assert client_for(None) is client_for(None)
        assert client_for(None).timeout.read is not None

    @pytest.mark.parametrize("bad", ["https://proxy", 42, object()])
    def test_anything_else_is_a_clear_error(self, bad: Any) -> None:
        with pytest.raises(atlas_nb.ValidationError, match="http= must be"):
            client_for(bad)


class TestTimeouts:
    @staticmethod
    def _seen_timeout(http: Any, sleeps: Sleeps, **kw: Any) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def handler(request: httpx.Request) -> httpx.Response:
            seen.update(request.extensions["timeout"])
            return httpx.Response(200)

        transport = httpx.MockTransport(handler)
        if isinstance(http, httpx.Client):
            http = httpx.Client(transport=transport, timeout=None)
        make(transport if http is None else http, sleeps).request("GET", "/t", **kw)
        return seen

    def test_set_on_every_request(self, sleeps: Sleeps) -> None:
        seen = self._seen_timeout(None, sleeps)
        assert set(seen) == {"connect", "read", "write", "pool"}
        assert all(v is not None and v > 0 for v in seen.values())
        assert seen["read"] == DEFAULT_TIMEOUT.read

    def test_set_even_when_the_users_client_has_none(self, sleeps: Sleeps) -> None:
        seen = self._seen_timeout(httpx.Client(timeout=None), sleeps)
        assert all(v is not None and v > 0 for v in seen.values())

    def test_per_call_timeout(self, sleeps: Sleeps) -> None:
        seen = self._seen_timeout(None, sleeps, timeout=2.5)
        assert seen == {"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}

    @pytest.mark.parametrize(("http", "read"), [
        ({"timeout": 1}, 1.0), ({"timeout": httpx.Timeout(9, read=2)}, 2.0),
        ({"timeout": None}, None), ({}, "no cap"), (None, "no cap"),
        (httpx.MockTransport(lambda r: httpx.Response(200)), "no cap"),
        (httpx.Client(timeout=2), 2.0), (httpx.Client(timeout=None), None),
        (httpx.Client(), "no cap"),  # httpx's own 5 s default is nobody's choice
    ])
    def test_the_users_timeout(self, http: Any, read: Any) -> None:
        cap = user_timeout(http)
        if read == "no cap":
            assert cap is None
        else:
            assert cap is not None and cap.read == read

    def test_the_users_timeout_caps_each_phase(self, sleeps: Sleeps) -> None:
        seen: dict[str, Any] = {}

        def handler(request: httpx.Request) -> httpx.Response:
            seen.update(request.extensions["timeout"])
            return httpx.Response(200)

        user = httpx.Client(transport=httpx.MockTransport(handler),
                            timeout=httpx.Timeout(1.5, connect=40))
        make(user, sleeps).request("GET", "/t", timeout=httpx.Timeout(75, connect=10))
        assert seen == {"connect": 10, "read": 1.5, "write": 1.5, "pool": 1.5}

    def test_a_timeout_the_user_set_is_not_retried(self, sleeps: Sleeps) -> None:
        server = Server(httpx.ReadTimeout("slow"), httpx.Response(200, json={}))
        user = httpx.Client(transport=server.transport, timeout=1)
        with pytest.raises(atlas_nb.Timeout):
            make(user, sleeps).request("GET", "/t")
        assert len(server.requests) == 1 and sleeps == []

    def test_other_timeouts_still_are(self, sleeps: Sleeps) -> None:
        server = Server(httpx.ReadTimeout("slow"), httpx.Response(200, json={"ok": 1}))
        assert make(server, sleeps).request("GET", "/t") == {"ok": 1}
        assert len(server.requests) == 2

    @pytest.mark.parametrize(("http", "want", "window"), [
        (None, 60.0, 60.0), ({"timeout": 5}, 60.0, 4.0), ({"timeout": 30}, 5.0, 5.0),
        ({"timeout": 1}, 60.0, 0.0), ({"timeout": None}, 60.0, 60.0),
    ])
    def test_poll_window(self, sleeps: Sleeps, http: Any, want: float, window: float) -> None:
        client = HttpClient(provider="fly", api="machines", base_url=BASE, http=http)
        assert client.poll_window(want) == window


class TestTelemetry:
    KEYS = frozenset(
        {"provider", "api", "method", "url", "status", "duration_ms", "attempt", "error"})

    def test_one_event_per_attempt(self, sleeps: Sleeps, events: Events) -> None:
        server = Server(httpx.ConnectError("refused"), 503, httpx.Response(200, json={}))
        make(server, sleeps).request("GET", "/pods", params={"limit": 2})
        got = http_events(events)
        assert len(got) == len(server.requests) == 3
        for n, data in enumerate(got, start=1):
            assert set(data) == self.KEYS
            assert data["attempt"] == n
            assert data["provider"] == "runpod" and data["api"] == "rest"
            assert data["method"] == "GET"
            assert data["url"].startswith(f"{BASE}/pods")
            assert isinstance(data["duration_ms"], float) and data["duration_ms"] >= 0
        assert [d["status"] for d in got] == [None, 503, 200]
        assert [d["error"] for d in got] == ["ConnectError", None, None]
        assert got[2]["url"] == f"{BASE}/pods?limit=2"

    def test_every_failed_attempt_is_reported(self, sleeps: Sleeps, events: Events) -> None:
        with pytest.raises(atlas_nb.TransportError):
            make(Server(httpx.ConnectError("refused")), sleeps).request("DELETE", "/pods/1")
        got = http_events(events)
        assert [d["attempt"] for d in got] == [1, 2, 3, 4]
        assert {d["status"] for d in got} == {None}
        assert {d["method"] for d in got} == {"DELETE"}

    def test_url_is_redacted(self, sleeps: Sleeps, events: Events) -> None:
        secret = "sk-query-secret-999"
        make(Server(200), sleeps, secrets=(secret,)).request(
            "GET", "/graphql", params={"api_key": secret, "q": "pods", "other": secret})
        (data,) = http_events(events)
        assert secret not in data["url"]
        assert f"api_key={REDACTED}" in data["url"]
        assert "q=pods" in data["url"]
        assert f"other={REDACTED}" in data["url"]


class TestBodies:
    @pytest.mark.parametrize(("response", "expected"),
                             [(httpx.Response(200, json={"a": 1}), {"a": 1}),
                              (httpx.Response(200, text="plain"), "plain"),
                              (httpx.Response(204), None),
                              (httpx.Response(200, content=b""), None)])
    def test_decode(self, response: httpx.Response, expected: Any) -> None:
        assert decode(response) == expected

    def test_ok_callable_decides_success(self, sleeps: Sleeps) -> None:
        server = Server(httpx.Response(404, json={"gone": True}))
        assert make(server, sleeps).request("DELETE", "/p", ok=lambda s: s in (200, 404)) == {
            "gone": True}

    def test_odd_2xx_rejected_by_ok_is_unknown(self, sleeps: Sleeps) -> None:
        server = Server(httpx.Response(202, json={"queued": True}))
        with pytest.raises(atlas_nb.UnknownError) as info:
            make(server, sleeps).request("POST", "/p", ok=lambda s: s == 201)
        assert info.value.status == 202

    def test_none_params_are_dropped_and_headers_merged(self, sleeps: Sleeps) -> None:
        server = Server(200)
        client = HttpClient(provider="vast", api="rest", base_url=BASE, http=server.transport,
                            headers={"Authorization": "Bearer k"}, sleep=sleeps)
        client.request("GET", "/offers", params={"a": None, "b": 1}, headers={"X-Req": "2"})
        request = server.requests[0]
        assert str(request.url) == f"{BASE}/offers?b=1"
        assert request.headers["authorization"] == "Bearer k"
        assert request.headers["x-req"] == "2"

    def test_absolute_urls_pass_through(self, sleeps: Sleeps) -> None:
        server = Server(200)
        make(server, sleeps).request("GET", "https://other.test/logs")
        assert str(server.requests[0].url) == "https://other.test/logs"

    def test_json_body_is_sent(self, sleeps: Sleeps) -> None:
        server = Server(201)
        make(server, sleeps).request("POST", "/pods", json={"name": "x"})
        assert server.requests[0].content == b'{"name":"x"}'


class TestRedaction:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("https://a.test/g?api_key=abc&limit=5",
             f"https://a.test/g?api_key={REDACTED}&limit=5"),
            ("https://a.test/g?token=t&sig=s&signature=x&password=p&access_token=q&apiKey=z",
             f"https://a.test/g?token={REDACTED}&sig={REDACTED}&signature={REDACTED}"
             f"&password={REDACTED}&access_token={REDACTED}&apiKey={REDACTED}"),
            ("https://a.test/g", "https://a.test/g"),
            ("https://a.test/g?page=2", "https://a.test/g?page=2"),
        ],
    )
    def test_redact_url(self, url: str, expected: str) -> None:
        assert redact_url(url) == expected

    def test_redact_text(self) -> None:
        assert redact_text("key sk-abcdef here", ["sk-abcdef", None]) == f"key {REDACTED} here"
        assert redact_text("id abc", ["abc"]) == "id abc"  # too short to be a key: left alone

    def test_repr_has_no_headers(self) -> None:
        client = HttpClient(provider="runpod", api="rest", base_url=BASE,
                            headers={"Authorization": "Bearer sk-in-header-123"},
                            secrets=("sk-in-header-123",), http=httpx.MockTransport(
                                lambda r: httpx.Response(200)))
        assert "sk-in-header-123" not in repr(client)
        assert repr(client) == f"HttpClient('runpod', api='rest', base_url='{BASE}')"



@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_shares_the_parents_pooled_connections() -> None:
    from atlas_nb import _http

    parent_shared = _http.client_for(None)
    parent_opts = _http.client_for({"timeout": 7})
    client = _http.HttpClient(provider="runpod", api="rest", base_url="http://127.0.0.1:9")
    assert client._client is parent_shared
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only when nothing of the parent's pools is reused
        try:
            fresh = _http.client_for(None) is not parent_shared
            fresh_opts = _http.client_for({"timeout": 7}) is not parent_opts
            with contextlib.suppress(atlas_nb.AtlasError):  # port 9: refused, at once
                client.send("GET", "/", retry=_http.NO_RETRY)
            swapped = client._client is not parent_shared
            os._exit(0 if fresh and fresh_opts and swapped else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _http.client_for(None) is parent_shared  # the parent keeps its pool

