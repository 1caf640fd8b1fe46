"""Auth helpers: preshared bearer tokens and HMAC signed URLs for pods.

Bearer: ``mint_token()`` makes a 32-byte random token; keep its SHA-256 ``hash`` and
give the token to the client once. The pod receives it as ``ATLAS_PRESHARED_KEY``.

Signed URLs: ``sign_url(url, secret=...)`` appends ``atlas_v``, ``atlas_exp`` and
``atlas_sig`` to a URL; ``verify_url`` checks them. The pod receives the secret as
``ATLAS_SIGNING_SECRET``. The HMAC-SHA256 covers, one per line::

    atlas-signed-url          fixed domain tag
    1                         scheme version (``atlas_v``)
    host[:port]               lowercased; the port only when not the scheme's default
    /path                     percent-decoded to bytes, re-encoded one fixed way
    canonical query           every pair but ours, re-encoded one fixed way,
                              stably sorted by key (duplicates keep their order)
    expiry                    unix seconds (``atlas_exp``)

The URL scheme is deliberately not covered: a TLS-terminating proxy in front of the
pod turns ``https`` into ``http``. ``atlas_nb.pod_auth.PodAuthMiddleware`` is the
pod-side verifier for both schemes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit, urlunsplit

from .errors import AtlasError, ValidationError

if TYPE_CHECKING:
    from .models import AuthHandle, Compute

__all__ = [
    "ENV_VAR",
    "EXP_PARAM",
    "SIGNING_ENV_VAR",
    "SIG_PARAM",
    "VERSION",
    "VERSION_PARAM",
    "MintedToken",
    "SignatureError",
    "hash_token",
    "mint_secret",
    "mint_token",
    "sign_compute_url",
    "sign_url",
    "token_valid",
    "verify_url",
]

ENV_VAR = "ATLAS_PRESHARED_KEY"
SIGNING_ENV_VAR = "ATLAS_SIGNING_SECRET"

VERSION = "1"
VERSION_PARAM = "atlas_v"
EXP_PARAM = "atlas_exp"
SIG_PARAM = "atlas_sig"
_OURS = frozenset({VERSION_PARAM, EXP_PARAM, SIG_PARAM})
_DOMAIN = b"atlas-signed-url"
MIN_SECRET_BYTES = 16
DEFAULT_LEEWAY_S = 30
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_EXP_RE = re.compile(r"[0-9]{1,15}")  # strict: no sign, spaces, underscores or non-ASCII digits
_UNRESERVED = b"-._~"  # RFC 3986; everything else is percent-encoded in the canonical form

SignatureReason = Literal["expired", "bad_signature", "malformed"]


class SignatureError(AtlasError):
    """A signed URL failed verification; ``reason`` is ``expired``, ``bad_signature`` or
    ``malformed``. The message never contains the URL (it is itself a credential)."""

    kind = "signature"

    def __init__(self, message: str, *, reason: SignatureReason, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason: SignatureReason = reason

    def __repr__(self) -> str:
        return f"SignatureError(reason={self.reason!r}, message={self.message!r})"


# ---------------------------------------------------------------------------- bearer


@dataclass(frozen=True)
class MintedToken:
    """A fresh bearer token. ``token`` is shown here once and never in ``repr``."""

    token: str = field(repr=False)
    hash: str
    header: str = field(repr=False)
    env: dict[str, str] = field(repr=False)


def hash_token(token: str) -> str:
    """Hex SHA-256 of the token string: what a server stores instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def mint_token(nbytes: int = 32) -> MintedToken:
    """A url-safe token of ``nbytes`` random bytes, its hash, header and pod env."""
    token = base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).rstrip(b"=").decode()
    return MintedToken(
        token=token,
        hash=hash_token(token),
        header=f"Authorization: Bearer {token}",
        env={ENV_VAR: token},
    )


def mint_secret(nbytes: int = 32) -> str:
    """A url-safe random signing secret."""
    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).rstrip(b"=").decode()


