"""Pod-side verifier: pure ASGI middleware for the inference server inside a pod.

A pod spawned with ``auth="bearer"`` gets ``ATLAS_PRESHARED_KEY``; one spawned with
``auth="signed_url"`` gets ``ATLAS_SIGNING_SECRET``. Put this middleware in front of
the server and it admits a request only with ``Authorization: Bearer <token>`` or a
URL signed by ``atlas_nb.auth.sign_url`` for this host; everything else gets a 401
JSON body ``{"error": "unauthorized", "reason": ...}`` (websockets: close code 4401).

>>> from atlas_nb.pod_auth import PodAuthMiddleware
>>> async def app(scope, receive, send): ...
>>> guarded = PodAuthMiddleware.from_env(app, environ={"ATLAS_PRESHARED_KEY": "t" * 43})

With FastAPI/Starlette: ``app.add_middleware(PodAuthMiddleware.from_env)``, or
``app.add_middleware(PodAuthMiddleware, token_hash=...)``. Prefer ``from_env`` or
``token_hash`` over ``token=``: Starlette's ``Middleware`` repr shows its kwargs.

Reasons: ``missing_credentials``, ``bad_token`` and, for signed URLs, ``expired``,
``bad_signature`` or ``malformed``. This module depends on no web framework.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any
from urllib.parse import quote, quote_from_bytes

from .auth import (
    DEFAULT_LEEWAY_S,
    ENV_VAR,
    SIG_PARAM,
    SIGNING_ENV_VAR,
    SignatureError,
    _secret_bytes,
    _whole_seconds,
    canonical_host,
    hash_token,
    token_valid,
    verify_parts,
)
from .errors import ValidationError

__all__ = ["WS_CLOSE_UNAUTHORIZED", "PodAuthMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WS_CLOSE_UNAUTHORIZED = 4401  # 4000-4999 is for applications; 4401 mirrors HTTP 401
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_PRINTABLE_ASCII = bytes(range(0x21, 0x7F))
_log = logging.getLogger("atlas_nb.pod_auth")


class PodAuthMiddleware:
    """ASGI3 middleware: bearer token or signed URL, else 401.

    Args:
        app: the ASGI app to protect.
        token_hash: hex SHA-256 of the bearer token (``MintedToken.hash``).
        token: the bearer token itself; it is hashed here and not kept.
        signing_secret: the ``ATLAS_SIGNING_SECRET`` that signed URLs are checked with.
        exempt_paths: exact paths served without auth (health checks).
        leeway_s: clock skew allowed past a signed URL's expiry.
        trust_forwarded_host: read the host from ``X-Forwarded-Host`` (and the scheme
            from ``X-Forwarded-Proto``); only behind a proxy that sets them.
        clock: unix-seconds clock, for tests.

    ``lifespan`` (and any other non-request scope) passes through untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token_hash: str | None = None,
        token: str | None = None,
        signing_secret: str | bytes | None = None,
        exempt_paths: Iterable[str] = ("/health",),
        leeway_s: int = DEFAULT_LEEWAY_S,
        trust_forwarded_host: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if token is not None and token_hash is not None:
            raise ValidationError("pass token or token_hash to PodAuthMiddleware, not both")
        if token is not None:
            if not _nonempty_str(token):
                raise ValidationError("token must be a non-empty str")
            token_hash = hash_token(token)  # the plain token is not kept
        if token_hash is not None:
            token_hash = str(token_hash).lower()
            if not _HASH_RE.fullmatch(token_hash):
                raise ValidationError(
                    "token_hash must be 64 hex characters (MintedToken.hash / hash_token(token))"
                )
        if token_hash is None and signing_secret is None:
            raise ValidationError(
                "PodAuthMiddleware needs token, token_hash or signing_secret; in a pod use "
                f"PodAuthMiddleware.from_env (reads {ENV_VAR} / {SIGNING_ENV_VAR})"
            )
        _whole_seconds("leeway_s", leeway_s, 0)
        if isinstance(exempt_paths, str):
            raise ValidationError("exempt_paths must be a list of paths, e.g. ('/health',)")
        self.app = app
        self._token_hash = token_hash
        self._key = _secret_bytes(signing_secret) if signing_secret is not None else None
        self.exempt_paths = frozenset(exempt_paths)
        self.leeway_s = leeway_s
        self.trust_forwarded_host = trust_forwarded_host
        self._clock = clock

    @classmethod
    def from_env(
        cls,
        app: ASGIApp,
        *,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> PodAuthMiddleware:
        """The middleware configured from ``ATLAS_PRESHARED_KEY`` and/or ``ATLAS_SIGNING_SECRET``.

        ``environ`` defaults to ``os.environ``; ``options`` are the other ``__init__``
        keywords. Raises ``ValidationError`` when neither variable is set, so a pod
        never starts open by accident.
        """
        env = os.environ if environ is None else environ
        token = env.get(ENV_VAR) or None
        secret = env.get(SIGNING_ENV_VAR) or None
        if token is None and secret is None:
            raise ValidationError(
                f"neither {ENV_VAR} nor {SIGNING_ENV_VAR} is set; spawn the compute with "
                "auth='bearer' or auth='signed_url'"
            )
        return cls(app, token=token, signing_secret=secret, **options)

    def __repr__(self) -> str:
        schemes = [s for s, on in (("bearer", self._token_hash), ("signed_url", self._key)) if on]
        return f"PodAuthMiddleware(schemes={schemes}, exempt_paths={sorted(self.exempt_paths)})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket") or scope.get("path") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        reason = self._reject_reason(scope)
        if reason is None:
            await self.app(scope, receive, send)
            return
        # Method and path only: the query may hold a signature, headers the token.
        _log.info("rejected %s %s: %s", scope.get("method", "WS"), scope.get("path"), reason)
        if kind == "http":
            await _send_401(send, reason)
        else:
            await _close_ws(receive, send, reason)

    def _reject_reason(self, scope: Scope) -> str | None:
        """``None`` when the request is authenticated, else why not."""
        headers = _headers(scope)
        bearer_reason = None
        auth = headers.get("authorization")
        if auth is not None:
            token = _bearer(auth)
            if self._token_hash and token is not None and token_valid(token, self._token_hash):
                return None
            bearer_reason = "bad_token"
        query = _ascii(scope.get("query_string", b""))
        if self._key is not None and SIG_PARAM in query:
            try:
                self._verify_signed(scope, headers, query, self._key)
                return None
            except SignatureError as exc:
                return exc.reason
        return bearer_reason or "missing_credentials"

    def _verify_signed(
        self, scope: Scope, headers: dict[str, str], query: str, key: bytes
    ) -> None:
        default_scheme = "ws" if scope["type"] == "websocket" else "http"
        scheme = str(scope.get("scheme") or default_scheme)
        host = headers.get("host")
        if self.trust_forwarded_host:
            host = _first(headers.get("x-forwarded-host")) or host
            scheme = _first(headers.get("x-forwarded-proto")) or scheme
        if not host:
            raise SignatureError("request has no Host header", reason="malformed")
        raw_path = scope.get("raw_path")
        if not raw_path:  # optional in ASGI; "path" is already percent-decoded
            raw_path = quote(str(scope.get("path") or "/"), safe="/").encode()
        verify_parts(
            host=canonical_host(host, scheme), path=_ascii(raw_path), query=query, key=key,
            now=self._clock(), leeway_s=self.leeway_s,
        )


