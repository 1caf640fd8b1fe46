"""The ``Authorization`` header for a Fly.io token, built the way flyctl builds it.

flyctl (``superfly/fly-go`` ``tokens.go``) sends macaroons under the ``FlyV1``
scheme and everything else as ``Bearer``:

* a token that already starts with ``FlyV1 `` is sent verbatim;
* a bare macaroon (``fm1r_``, ``fm1a_`` or ``fm2_``, possibly a comma-separated
  chain with discharge tokens) gets the ``FlyV1 `` prefix;
* anything else (a personal ``fo1_`` token, an OAuth token) is sent as ``Bearer``.

A token pasted with a ``Bearer `` prefix has it stripped first, so a macaroon
that arrives as ``Bearer fm2_...`` is still sent as ``FlyV1``: sending a
macaroon as a bearer token is exactly the bug the original SDK had.
"""

from __future__ import annotations

from ..errors import ValidationError

__all__ = ["MACAROON_PREFIXES", "authorization", "is_macaroon"]


MACAROON_PREFIXES: tuple[str, ...] = ("fm1r_", "fm1a_", "fm2_")
"""Prefixes of the macaroon tokens ``fly tokens create`` mints."""


def is_macaroon(token: str) -> bool:
    """True when ``token`` (or any part of a comma-separated chain) is a Fly macaroon."""
    return any(part.strip().startswith(MACAROON_PREFIXES) for part in token.split(","))


def authorization(token: str) -> str:
    """The ``Authorization`` header value flyctl would send for ``token``.

    >>> authorization("FlyV1 fm2_abc")
    'FlyV1 fm2_abc'
    >>> authorization("fm2_abc")
    'FlyV1 fm2_abc'
    >>> authorization("fo1_personal")
    'Bearer fo1_personal'
    """
    if not _is_text(token):
        # Never echo the value: it may be a (broken) secret.
        raise ValidationError("the Fly.io token is empty; pass a token string")
    token = token.strip()
    if token.startswith("FlyV1 "):
        return token
    scheme, sep, rest = token.partition(" ")
    if sep and scheme.lower() == "bearer" and rest.strip():
        token = rest.strip()
    if is_macaroon(token):
        return f"FlyV1 {token}"
    return f"Bearer {token}"


def _is_text(value: object) -> bool:
    """A non-blank string (callers pass user input typed as ``str`` but unchecked)."""
    return isinstance(value, str) and bool(value.strip())
