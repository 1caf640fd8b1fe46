"""atlas_nb.auth: bearer tokens, HMAC signed URLs (with hypothesis properties) and
sign_compute_url."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, quote, unquote_to_bytes, urlsplit

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import atlas_nb as atlas
from atlas_nb import AtlasError, AuthHandle, Compute, PortMapping, ValidationError
from atlas_nb.auth import (
    ENV_VAR,
    SIGNING_ENV_VAR,
    MintedToken,
    SignatureError,
    hash_token,
    mint_secret,
    mint_token,
    sign_compute_url,
    sign_url,
    token_valid,
    verify_url,
)

SECRET = "s3cret-s3cret-s3cret-s3cret-0001"
OTHER_SECRET = "s3cret-s3cret-s3cret-s3cret-0002"
NOW = 1_700_000_000
OURS = ("atlas_v", "atlas_exp", "atlas_sig")
B64URL = re.compile(r"[A-Za-z0-9_-]+")

# Deterministic (derandomized, no example database) and free of deadlines, because the
# machine is noisy. The properties below run ~2,400 examples in a few seconds.
PROPS = settings(
    max_examples=200, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def reject_reason(url: str, *, secret: str | bytes = SECRET, now: float = NOW,
                  leeway_s: int = 30) -> str:
    with pytest.raises(SignatureError) as info:
        verify_url(url, secret=secret, now=now, leeway_s=leeway_s)
    return info.value.reason


# ------------------------------------------------------------------------- bearer


def test_mint_token_is_32_random_urlsafe_bytes_with_hash_header_and_env() -> None:
    minted = mint_token()
    assert isinstance(minted, MintedToken)
    assert B64URL.fullmatch(minted.token) and len(minted.token) == 43
    assert len(base64.urlsafe_b64decode(minted.token + "=")) == 32
    assert minted.hash == hashlib.sha256(minted.token.encode()).hexdigest() == hash_token(
        minted.token)
    assert minted.header == f"Authorization: Bearer {minted.token}"
    assert minted.env == {"ATLAS_PRESHARED_KEY": minted.token}
    assert ENV_VAR == "ATLAS_PRESHARED_KEY" and SIGNING_ENV_VAR == "ATLAS_SIGNING_SECRET"
    assert minted.token not in repr(minted) and minted.hash in repr(minted)
    assert mint_token().token != minted.token


def test_token_valid_accepts_only_the_token_of_the_hash() -> None:
    minted = mint_token()
    assert token_valid(minted.token, minted.hash)
    assert not token_valid(minted.token + "x", minted.hash)
    assert not token_valid(mint_token().token, minted.hash)
    assert not token_valid(None, minted.hash)
    assert not token_valid("", hash_token(""))
    assert not token_valid(minted.token, "")


def test_mint_secret_is_urlsafe_and_fresh() -> None:
    secret = mint_secret()
    assert B64URL.fullmatch(secret) and len(secret) == 43
    assert mint_secret() != secret


# ---------------------------------------------------------------------- signed URLs


def test_sign_keeps_original_query_verbatim_then_appends_ours() -> None:
    url = "https://pod.example:8443/v1/a%20b?z=1&a=hello+world&a=%7E&flag#frag"
    signed = sign_url(url, secret=SECRET, expires_in=600, now=NOW)
    parts = urlsplit(signed)
    assert signed.startswith("https://pod.example:8443/v1/a%20b?z=1&a=hello+world&a=%7E&flag&")
    assert parts.fragment == "frag"
    names = [kv.split("=")[0] for kv in parts.query.split("&")]
    assert names == ["z", "a", "a", "flag", *OURS]
    params = dict(parse_qsl(parts.query))
    assert params["atlas_v"] == "1"
    assert params["atlas_exp"] == str(NOW + 600)
    assert B64URL.fullmatch(params["atlas_sig"]) and len(params["atlas_sig"]) == 43
    verify_url(signed, secret=SECRET, now=NOW)


def test_signature_is_hmac_sha256_over_the_documented_canonical_string() -> None:
    # Pins the wire format so a pod running another atlas_nb version still verifies.
    signed = sign_url("https://Pod.Example/p/a%2fb?b=2&a=x+y&a=1", secret=SECRET, now=NOW)
    message = b"\n".join([b"atlas-signed-url", b"1", b"pod.example", b"/p/a/b",
                          b"a=x%20y&a=1&b=2", str(NOW + 3600).encode()])
    digest = hmac.new(SECRET.encode(), message, hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert signed.endswith(f"&atlas_sig={expected}")


def test_sign_without_query_starts_one() -> None:
    signed = sign_url("http://h.example/x", secret=SECRET, now=NOW)
    assert urlsplit(signed).query.startswith("atlas_v=1&atlas_exp=")


def test_str_and_bytes_secrets_are_the_same_key() -> None:
    a = sign_url("https://h.example/x", secret=SECRET, now=NOW)
    b = sign_url("https://h.example/x", secret=SECRET.encode(), now=NOW)
    assert a == b
    verify_url(a, secret=SECRET.encode(), now=NOW)


@pytest.mark.parametrize("secret", ["", "short", b"0123456789abcde", None, 12345])
def test_short_empty_or_odd_secret_is_a_validation_error(secret: object) -> None:
    with pytest.raises(ValidationError, match="secret"):
        sign_url("https://h.example/x", secret=secret, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="secret"):
        verify_url("https://h.example/x", secret=secret, now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("param", OURS)
def test_signing_a_url_that_already_carries_our_params_is_refused(param: str) -> None:
    with pytest.raises(ValidationError, match=param):
        sign_url(f"https://h.example/x?a=1&{param}=9", secret=SECRET, now=NOW)
    signed = sign_url("https://h.example/x", secret=SECRET, now=NOW)
    with pytest.raises(ValidationError, match="already carries"):
        sign_url(signed, secret=SECRET, now=NOW)


@pytest.mark.parametrize("url", ["/relative/path", "ftp://h.example/x", "https:///nohost",
                                 "https://h.example:99999/x", "not a url"])
def test_sign_needs_an_absolute_http_or_ws_url(url: str) -> None:
    with pytest.raises(ValidationError):
        sign_url(url, secret=SECRET, now=NOW)


@pytest.mark.parametrize("expires_in", [0, -5, 1.5, True, "60"])
def test_expires_in_must_be_positive_whole_seconds(expires_in: object) -> None:
    with pytest.raises(ValidationError, match="expires_in"):
        sign_url("https://h.example/x", secret=SECRET, expires_in=expires_in,  # type: ignore[arg-type]
                 now=NOW)


def test_wrong_secret_is_bad_signature() -> None:
    signed = sign_url("https://h.example/x?a=1", secret=SECRET, now=NOW)
    assert reject_reason(signed, secret=OTHER_SECRET) == "bad_signature"


def test_expiry_and_leeway() -> None:
    signed = sign_url("https://h.example/x", secret=SECRET, expires_in=60, now=NOW)
    exp = NOW + 60
    verify_url(signed, secret=SECRET, now=exp)
    verify_url(signed, secret=SECRET, now=exp + 30)  # default leeway
    assert reject_reason(signed, now=exp + 31) == "expired"
    verify_url(signed, secret=SECRET, now=exp + 120, leeway_s=120)
    assert reject_reason(signed, now=exp + 1, leeway_s=0) == "expired"
    with pytest.raises(ValidationError, match="leeway_s"):
        verify_url(signed, secret=SECRET, now=NOW, leeway_s=-1)


def test_expired_is_reported_only_for_a_valid_signature() -> None:
    signed = sign_url("https://h.example/x", secret=SECRET, expires_in=60, now=NOW)
    late = NOW + 10_000
    assert reject_reason(signed, now=late) == "expired"
    assert reject_reason(signed, secret=OTHER_SECRET, now=late) == "bad_signature"
    assert reject_reason(signed.replace("/x?", "/y?"), now=late) == "bad_signature"


def test_expired_error_is_an_atlas_error_without_the_url() -> None:
    signed = sign_url("https://h.example/x?q=private", secret=SECRET, expires_in=1, now=NOW)
    with pytest.raises(SignatureError) as info:
        verify_url(signed, secret=SECRET, now=NOW + 1000)
    err = info.value
    assert isinstance(err, AtlasError) and err.kind == "signature" and err.reason == "expired"
    assert err.hint is not None and "sign" in err.hint
    sig = dict(parse_qsl(urlsplit(signed).query))["atlas_sig"]
    for text in (str(err), repr(err)):
        assert sig not in text and "private" not in text and SECRET not in text


def _swap_param(url: str, name: str, value: str | None) -> str:
    parts = urlsplit(url)
    pairs = [kv for kv in parts.query.split("&") if kv.split("=")[0] != name]
    if value is not None:
        pairs.append(f"{name}={value}")
    return parts._replace(query="&".join(pairs)).geturl()


@pytest.mark.parametrize(("name", "value"), [
    ("atlas_sig", None), ("atlas_sig", ""), ("atlas_exp", None), ("atlas_exp", ""),
    ("atlas_exp", "12a"), ("atlas_exp", "+123"), ("atlas_exp", "-1"), ("atlas_exp", "1_000"),
    ("atlas_exp", "%20123"), ("atlas_exp", "١٢٣"), ("atlas_exp", "1e9"), ("atlas_exp", "9" * 40),
    ("atlas_v", None), ("atlas_v", "2"), ("atlas_v", "01"), ("atlas_v", ""),
])
def test_malformed_signature_params(name: str, value: str | None) -> None:
    signed = sign_url("https://h.example/x?a=1", secret=SECRET, now=NOW)
    assert reject_reason(_swap_param(signed, name, value)) == "malformed"


@pytest.mark.parametrize("param", OURS)
def test_repeated_signature_param_is_malformed(param: str) -> None:
    signed = sign_url("https://h.example/x?a=1", secret=SECRET, now=NOW)
    value = dict(parse_qsl(urlsplit(signed).query))[param]
    assert reject_reason(f"{signed}&{param}={value}") == "malformed"


@pytest.mark.parametrize("url", ["", "/x?atlas_v=1", "https:///x", "https://h.example:bad/x"])
def test_unverifiable_urls_are_malformed(url: str) -> None:
    assert reject_reason(url) == "malformed"


def test_non_string_url_is_malformed() -> None:
    assert reject_reason(b"https://h.example/x") == "malformed"  # type: ignore[arg-type]


def test_signature_params_may_sit_anywhere_in_the_query() -> None:
    signed = sign_url("https://h.example/x?a=1&b=2", secret=SECRET, now=NOW)
    parts = urlsplit(signed)
    segments = parts.query.split("&")
    moved = parts._replace(query="&".join(segments[::-1])).geturl()
    verify_url(moved, secret=SECRET, now=NOW)


@pytest.mark.parametrize(("signed_as", "presented"), [
    ("https://Pod.EXAMPLE/x", "https://pod.example/x"),
    ("https://pod.example:443/x", "https://pod.example/x"),
    ("http://pod.example:80/x", "http://pod.example/x"),
    ("https://pod.example/x", "http://pod.example/x"),  # TLS may end at a proxy
    ("wss://pod.example/x", "https://pod.example/x"),
    ("https://[2001:DB8::1]:8443/x", "https://[2001:db8::1]:8443/x"),
    ("https://Bücher.example/x", "https://xn--bcher-kva.example/x"),  # Host header is punycode
    ("https://h.example/a%2Fb", "https://h.example/a/b"),  # what ASGI's scope["path"] sees
    ("https://h.example/a b", "https://h.example/a%20b"),
    ("https://h.example", "https://h.example/"),
    ("https://h.example/x?q=a+b", "https://h.example/x?q=a%20b"),
    ("https://h.example/x?q=%7e", "https://h.example/x?q=~"),
    ("https://h.example/x?flag", "https://h.example/x?flag="),
    ("https://h.example/x?a=1&&b=2", "https://h.example/x?a=1&b=2"),
    ("https://h.example/x?a=1&b=2", "https://h.example/x?b=2&a=1"),
])
def test_equivalent_spellings_verify(signed_as: str, presented: str) -> None:
    signed = sign_url(signed_as, secret=SECRET, now=NOW)
    ours = urlsplit(signed).query.split("&")[-3:]
    parts = urlsplit(presented)
    query = "&".join([parts.query, *ours] if parts.query else ours)
    verify_url(parts._replace(query=query).geturl(), secret=SECRET, now=NOW)


@pytest.mark.parametrize(("signed_as", "presented"), [
    ("https://pod.example/x", "https://pod.example:8443/x"),
    ("https://pod.example/x", "https://pod.example:80/x"),
    ("https://pod.example:8000/x", "https://pod.example:8001/x"),
    ("https://pod.example/x", "https://evil.example/x"),
    ("https://pod.example/x", "https://pod.example.evil/x"),
    ("https://h.example/x", "https://h.example/X"),
    ("https://h.example/x", "https://h.example/x/"),
    ("https://h.example/x?q=a+b", "https://h.example/x?q=a%2Bb"),  # '+' literal vs space
    ("https://h.example/x?a=1&a=2", "https://h.example/x?a=2&a=1"),  # last value wins in apps
    ("https://h.example/x?a=1&a=2", "https://h.example/x?a=1"),
    ("https://h.example/x?a=1", "https://h.example/x?a=1&a=1"),
    ("https://h.example/x?a=%FF", "https://h.example/x?a=%FE"),  # bytes, not U+FFFD
])
def test_meaningful_changes_break_the_signature(signed_as: str, presented: str) -> None:
    signed = sign_url(signed_as, secret=SECRET, now=NOW)
    ours = urlsplit(signed).query.split("&")[-3:]
    parts = urlsplit(presented)
    query = "&".join([parts.query, *ours] if parts.query else ours)
    assert reject_reason(parts._replace(query=query).geturl()) == "bad_signature"


# ----------------------------------------------------- hypothesis: tamper properties

KEYS = st.sampled_from(["a", "b", "model", "Q", "x y", "ä", "a+b", "atlas"]) | st.text(max_size=6)
VALUES = st.text(max_size=8)
PAIRS = st.lists(st.tuples(KEYS.filter(lambda k: k not in OURS), VALUES), max_size=6)
SEGMENTS = st.lists(st.text(max_size=6), max_size=4)
HOSTS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z]{1,6}){0,2}", fullmatch=True)
PORTS = st.none() | st.integers(1, 65535)
SCHEMES = st.sampled_from(["http", "https"])
DEFAULT = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Parts:
    """A URL as data, spelled one fixed way, so tests can change one thing at a time."""

    scheme: str
    host: str
    port: int | None
    segments: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]

    def url(self, ours: tuple[str, ...] = ()) -> str:
        port = f":{self.port}" if self.port is not None else ""
        path = "/" + "/".join(quote(s, safe="") for s in self.segments)
        enc = [f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in self.pairs]
        query = "&".join([*enc, *ours])
        return f"{self.scheme}://{self.host}{port}{path}" + (f"?{query}" if query else "")

    def host_key(self) -> str:
        port = self.port if self.port not in (None, DEFAULT[self.scheme]) else None
        return f"{self.host.lower()}:{port}"

    def path_key(self) -> bytes:
        return unquote_to_bytes("/" + "/".join(quote(s, safe="") for s in self.segments))

    def query_key(self) -> list[tuple[str, str]]:
        return sorted(self.pairs, key=lambda kv: quote(kv[0], safe="-._~"))


PARTS = st.builds(Parts, SCHEMES, HOSTS, PORTS, SEGMENTS.map(tuple), PAIRS.map(tuple))


def signed(parts: Parts, expires_in: int = 3600) -> tuple[str, tuple[str, ...]]:
    url = sign_url(parts.url(), secret=SECRET, expires_in=expires_in, now=NOW)
    ours = tuple(urlsplit(url).query.split("&")[-3:])
    assert parts.url(ours) == url
    return url, ours


@PROPS
@given(PARTS, st.integers(1, 10**7))
def test_property_round_trip(parts: Parts, expires_in: int) -> None:
    url, _ = signed(parts, expires_in)
    verify_url(url, secret=SECRET, now=NOW + expires_in)


@PROPS
@given(PARTS, HOSTS, PORTS)
def test_property_any_host_or_port_change_is_rejected(parts: Parts, host: str,
                                                      port: int | None) -> None:
    _, ours = signed(parts)
    other = replace(parts, host=host, port=port)
    assume(other.host_key() != parts.host_key())
    assert reject_reason(other.url(ours)) == "bad_signature"


@PROPS
@given(PARTS, SEGMENTS)
def test_property_any_path_change_is_rejected(parts: Parts, segments: list[str]) -> None:
    _, ours = signed(parts)
    other = replace(parts, segments=tuple(segments))
    assume(other.path_key() != parts.path_key())
    assert reject_reason(other.url(ours)) == "bad_signature"


@PROPS
@given(PARTS, st.data())
def test_property_any_query_change_is_rejected(parts: Parts, data: st.DataObject) -> None:
    _, ours = signed(parts)
    pairs = list(parts.pairs)
    ops = ["add"] + (["remove", "value", "key"] if pairs else [])
    by_key: dict[str, list[str]] = {}
    for k, v in pairs:
        by_key.setdefault(k, []).append(v)
    shufflable = [k for k, vs in by_key.items() if len(set(vs)) > 1]
    if shufflable:
        ops.append("reorder")
    op = data.draw(st.sampled_from(ops), label="op")
    if op == "add":
        pairs.insert(data.draw(st.integers(0, len(pairs))),
                     (data.draw(KEYS.filter(lambda k: k not in OURS)), data.draw(VALUES)))
    elif op == "remove":
        del pairs[data.draw(st.integers(0, len(pairs) - 1))]
    elif op in ("value", "key"):
        i = data.draw(st.integers(0, len(pairs) - 1))
        k, v = pairs[i]
        if op == "value":
            pairs[i] = (k, data.draw(VALUES.filter(lambda x: x != v)))
        else:
            pairs[i] = (data.draw(KEYS.filter(lambda x: x != k and x not in OURS)), v)
    else:
        key = data.draw(st.sampled_from(shufflable))
        values = by_key[key]
        new = data.draw(st.permutations(values).filter(lambda p: list(p) != values))
        it = iter(new)
        pairs = [(k, next(it)) if k == key else (k, v) for k, v in pairs]
    other = replace(parts, pairs=tuple(pairs))
    assert other.query_key() != parts.query_key()
    assert reject_reason(other.url(ours)) == "bad_signature"


@PROPS
@given(PARTS, KEYS.filter(lambda k: k not in OURS), st.lists(VALUES, min_size=2, max_size=4,
                                                             unique=True), st.data())
def test_property_reordering_one_keys_values_is_rejected(
    parts: Parts, key: str, values: list[str], data: st.DataObject
) -> None:
    # Apps read a repeated key as a list or take its last value, so order matters.
    base = replace(parts, pairs=parts.pairs + tuple((key, v) for v in values))
    _, ours = signed(base)
    mine = [v for k, v in base.pairs if k == key]
    new = iter(data.draw(st.permutations(mine).filter(lambda p: list(p) != mine)))
    other = replace(base, pairs=tuple((k, next(new)) if k == key else (k, v)
                                      for k, v in base.pairs))
    assert reject_reason(other.url(ours)) == "bad_signature"


@PROPS
@given(PARTS, st.integers(-(10**6), 10**6).filter(bool))
def test_property_any_expiry_change_is_rejected(parts: Parts, delta: int) -> None:
    _, ours = signed(parts)
    exp = int(ours[1].removeprefix("atlas_exp="))
    forged = (ours[0], f"atlas_exp={exp + delta}", ours[2])
    # Even a later "now" must not turn a forged expiry into an "expired" answer.
    assert reject_reason(parts.url(forged), now=NOW + 10**7) == "bad_signature"


@PROPS
@given(PARTS, st.data())
def test_property_any_signature_change_is_rejected(parts: Parts, data: st.DataObject) -> None:
    _, ours = signed(parts)
    sig = ours[2].removeprefix("atlas_sig=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    op = data.draw(st.sampled_from(["flip", "truncate", "append"]))
    if op == "flip":
        i = data.draw(st.integers(0, len(sig) - 1))
        c = data.draw(st.sampled_from(alphabet).filter(lambda ch: ch != sig[i]))
        forged = sig[:i] + c + sig[i + 1:]
    elif op == "truncate":
        forged = sig[: data.draw(st.integers(1, len(sig) - 1))]
    else:
        forged = sig + data.draw(st.text(alphabet, min_size=1, max_size=3))
    assert reject_reason(parts.url((ours[0], ours[1], f"atlas_sig={forged}"))) == "bad_signature"


@PROPS
@given(PARTS, st.binary(min_size=16, max_size=40))
def test_property_another_secret_is_rejected(parts: Parts, secret: bytes) -> None:
    assume(secret != SECRET.encode())
    url, _ = signed(parts)
    assert reject_reason(url, secret=secret) == "bad_signature"


def _semantics(url: str) -> tuple[object, ...]:
    """What a request means to a server, computed with the stdlib (an independent oracle)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port if parts.port not in (None, DEFAULT.get(scheme)) else None
    pairs = parse_qsl(parts.query, keep_blank_values=True, encoding="latin-1")
    ours = sorted((k, v) for k, v in pairs if k in OURS)
    rest = sorted((kv for kv in pairs if kv[0] not in OURS), key=lambda kv: kv[0])
    return ((parts.hostname or "").lower(), port, unquote_to_bytes(parts.path) or b"/",
            rest, ours)


