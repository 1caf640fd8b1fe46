"""What a Fly API client asks for tokens: a ``TokenSource`` (a chain, or one ``FixedToken``)."""

from __future__ import annotations

from typing import Protocol

from ...errors import ValidationError
from ..auth_header import _is_text

__all__ = ["FixedToken", "TokenSource"]


class TokenSource(Protocol):
    """Anything that hands out Fly tokens and can be told one was rejected.

    A ``TokenChain`` is one (its ``get`` serves the ``"logs"`` purpose by default).
    """

    def get(self, app: str | None = None) -> str:
        """A token for ``app`` (raise ``AtlasError`` when there is none)."""
        ...

    def invalidate(self, app: str | None = None, *, rejected: str | None = None) -> None:
        """Forget cached tokens (``rejected``: the token a server refused)."""
        ...


class FixedToken:
    """A single token given explicitly (``token=``) or the sandbox key; never re-resolved."""

    def __init__(self, token: str, source: str = "explicit") -> None:
        if not _is_text(token):
            raise ValidationError("token= is empty; pass a Fly.io token string")
        self._token = token.strip()
        self.source = source

    def __repr__(self) -> str:
        return f"FixedToken(source={self.source!r})"

    def get(self, app: str | None = None) -> str:
        """The token."""
        return self._token

    def invalidate(self, app: str | None = None, *, rejected: str | None = None) -> None:
        """Nothing to forget: a fixed token is what the caller asked for."""
