"""Auth helpers: preshared bearer tokens injected into pods.

``mint_token()`` makes a 32-byte random token; keep its SHA-256 ``hash`` and
give the token to the client once. The pod receives it as ``ATLAS_PRESHARED_KEY``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

__all__ = ["ENV_VAR", "SIGNING_ENV_VAR", "MintedToken", "hash_token", "mint_token", "token_valid"]

ENV_VAR = "ATLAS_PRESHARED_KEY"
SIGNING_ENV_VAR = "ATLAS_SIGNING_SECRET"


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