@settings(PROPS, max_examples=800)
@given(PARTS, st.data())
def test_property_no_false_accept_under_random_edits(parts: Parts, data: st.DataObject) -> None:
    """Random character edits anywhere in a signed URL: whatever verifies must mean
    exactly what was signed."""
    url, _ = signed(parts)
    chars = list(url)
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        i = data.draw(st.integers(0, len(chars) - (0 if op == "insert" else 1)))
        ch = data.draw(st.sampled_from("aZ09-_.~%+&=?/#:@ Aé"))
        if op == "insert":
            chars.insert(i, ch)
        elif op == "delete" and len(chars) > 1:
            del chars[i]
        else:
            chars[i] = ch
    edited = "".join(chars)
    try:
        verify_url(edited, secret=SECRET, now=NOW)
    except SignatureError:
        return
    try:
        same = _semantics(edited) == _semantics(url)
    except ValueError:  # stdlib cannot even read it, yet it verified
        same = False
    assert same, f"accepted a changed URL: {edited!r} (signed {url!r})"


# -------------------------------------------------------------------- sign_compute_url


def _compute(auth: AuthHandle | None, url: str | None = "https://c1-8000.proxy.example") -> Compute:
    return Compute(id="c1", provider="mock", status="running", auth=auth,
                   ports=(PortMapping(internal=8000, protocol="http", url=url),
                          PortMapping(internal=22, protocol="tcp")))


