"""errors.py: status -> class, provider envelopes -> message, notebook rendering, Retry-After."""

from __future__ import annotations

import email.utils
from typing import Any

import httpx
import pytest

import atlas_nb
from atlas_nb.errors import (
    AtlasError,
    Forbidden,
    NotFound,
    ProviderError,
    RateLimited,
    Timeout,
    TransportError,
    Unauthorized,
    UnknownError,
    Unsupported,
    ValidationError,
    error_from_response,
    parse_retry_after,
)
from atlas_nb.providers import facts


@pytest.mark.parametrize(
    ("status", "cls", "kind"),
    [
        (400, ValidationError, "validation"),
        (401, Unauthorized, "unauthorized"),
        (403, Forbidden, "forbidden"),
        (404, NotFound, "not_found"),
        (408, Timeout, "timeout"),
        (410, NotFound, "not_found"),
        (422, ValidationError, "validation"),
        (429, RateLimited, "rate_limited"),
        (409, ProviderError, "provider"),
        (418, ProviderError, "provider"),
        (499, ProviderError, "provider"),
        (500, ProviderError, "provider"),
        (502, ProviderError, "provider"),
        (503, ProviderError, "provider"),
        (599, ProviderError, "provider"),
        (200, UnknownError, "unknown"),
        (202, UnknownError, "unknown"),
        (204, UnknownError, "unknown"),
        (302, UnknownError, "unknown"),
    ],
)
def test_status_maps_to_one_class(status: int, cls: type[AtlasError], kind: str) -> None:
    body = {"message": "something happened"}
    err = error_from_response(status, body, provider="runpod")
    assert type(err) is cls
    assert err.kind == kind
    assert err.provider == "runpod"
    assert err.status == status
    assert err.message == "something happened"
    assert err.raw == body
    assert isinstance(err, AtlasError)


def test_every_kind_is_distinct_and_documented() -> None:
    classes = [Unauthorized, Forbidden, NotFound, RateLimited, Timeout, Unsupported,
               ValidationError, ProviderError, TransportError, UnknownError]
    kinds = [c.kind for c in classes]
    assert len(set(kinds)) == len(kinds)
    assert all(issubclass(c, AtlasError) for c in classes)
    assert all(c.__doc__ for c in classes)
    # ValidationError is also a ValueError, so plain `except ValueError` code keeps working.
    assert issubclass(ValidationError, ValueError)


@pytest.mark.parametrize(
    ("provider", "body", "expected"),
    [
        pytest.param("runpod",   # RunPod REST v2: RFC 9457 problem+json
            {"type": "about:blank", "title": "Not Found", "status": 404,
             "detail": "pod abc123 does not exist"},
            "pod abc123 does not exist", id="runpod-problem-json"),
        pytest.param("runpod",   # RunPod problem+json without detail: fall back to the title
            {"title": "Bad Request", "status": 400}, "Bad Request", id="runpod-title-only"),
        pytest.param("runpod",   # RunPod REST v1 / generic
            {"message": "invalid gpuTypeIds"}, "invalid gpuTypeIds", id="runpod-v1-message"),
        pytest.param("lambda_labs",   # Lambda: message plus suggestion
            {"error": {"code": "global/invalid-api-key", "message": "API key was invalid",
                       "suggestion": "Create a new API key"}},
            "API key was invalid (Create a new API key)", id="lambda-suggestion"),
        pytest.param("lambda_labs",   # Lambda: no suggestion
            {"error": {"code": "global/object-does-not-exist",
                       "message": "Instance not found"}},
            "Instance not found", id="lambda-plain"),
        pytest.param("vast",   # Vast: msg is the human text, error is the code
            {"success": False, "error": "invalid_args", "msg": "disk must be >= 10"},
            "disk must be >= 10", id="vast-msg"),
        pytest.param("vast",   # Vast: code only
            {"success": False, "error": "not_found"}, "not_found", id="vast-code-only"),
        pytest.param("fly",   # Fly ErrorResponse
            {"error": "Authenticate: token validation error"},
            "Authenticate: token validation error", id="fly"),
        pytest.param("fly",   # Fly with status
            {"error": "could not reserve resource", "status": "insufficient_capacity"},
            "could not reserve resource", id="fly-status"),
        pytest.param("runpod",   # GraphQL
            {"data": None, "errors": [{"message": "Something went wrong", "path": ["pod"]},
                                      {"message": "second"}]},
            "Something went wrong", id="graphql"),
        pytest.param("runpod", {"errors": ["plain string error"]}, "plain string error",
                     id="errors-as-strings"),
        pytest.param("runpod", "upstream connect error or disconnect/reset before headers",
                     "upstream connect error or disconnect/reset before headers",
                     id="plain-text"),
        pytest.param("runpod", "  padded text \n", "padded text", id="plain-text-stripped"),
    ],
)
def test_message_from_each_provider_envelope(provider: str, body: Any, expected: str) -> None:
    # Each provider reads its own envelope (its ``error_message``), then the generic ones.
    reader = facts(provider).error_message
    err = error_from_response(400, body, provider=provider, message_of=reader)
    assert err.message == expected
    assert err.raw == body
    assert expected in str(err)