def _headers(scope: Scope) -> dict[str, str]:
    """Lowercased header names; a repeated Authorization or Host header is made
    unusable so an ambiguous request never authenticates."""
    out: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in out and key in ("authorization", "host"):
            text = ""
        out[key] = text
    return out


def _ascii(raw: bytes) -> str:
    """Raw request bytes as URL text: bytes outside printable ASCII are percent-encoded
    (so raw UTF-8 equals its escaped form) and existing escapes are kept."""
    return quote_from_bytes(raw, safe=_PRINTABLE_ASCII)


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _bearer(value: str) -> str | None:
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def _first(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(",")[0].strip() or None


async def _send_401(send: Send, reason: str) -> None:
    body = json.dumps({"error": "unauthorized", "reason": reason}).encode()
    await send({
        "type": "http.response.start",
        "status": 401,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer"),
            (b"cache-control", b"no-store"),
        ],
    })
    await send({"type": "http.response.body", "body": body})


async def _close_ws(receive: Receive, send: Send, reason: str) -> None:
    # Closing before accepting makes the server answer a bare HTTP 403 and the client
    # never sees a code, so accept first and close at once with 4401; the app never runs.
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({
        "type": "websocket.close",
        "code": WS_CLOSE_UNAUTHORIZED,
        "reason": f"unauthorized: {reason}",
    })
