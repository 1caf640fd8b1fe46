"""The ``Authorization`` header for a Fly.io token, built the way fly-go builds it.

superfly/fly-go ``tokens/tokens.go`` (read for this; flyctl uses it for every call):

* ``Parse`` strips any ``Bearer``/``FlyV1`` scheme (``StripAuthorizationScheme``:
  case-insensitive, repeated), splits the rest on commas and sorts each token by what
  precedes its first ``_``: ``fm1r``, ``fm1a`` and ``fm2`` are macaroons (and their
  discharge tokens), anything else a user token (a personal ``fo1_`` or OAuth token);
* ``FlapsHeader()`` (the Machines API) and ``BubblegumHeader()`` (the logs API) are
  ``normalized(false, true)``: when the chain holds any macaroon, ``FlyV1 `` followed by
  **the macaroons only**; otherwise ``Bearer `` followed by the user tokens. Only the
  GraphQL API accepts both kinds in one header, which atlas_nb never calls.

So a chain mixing a macaroon with a user token sends the macaroons under ``FlyV1`` and
drops the user token, and a macaroon pasted as ``Bearer fm2_...`` still goes as
``FlyV1`` (sending one as a bearer token was the original SDK's bug). One deviation:
blank entries between commas are dropped (fly-go would keep them as empty user tokens).
"""

from __future__ import annotations

from ..errors import ValidationError

__all__ = ["MACAROON_PREFIXES", "authorization", "is_macaroon"]


MACAROON_PREFIXES: tuple[str, ...] = ("fm1r", "fm1a", "fm2")
"""What precedes the first ``_`` of a macaroon minted by ``fly tokens create``."""
_SCHEMES = ("bearer", "flyv1")


def _strip_scheme(token: str) -> str:
    """``token`` without any leading ``Bearer``/``FlyV1`` schemes (fly-go
    ``StripAuthorizationScheme``: any case, repeated)."""
    token = token.strip()
    while True:
        scheme, sep, rest = token.partition(" ")
        if not sep or scheme.strip().lower() not in _SCHEMES:
            return token
        token = rest.strip()


def _parts(token: str) -> list[str]:
    return [p.strip() for p in _strip_scheme(token).split(",") if p.strip()]


def _is_macaroon_part(part: str) -> bool:
    prefix, sep, _rest = part.partition("_")
    return bool(sep) and prefix in MACAROON_PREFIXES


def is_macaroon(token: str) -> bool:
    """True when ``token`` (or any part of a comma-separated chain) is a Fly macaroon."""
    return any(_is_macaroon_part(p) for p in _parts(token))


def authorization(token: str) -> str:
    """The ``Authorization`` header value fly-go's ``FlapsHeader()`` sends for ``token``.

    >>> authorization("FlyV1 fm2_abc")
    'FlyV1 fm2_abc'
    >>> authorization("fm2_abc,fo1_user")
    'FlyV1 fm2_abc'
    >>> authorization("fo1_personal")
    'Bearer fo1_personal'
    """
    if not _is_text(token):
        # Never echo the value: it may be a (broken) secret.
        raise ValidationError("the Fly.io token is empty; pass a token string")
    parts = _parts(token)
    macaroons = [p for p in parts if _is_macaroon_part(p)]
    if macaroons:
        return "FlyV1 " + ",".join(macaroons)
    if not parts:
        raise ValidationError("the Fly.io token is only a scheme; pass the token after it")
    return "Bearer " + ",".join(parts)


def _is_text(value: object) -> bool:
    """A non-blank string (callers pass user input typed as ``str`` but unchecked)."""
    return isinstance(value, str) and bool(value.strip())
