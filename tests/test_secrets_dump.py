"""Secrets in dumps, HTML and echoed errors (issue 13, items 14-16).

* ``Compute.model_dump()`` / ``model_dump_json()`` never carry the pod token (nor the ready
  ``Authorization`` header built from it), yet ``compute.auth.token`` stays readable and a
  dump loads back (the token is then ``None``).
* The HTML repr shows no character of the token.
* An error body that echoes the API key URL-encoded or base64-encoded (as a query string
  or an HTTP Basic header would carry it) is redacted like the plain key.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest

import atlas_nb
from atlas_nb import AuthHandle, Compute, PortMapping
from atlas_nb._http import REDACTED, HttpClient, redact_text

TOKEN = "QzX9-pod-token/with+odd=chars_0123456789"
KEY = "rpa_K3y+With/Slash=Eq&Amp?Q 0123456789abcdef"


def _compute(token: str = TOKEN) -> Compute:
    handle = AuthHandle(scheme="bearer", token=token, hash="h" * 64,
                        header=f"Authorization: Bearer {token}")
    return Compute(id="pod-1", provider="runpod", status="running", auth=handle,
                   ports=[PortMapping(internal=8000, url="https://pod-1-8000.x")])


# -- 14. dumps ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["python", "json"])
def test_model_dump_has_no_token(mode: str) -> None:
    c = _compute()
    dumped = c.model_dump(mode=mode)  # type: ignore[arg-type]
    assert TOKEN not in json.dumps(dumped, default=str)
    assert dumped["auth"]["scheme"] == "bearer" and dumped["auth"]["hash"] == "h" * 64
    assert "token" not in dumped["auth"] and "header" not in dumped["auth"]


def test_model_dump_json_has_no_token() -> None:
    c = _compute()
    text = c.model_dump_json()
    assert TOKEN not in text and quote(TOKEN, safe="") not in text
    assert json.loads(text)["auth"]["env_var"] == "ATLAS_PRESHARED_KEY"
    assert TOKEN not in c.auth.model_dump_json()  # type: ignore[union-attr]


def test_the_token_stays_readable() -> None:
    c = _compute()
    assert c.auth is not None and c.auth.token == TOKEN
    assert c.auth.headers() == {"Authorization": f"Bearer {TOKEN}"}


def test_a_dump_loads_back_without_the_token() -> None:
    c = _compute()
    for again in (Compute.model_validate(c.model_dump()),
                  Compute.model_validate_json(c.model_dump_json()),
                  Compute(**c.model_dump())):
        assert again.id == c.id and again.ports == c.ports
        assert again.auth is not None
        assert again.auth.token is None and again.auth.header is None
        assert (again.auth.scheme, again.auth.hash) == ("bearer", "h" * 64)
        assert again.auth.headers() == {}  # no token, no header: nothing to send
        assert TOKEN not in again._repr_html_()


def test_a_facade_spawn_dumps_clean() -> None:
    c = atlas_nb.spawn_compute(provider="mock", image="img:1", auth="bearer",
                               ports=[(8000, "http")])
    assert c.auth is not None and c.auth.token
    token = c.auth.token
    assert token not in json.dumps(c.model_dump(mode="json")) and token not in c.model_dump_json()
    assert Compute.model_validate_json(c.model_dump_json()).auth is not None


# -- 15. HTML -------------------------------------------------------------------------------
def test_html_shows_no_character_of_the_token() -> None:
    c = _compute()
    for html in (c._repr_html_(), c.auth._repr_html_()):  # type: ignore[union-attr]
        assert TOKEN[:4] not in html and TOKEN[-4:] not in html
        assert "…" not in html


# -- 16. encoded echoes -----------------------------------------------------------------------
def _b64(data: str) -> list[str]:
    raw = data.encode()
    std, url = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    return [std, url, std.rstrip("="), url.rstrip("=")]


ENCODED = {
    "quote": quote(KEY, safe=""),
    "quote_default": quote(KEY),
    "quote_plus": quote_plus(KEY),
    "quote_lower": quote(KEY, safe="").replace("%2F", "%2f").replace("%2B", "%2b"),
    **{f"b64_{n}": v for n, v in enumerate(_b64(KEY))},
    **{f"basic_user_{n}": v for n, v in enumerate(_b64(f"{KEY}:"))},
    **{f"basic_pass_{n}": v for n, v in enumerate(_b64(f":{KEY}"))},
    **{f"basic_both_{n}": v for n, v in enumerate(_b64(f"someone:{KEY}"))},
}


def test_the_encodings_differ_from_the_key() -> None:
    assert all(form != KEY and KEY not in form for form in ENCODED.values())


@pytest.mark.parametrize("form", sorted(ENCODED))
def test_redact_text_covers_encoded_forms(form: str) -> None:
    echoed = ENCODED[form]
    text = redact_text(f"upstream said: {echoed} (end)", [KEY])
    assert echoed not in text and REDACTED in text
    assert text.startswith("upstream said: ") and text.endswith(" (end)")


def _hostile(request: httpx.Request) -> httpx.Response:
    """A server that echoes the key it was sent in every encoding at once."""
    assert request.headers["authorization"] == f"Bearer {KEY}"
    return httpx.Response(400, json={"message": f"bad key {ENCODED['quote']}",
                                     "error": {"echo": ENCODED}})


def test_error_bodies_echoing_encoded_keys_are_redacted() -> None:
    client = HttpClient(provider="runpod", api="rest", base_url="https://api.test/v1",
                        headers={"Authorization": f"Bearer {KEY}"}, secrets=(KEY,),
                        http=httpx.MockTransport(_hostile))
    with pytest.raises(atlas_nb.AtlasError) as info:
        client.request("GET", "/pods/x")
    err = info.value
    seen: Any = (err.message, err.raw, err.args, err.hint, str(err), repr(err))
    text = json.dumps(seen, default=str)
    for name, form in ENCODED.items():
        assert form not in text, f"{name} leaked"
    assert REDACTED in err.message


def test_short_or_empty_secrets_change_nothing() -> None:
    assert redact_text("abc YWJj %61", ["abc", "", None]) == "abc YWJj %61"


def test_a_loaded_dump_cannot_sign_urls_and_says_why() -> None:
    c = atlas_nb.spawn_compute(provider="mock", image="img:1", auth="signed_url",
                               ports=[(8000, "http")])
    assert atlas_nb.auth.sign_compute_url(c, 8000, expires_in=60)  # the original can
    loaded = Compute.model_validate_json(c.model_dump_json())
    with pytest.raises(atlas_nb.ValidationError, match="holds no secret"):
        atlas_nb.auth.sign_compute_url(loaded, 8000, expires_in=60)
    atlas_nb.terminate(c.id, provider="mock")