def test_sign_compute_url_by_port_path_or_url() -> None:
    compute = _compute(AuthHandle(scheme="signed_url", token=SECRET, env_var=SIGNING_ENV_VAR))
    by_port = sign_compute_url(compute, 8000, expires_in=60, now=NOW)
    assert by_port.startswith("https://c1-8000.proxy.example?atlas_v=1&atlas_exp=")
    verify_url(by_port, secret=SECRET, now=NOW + 60)
    by_path = sign_compute_url(compute, "/v1/models?x=1", now=NOW)
    assert by_path.startswith("https://c1-8000.proxy.example/v1/models?x=1&atlas_v=1")
    verify_url(by_path, secret=SECRET, now=NOW)
    full = sign_compute_url(compute, "https://other.example/y", now=NOW)
    verify_url(full, secret=SECRET, now=NOW)


def test_sign_compute_url_explains_what_is_wrong() -> None:
    signing = AuthHandle(scheme="signed_url", token=SECRET, env_var=SIGNING_ENV_VAR)
    with pytest.raises(ValidationError, match="bearer"):
        sign_compute_url(_compute(AuthHandle(scheme="bearer", token="t" * 43)), 8000)
    with pytest.raises(ValidationError, match="no auth handle"):
        sign_compute_url(_compute(None), 8000)
    with pytest.raises(ValidationError, match=r"port 9000 \(exposed: 8000/http, 22/tcp\)"):
        sign_compute_url(_compute(signing), 9000)
    with pytest.raises(ValidationError, match="no URL yet"):
        sign_compute_url(_compute(signing, url=None), 8000)
    with pytest.raises(ValidationError, match="no HTTP URL yet"):
        sign_compute_url(_compute(signing, url=None), "/v1")
    with pytest.raises(ValidationError, match="port number or a URL"):
        sign_compute_url(_compute(signing), True)


def test_sign_compute_url_with_the_spawned_handle_on_a_later_compute() -> None:
    spawned = _compute(AuthHandle(scheme="signed_url", token=SECRET, env_var=SIGNING_ENV_VAR),
                       url=None)
    ready = _compute(None)  # what get_compute / wait_ready return: URLs, no secret
    url = sign_compute_url(ready, 8000, auth=spawned.auth, now=NOW)
    verify_url(url, secret=SECRET, now=NOW)


def test_spawn_with_signed_url_auth_end_to_end_on_mock() -> None:
    compute = atlas.spawn_compute(provider="mock", image="img:1", ports=[(8000, "http")],
                                  auth="signed_url")
    try:
        assert compute.auth is not None and compute.auth.scheme == "signed_url"
        assert compute.auth.env_var == SIGNING_ENV_VAR
        assert compute.auth.token not in repr(compute)
        url = sign_compute_url(compute, 8000, expires_in=120)
        verify_url(url, secret=compute.auth.token)
        assert reject_reason(url, secret=mint_secret(), now=NOW) == "bad_signature"
    finally:
        atlas.terminate(compute.id, provider="mock")
