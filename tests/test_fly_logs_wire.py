"""The Fly logs API client: JSON:API translation, the request it sends, 401/404 handling."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from atlas_nb import NotFound, ProviderError, Unauthorized, UnknownError, ValidationError
from atlas_nb.fly import fetch_logs
from atlas_nb.fly.logs.client import LogsClient
from atlas_nb.fly.logs.wire import _entry_from_wire, _new_entry, page_from_wire
from atlas_nb.fly.tokens import FixedToken
from atlas_nb.models import LogEntry

RECEIVED = datetime(2030, 1, 1, tzinfo=UTC)


def item(i: int, **attrs: Any) -> dict[str, Any]:
    base = {"timestamp": f"2024-06-01T12:00:{i:02d}.123456789Z", "message": f"line {i}",
            "level": "info", "instance": "148e272b6d3898", "region": "iad",
            "meta": {"instance": "148e272b6d3898", "region": "iad",
                     "event": {"provider": "app"}}}
    base.update(attrs)
    return {"id": f"id-{i}", "type": "logs", "attributes": base}


def page(*items: dict[str, Any], token: str = "1717243200123456789") -> dict[str, Any]:
    return {"data": list(items), "meta": {"next_token": token}}


def test_entry_from_wire() -> None:
    entry = _entry_from_wire(item(7), "my-app", RECEIVED)
    assert entry == LogEntry(
        timestamp=datetime(2024, 6, 1, 12, 0, 7, 123456, tzinfo=UTC), message="line 7",
        level="info", region="iad", instance="148e272b6d3898", app="my-app", id="id-7",
        raw=item(7)["attributes"],
    )
    assert str(entry) == "2024-06-01T12:00:07.123456Z my-app[148e272b6d3898] iad [info] line 7"


def test_fast_constructor_builds_a_real_frozen_model() -> None:
    fast = _new_entry(RECEIVED, "m", "warn", "ord", "abc", "app", "x1", {"k": 1})
    slow = LogEntry(timestamp=RECEIVED, message="m", level="warn", region="ord",
                    instance="abc", app="app", id="x1", raw={"k": 1})
    assert fast == slow and repr(fast) == repr(slow)
    assert fast.model_dump() == slow.model_dump()
    assert fast.model_copy(update={"level": "error"}).level == "error"
    assert fast.level == "warn"  # the copy did not touch the original
    with pytest.raises(Exception, match="frozen"):
        fast.message = "changed"  # type: ignore[misc]


def test_entry_falls_back_instead_of_dropping_lines() -> None:
    entry = _entry_from_wire({"attributes": {"timestamp": "yesterday", "message": None,
                                             "meta": {"region": "ams", "instance": "m1"}}},
                             "a", RECEIVED)
    assert entry is not None
    assert entry.timestamp == RECEIVED  # unparseable: when the page arrived
    assert (entry.message, entry.level, entry.region, entry.instance) == ("", "info", "ams", "m1")
    assert entry.id.startswith("h")  # derived from the content, so it still dedupes
    again = _entry_from_wire({"attributes": {"timestamp": "yesterday", "message": None,
                                             "meta": {"region": "ams", "instance": "m1"}}},
                             "a", RECEIVED)
    assert again is not None and again.id == entry.id
    ns = _entry_from_wire({"id": "n", "attributes": {"timestamp": 1717243200_000000000}},
                          "a", RECEIVED)
    assert ns is not None and ns.timestamp == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    naive = _entry_from_wire(item(1, timestamp="2024-06-01T12:00:00"), "a", RECEIVED)
    assert naive is not None and naive.timestamp.tzinfo is UTC
    assert _entry_from_wire("nope", "a", RECEIVED) is None
    assert _entry_from_wire({"id": "x"}, "a", RECEIVED) is None


def test_attribute_keys_are_read_whatever_their_casing() -> None:
    # fly-go decodes the page into untagged Go fields (resource_logs.go getLogsResponse,
    # types.go LogEntry): encoding/json matches keys ignoring case, so the server's casing
    # is not pinned down. Exact keys win over other casings, as in Go.
    attrs = {"Timestamp": "2024-06-01T12:00:07Z", "MESSAGE": "hello", "Level": "warn",
             "Instance": "148e272b6d3898", "Region": "ord",
             "Meta": {"Instance": "ignored", "Region": "ignored"}}
    body = {"Data": [{"Id": "id-1", "Attributes": attrs},
                     {"id": "id-2", "attributes": {"Message": "meta only", "level": "info",
                                                   "META": {"INSTANCE": "abc", "REGION": "syd"}}},
                     {"id": "id-3", "attributes": {"message": "exact", "Message": "other"}}],
            "Meta": {"Next_Token": "42"}}
    got = page_from_wire(body, "my-app")
    assert [(e.id, e.message, e.level, e.region, e.instance) for e in got.entries] == [
        ("id-1", "hello", "warn", "ord", "148e272b6d3898"),
        ("id-2", "meta only", "info", "syd", "abc"),
        ("id-3", "exact", "info", None, None),
    ]
    assert got.entries[0].timestamp == datetime(2024, 6, 1, 12, 0, 7, tzinfo=UTC)
    assert got.next_token == "42"


def test_page_from_wire() -> None:
    got = page_from_wire(page(item(1), item(2), "junk"), "a")
    assert [e.id for e in got.entries] == ["id-1", "id-2"]
    assert got.next_token == "1717243200123456789"
    assert page_from_wire({"data": [], "meta": {"next_token": ""}}, "a").next_token == ""
    assert page_from_wire({"data": []}, "a").next_token == ""
    assert page_from_wire({"data": [], "meta": {"next_token": 17}}, "a").next_token == "17"
    for bad in (None, [], "text", {"data": "x"}, {"errors": []}):
        with pytest.raises(UnknownError, match="unexpected answer"):
            page_from_wire(bad, "a")


class Server:
    """A fake logs API recording each request; answers from a queue of (status, body)."""

    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body = self.answers.pop(0) if self.answers else (200, page())
        return httpx.Response(status, json=body)


def test_request_shape() -> None:
    server = Server((200, page(item(1))))
    got = fetch_logs("my-app", next_token="123", instance="m1", region="iad",
                     token="FlyV1 fm2_abc", base_url="https://api.fly.test",
                     http=httpx.MockTransport(server))
    assert [e.id for e in got.entries] == ["id-1"]
    (req,) = server.requests
    assert req.method == "GET"
    assert req.url.path == "/api/v1/apps/my-app/logs"
    assert dict(req.url.params) == {"next_token": "123", "instance": "m1", "region": "iad"}
    assert req.headers["authorization"] == "FlyV1 fm2_abc"
    assert "fm2_abc" not in str(req.url)


def test_first_poll_sends_no_cursor_and_bearer_for_plain_tokens() -> None:
    server = Server((200, page()))
    fetch_logs("a", token="fo1_personal", base_url="https://api.fly.test",
               http=httpx.MockTransport(server))
    (req,) = server.requests
    assert dict(req.url.params) == {}
    assert req.headers["authorization"] == "Bearer fo1_personal"


def test_default_base_url_is_api_fly_io() -> None:
    server = Server((200, page()))
    fetch_logs("a", token="t", http=httpx.MockTransport(server))
    assert str(server.requests[0].url).startswith("https://api.fly.io/api/v1/apps/a/logs")


def test_app_name_is_validated_and_encoded() -> None:
    server = Server((200, page()))
    client = LogsClient(token="t", base_url="https://x.test", http=httpx.MockTransport(server))
    for bad in ("", "  ", "has space", None, 3):
        with pytest.raises(ValidationError, match="app must be"):
            client.fetch(bad)  # type: ignore[arg-type]
    client.fetch("we/ird")
    assert server.requests[0].url.raw_path.startswith(b"/api/v1/apps/we%2Fird/logs")


class CountingSource:
    """A token source that hands out a new token after each invalidate."""

    def __init__(self) -> None:
        self.n = 0
        self.invalidated: list[str | None] = []

    def get(self, app: str | None = None) -> str:
        return f"fo1_token{self.n}"

    def invalidate(self, app: str | None = None, *, rejected: str | None = None) -> None:
        self.invalidated.append(rejected)
        self.n += 1


def test_401_invalidates_and_retries_once_with_a_fresh_token() -> None:
    source = CountingSource()
    server = Server((401, {"error": "Authenticate: token validation error"}), (200, page(item(1))))
    client = LogsClient(tokens=source, base_url="https://x.test", http=httpx.MockTransport(server))
    assert len(client.fetch("a").entries) == 1
    assert source.invalidated == ["fo1_token0"]
    assert [r.headers["authorization"] for r in server.requests] == [
        "Bearer fo1_token0", "Bearer fo1_token1"]


def test_second_401_raises_unauthorized() -> None:
    source = CountingSource()
    server = Server((401, {"error": "no"}), (401, {"error": "still no"}))
    client = LogsClient(tokens=source, base_url="https://x.test", http=httpx.MockTransport(server))
    with pytest.raises(Unauthorized, match="still no"):
        client.fetch("a")
    assert len(server.requests) == 2  # exactly one retry


def test_404_is_a_clear_not_found() -> None:
    server = Server((404, {"error": "Could not find App"}))
    with pytest.raises(NotFound, match="Fly app 'ghost' not found") as info:
        fetch_logs("ghost", token="t", base_url="https://x.test", http=httpx.MockTransport(server))
    assert info.value.status == 404 and info.value.provider == "fly"


def test_5xx_is_a_provider_error_and_retried_by_the_seam(sleeps: Any) -> None:
    server = Server((503, {"error": "busy"}), (200, page(item(1))))
    from atlas_nb._http import RetryPolicy

    client = LogsClient(token="t", base_url="https://x.test", http=httpx.MockTransport(server))
    assert len(client.fetch("a").entries) == 1  # the GET was retried by the HTTP seam
    once = LogsClient(token="t", base_url="https://x.test", retry=RetryPolicy(attempts=1),
                      http=httpx.MockTransport(Server((503, {"error": "busy"}))))
    with pytest.raises(ProviderError):
        once.fetch("a")


def test_sandbox_key_is_used_against_an_active_sandbox() -> None:
    from atlas_nb import sandbox

    sandbox.attach("http://sandbox.test")
    client = LogsClient()
    assert client.base_url == "http://sandbox.test/fly/api"
    assert isinstance(client.tokens, FixedToken) and client.tokens.source == "sandbox"
    assert client.tokens.get("a") == "sandbox-fly-key"


def test_telemetry_for_fetch(events: list[Any]) -> None:
    server = Server((200, page(item(1), item(2))))
    fetch_logs("a", token="fo1_secret_value", base_url="https://x.test",
               http=httpx.MockTransport(server))
    fetched = [d for e, d in events if e == "fly.logs.fetch"]
    assert fetched and fetched[0]["count"] == 2 and fetched[0]["app"] == "a"
    assert all("fo1_secret_value" not in str(d) for _e, d in events)


def test_non_json_success_is_an_unknown_error() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>maintenance</html>")

    with pytest.raises(UnknownError, match="not JSON"):
        fetch_logs("a", token="t", base_url="https://x.test", http=httpx.MockTransport(server))


def test_page_from_bytes_matches_page_from_wire() -> None:
    import json

    from atlas_nb.fly.logs.wire import page_from_bytes

    body = page(item(1), item(2, message=None), "junk")
    from_bytes = page_from_bytes(json.dumps(body).encode(), "a")
    from_dict = page_from_wire(body, "a")
    assert from_bytes.entries == from_dict.entries
    assert from_bytes.ids == from_dict.ids == ("id-1", "id-2")
    assert from_bytes.next_token == from_dict.next_token