@pytest.mark.parametrize("body", [None, "", {}, [], {"unrelated": 1}, 42])
def test_message_falls_back_to_the_status(body: Any) -> None:
    err = error_from_response(503, body)
    assert err.message == "HTTP 503"
    assert err.provider is None


def test_status_is_not_repeated_when_it_is_the_message() -> None:
    assert str(error_from_response(503, None, provider="runpod")) == "[runpod] HTTP 503"


def test_long_text_body_is_truncated() -> None:
    err = error_from_response(500, "x" * 5000)
    assert err.message == "x" * 500


def test_str_names_provider_and_status() -> None:
    err = error_from_response(404, {"detail": "no such pod"}, provider="runpod")
    assert str(err) == "[runpod] no such pod (HTTP 404)"
    assert repr(err) == "NotFound(message='no such pod', provider='runpod', status=404)"
    assert str(Unsupported("no stop")) == "no stop"


def test_unauthorized_hint_says_how_to_fix() -> None:
    err = error_from_response(401, {"error": "bad token"}, provider="fly")
    assert err.hint is not None
    assert "api_key=" in err.hint and "fly" in err.hint


class TestRenderTraceback:
    def test_one_line_without_hint(self) -> None:
        err = NotFound("no compute abc", provider="mock", status=404)
        lines = err._render_traceback_()
        assert len(lines) == 1
        assert "NotFound" in lines[0]
        assert "[mock] no compute abc (HTTP 404)" in lines[0]
        assert "Traceback" not in "".join(lines)

    def test_two_lines_with_hint(self) -> None:
        err = error_from_response(401, {"message": "bad key"}, provider="vast")
        lines = err._render_traceback_()
        assert len(lines) == 2
        assert "Unauthorized" in lines[0] and "bad key" in lines[0]
        assert lines[1].strip().startswith("hint:")

    def test_even_when_raised(self) -> None:
        with pytest.raises(Timeout) as info:
            raise Timeout("not ready after 600s", provider="runpod")
        lines = info.value._render_traceback_()
        assert len(lines) == 1
        assert "test_errors.py" not in "".join(lines)

    def test_debug_env_gives_the_full_traceback(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("ATLAS_NB_DEBUG", "1")
        with pytest.raises(ProviderError) as info:
            raise ProviderError("boom", provider="fly", status=500)
        text = "".join(info.value._render_traceback_())
        assert "Traceback (most recent call last)" in text
        assert "test_errors.py" in text
        assert "ProviderError: [fly] boom (HTTP 500)" in text


class TestRetryAfter:
    @pytest.mark.parametrize(("value", "expected"),
                             [("120", 120.0), (" 5 ", 5.0), ("0", 0.0), ("1.5", 1.5),
                              ("-3", 0.0)])
    def test_seconds(self, value: str, expected: float) -> None:
        assert parse_retry_after(value) == expected

    @pytest.mark.parametrize("value", [None, "", "soon", "Mon, 99 Foo 2024"])
    def test_missing_or_garbage(self, value: str | None) -> None:
        assert parse_retry_after(value) is None

    def test_http_date(self) -> None:
        now = 1_700_000_000.0
        header = email.utils.formatdate(now + 90, usegmt=True)
        assert header.endswith("GMT")
        assert parse_retry_after(header, now=now) == pytest.approx(90.0)

    def test_http_date_in_the_past_is_zero(self) -> None:
        now = 1_700_000_000.0
        header = email.utils.formatdate(now - 3600, usegmt=True)
        assert parse_retry_after(header, now=now) == 0.0

    @pytest.mark.parametrize(
        "headers",
        [httpx.Headers({"Retry-After": "7"}), {"retry-after": "7"}, {"Retry-After": "7"}],
        ids=["httpx-headers", "dict-lower", "dict-title"],
    )
    def test_rate_limited_carries_retry_after(self, headers: Any) -> None:
        err = error_from_response(429, {"message": "slow down"}, provider="lambda_labs",
                                  headers=headers)
        assert isinstance(err, RateLimited)
        assert err.retry_after == 7.0
        assert err.status == 429 and err.provider == "lambda_labs"
        assert err.message == "slow down"

    def test_rate_limited_without_header(self) -> None:
        err = error_from_response(429, None)
        assert isinstance(err, RateLimited)
        assert err.retry_after is None
        assert err.message == "HTTP 429"


def test_errors_are_reexported_from_the_package() -> None:
    for cls in (AtlasError, Unauthorized, Forbidden, NotFound, RateLimited, Timeout,
                Unsupported, ValidationError, ProviderError, TransportError, UnknownError):
        assert getattr(atlas_nb, cls.__name__) is cls