def token_valid(candidate: str | None, expected_hash: str) -> bool:
    """Constant-time check of a presented token against a stored hash."""
    if not candidate or not expected_hash:
        return False
    return hmac.compare_digest(hash_token(candidate), expected_hash)


# ----------------------------------------------------------------------- signed URLs


def _secret_bytes(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        key = secret.encode()
    elif isinstance(secret, bytes | bytearray):
        key = bytes(secret)
    else:
        raise ValidationError(
            f"secret must be str or bytes, not {type(secret).__name__}; "
            "pass compute.auth.token or atlas_nb.auth.mint_secret()"
        )
    if len(key) < MIN_SECRET_BYTES:
        raise ValidationError(
            f"secret is too short ({len(key)} bytes); use at least {MIN_SECRET_BYTES}, "
            "e.g. atlas_nb.auth.mint_secret()"
        )
    return key


def _reencode(raw: str, *, plus_is_space: bool) -> str:
    # Decode to bytes, not text: invalid UTF-8 must not collapse onto U+FFFD, or two
    # different requests would share one signature.
    if plus_is_space:
        raw = raw.replace("+", " ")
    return quote_from_bytes(unquote_to_bytes(raw), safe=_UNRESERVED)


def _split_query(query: str) -> list[tuple[str, str]]:
    """``(key, value)`` pairs in their canonical encoding, in URL order.

    Form semantics, like the ASGI frameworks that read them: ``&`` separates, empty
    segments are dropped, ``+`` is a space and ``flag`` equals ``flag=``.
    """
    pairs = []
    for segment in query.split("&"):
        if not segment:
            continue
        key, _, value = segment.partition("=")
        pairs.append((_reencode(key, plus_is_space=True), _reencode(value, plus_is_space=True)))
    return pairs


def _canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    # Stable sort on the key only: a reordering of one key's values changes what the
    # app reads (Starlette's query_params[k] is the last one), so it must break the
    # signature, while moving distinct keys around does not.
    return "&".join(f"{k}={v}" for k, v in sorted(pairs, key=lambda kv: kv[0]))


def _canonical_host(hostname: str, port: int | None, scheme: str) -> str:
    host = hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    elif not host.isascii():
        # Browsers send an internationalized name as punycode in the Host header; a
        # name the codec rejects stays percent-encoded below, still one fixed form.
        with contextlib.suppress(UnicodeError):
            host = host.encode("idna").decode("ascii")
    host = quote_from_bytes(host.encode(), safe=b"-._~:[]")
    if port is not None and port != _DEFAULT_PORTS.get(scheme.lower()):
        host = f"{host}:{port}"
    return host


def _canonical_path(raw_path: str) -> str:
    # '+' is literal in a path; '%2F' becomes '/', matching the decoded ASGI scope["path"].
    path = quote_from_bytes(unquote_to_bytes(raw_path), safe=b"/" + _UNRESERVED)
    return path or "/"


def _signature(key: bytes, version: str, host: str, path: str, query: str, exp: int) -> str:
    message = b"\n".join(
        [_DOMAIN, version.encode(), host.encode(), path.encode(), query.encode(), str(exp).encode()]
    )
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _whole_seconds(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValidationError(f"{name} must be whole seconds >= {minimum}, not {value!r}")


def _now(now: float | None) -> int:
    return int(time.time() if now is None else now)


def sign_url(
    url: str, *, secret: str | bytes, expires_in: int = 3600, now: float | None = None
) -> str:
    """``url`` with ``atlas_v``, ``atlas_exp`` and ``atlas_sig`` appended, valid ``expires_in`` s.

    The original query is kept verbatim and first; the fragment is kept and not signed.

    >>> from atlas_nb.auth import sign_url, verify_url
    >>> secret = "0123456789abcdef0123456789abcdef"
    >>> signed = sign_url("https://pod.example/v1/models?x=1", secret=secret, now=0)
    >>> signed.startswith("https://pod.example/v1/models?x=1&atlas_v=1&atlas_exp=3600&atlas_sig=")
    True
    >>> verify_url(signed, secret=secret, now=10)
    """
    key = _secret_bytes(secret)
    _whole_seconds("expires_in", expires_in, 1)
    if not isinstance(url, str):
        raise ValidationError(f"url must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
        hostname, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ValidationError(f"cannot sign this URL: {exc}; pass 'https://host/path'") from None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not hostname:
        raise ValidationError(
            "can only sign an absolute http(s) or ws(s) URL such as 'https://host/path'; "
            "the host is part of the signature"
        )
    query = parts.query.rstrip("&")
    pairs = _split_query(query)
    clash = sorted({k for k, _ in pairs if unquote_to_bytes(k).decode("latin-1") in _OURS})
    if clash:
        raise ValidationError(
            f"url already carries the signature parameter {clash[0]!r}; sign the unsigned URL"
        )
    exp = _now(now) + expires_in
    sig = _signature(
        key, VERSION, _canonical_host(hostname, port, parts.scheme), _canonical_path(parts.path),
        _canonical_query(pairs), exp,
    )
    ours = f"{VERSION_PARAM}={VERSION}&{EXP_PARAM}={exp}&{SIG_PARAM}={sig}"
    return urlunsplit(parts._replace(query=f"{query}&{ours}" if query else ours))


def verify_url(
    url: str, *, secret: str | bytes, now: float | None = None, leeway_s: int = DEFAULT_LEEWAY_S
) -> None:
    """Return if ``url`` was signed with ``secret`` and has not expired; else raise.

    Raises ``SignatureError`` with ``reason``: ``malformed`` (missing/duplicated/
    unreadable signature parameters, unknown version, no host), ``bad_signature``
    (anything changed or the wrong secret) or ``expired`` (only once the signature
    checked out, more than ``leeway_s`` seconds after ``atlas_exp``).
    """
    key = _secret_bytes(secret)
    if not isinstance(url, str):
        raise SignatureError("signed URL is not a string", reason="malformed")
    try:
        parts = urlsplit(url)
        hostname, port = parts.hostname, parts.port
    except ValueError:
        raise SignatureError("signed URL cannot be parsed", reason="malformed") from None
    if not hostname:
        raise SignatureError("signed URL has no host", reason="malformed")
    verify_parts(
        host=_canonical_host(hostname, port, parts.scheme), path=parts.path, query=parts.query,
        key=key, now=now, leeway_s=leeway_s,
    )


def canonical_host(host_header: str, scheme: str) -> str:
    """The canonical host of an HTTP ``Host`` header value (``name[:port]``).

    Raises ``SignatureError`` (reason ``malformed``) if the header cannot be read.
    """
    try:
        parts = urlsplit(f"//{host_header}")
        hostname, port = parts.hostname, parts.port
    except ValueError:
        raise SignatureError("Host header cannot be parsed", reason="malformed") from None
    if not hostname or parts.path or parts.query or parts.username is not None:
        raise SignatureError("Host header is not 'name[:port]'", reason="malformed")
    return _canonical_host(hostname, port, scheme)


def verify_parts(
    *, host: str, path: str, query: str, key: bytes, now: float | None = None,
    leeway_s: int = DEFAULT_LEEWAY_S,
) -> None:
    """``verify_url`` on a request already split up: a canonical ``host``, the raw
    (still percent-encoded) ``path`` and ``query``, and the key from ``_secret_bytes``.

    This is what ``PodAuthMiddleware`` calls with the ASGI scope's pieces.
    """
    _whole_seconds("leeway_s", leeway_s, 0)
    pairs = _split_query(query)
    found: dict[str, list[str]] = {}
    rest = []
    for k, v in pairs:
        name = unquote_to_bytes(k).decode("latin-1")
        if name in _OURS:
            found.setdefault(name, []).append(unquote_to_bytes(v).decode("latin-1"))
        else:
            rest.append((k, v))
    for name in (VERSION_PARAM, EXP_PARAM, SIG_PARAM):
        values = found.get(name, [])
        if len(values) != 1 or not values[0]:
            what = "missing" if not values or not values[0] else "repeated"
            raise SignatureError(f"signed URL parameter {name} is {what}", reason="malformed")
    version, exp_text, sig = found[VERSION_PARAM][0], found[EXP_PARAM][0], found[SIG_PARAM][0]
    if version != VERSION:
        raise SignatureError(
            f"unknown signed URL version; this verifier knows {VERSION}", reason="malformed"
        )
    if not _EXP_RE.fullmatch(exp_text):
        raise SignatureError(
            f"signed URL parameter {EXP_PARAM} is not an integer", reason="malformed"
        )
    exp = int(exp_text)
    expected = _signature(key, version, host, _canonical_path(path), _canonical_query(rest), exp)
    # The signature goes first: a forged URL learns nothing about expiry.
    if not hmac.compare_digest(expected.encode(), sig.encode("latin-1")):
        raise SignatureError("signed URL signature does not match", reason="bad_signature")
    late = _now(now) - exp
    if late > leeway_s:
        raise SignatureError(
            f"signed URL expired {late} s ago", reason="expired",
            hint="sign a fresh one: atlas_nb.auth.sign_url / sign_compute_url",
        )


def sign_compute_url(
    compute: Compute,
    port_or_url: int | str,
    *,
    expires_in: int = 3600,
    now: float | None = None,
    auth: AuthHandle | None = None,
) -> str:
    """A signed URL for a compute spawned with ``auth="signed_url"``.

    ``port_or_url`` is an exposed internal port (``8000``), a path on the compute's
    first HTTP URL (``"/v1/models"``) or a full URL. The secret is ``compute.auth``,
    which only ``spawn_compute`` returns; to sign with a later ``Compute`` (say from
    ``wait_ready``, which has the URLs), pass the spawned one's handle as ``auth=``.

    >>> import atlas_nb as atlas
    >>> from atlas_nb.auth import sign_compute_url
    >>> c = atlas.spawn_compute(provider="mock", image="img:1", ports=[(8000, "http")],
    ...                         auth="signed_url")
    >>> url = sign_compute_url(c, 8000, expires_in=600)
    >>> atlas.terminate(c.id, provider="mock")
    """
    handle = auth if auth is not None else compute.auth
    if handle is None:
        raise ValidationError(
            f"compute {compute.id} has no auth handle (only spawn_compute returns it); spawn with "
            "auth='signed_url' and pass that Compute, or its handle as auth="
        )
    if handle.scheme != "signed_url":
        raise ValidationError(
            f"compute {compute.id} uses {handle.scheme!r} auth, not 'signed_url'; send "
            "compute.auth.headers() with each request, or spawn with auth='signed_url'"
        )
    if isinstance(port_or_url, bool) or not isinstance(port_or_url, int | str):
        raise ValidationError(
            f"port_or_url must be a port number or a URL, not {type(port_or_url).__name__}"
        )
    if isinstance(port_or_url, int):
        port = next((p for p in compute.ports if p.internal == port_or_url), None)
        if port is None:
            exposed = ", ".join(p.spec for p in compute.ports) or "none"
            raise ValidationError(
                f"compute {compute.id} does not expose port {port_or_url} (exposed: {exposed})"
            )
        if not port.url:
            raise ValidationError(
                f"port {port_or_url} of compute {compute.id} has no URL yet; "
                "sign wait_ready's Compute with auth=spawned.auth, or pass a URL"
            )
        url = port.url
    elif port_or_url.startswith("/"):
        if not compute.url:
            raise ValidationError(
                f"compute {compute.id} has no HTTP URL yet; pass a full URL or a port"
            )
        url = compute.url.rstrip("/") + port_or_url
    else:
        url = port_or_url
    if not handle.token:  # dumps never carry it (AuthHandle.token is excluded)
        raise ValidationError(
            f"the auth handle of compute {compute.id} holds no secret (a Compute loaded from "
            "a dump never does); pass the handle spawn_compute returned as auth="
        )
    return sign_url(url, secret=handle.token, expires_in=expires_in, now=now)
