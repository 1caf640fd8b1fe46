"""How the sandbox's Fly APIs judge an ``Authorization`` header against fly-go's."""

from __future__ import annotations

__all__ = ["header_violation"]


def header_violation(scheme: str, token: str) -> str | None:
    """What is wrong with an ``Authorization`` header fly-go would never send, if anything.

    superfly/fly-go ``tokens/tokens.go`` ``FlapsHeader()``/``BubblegumHeader()``: with any
    macaroon (``fm1r_``/``fm1a_``/``fm2_``) in the chain, ``FlyV1`` and the macaroons only;
    otherwise ``Bearer`` and the user tokens. How Fly answers other headers is unknown,
    so the sandbox serves them but records a violation.
    """
    parts = [p.strip() for p in token.split(",") if p.strip()]
    macaroons = [p for p in parts if p.partition("_")[0] in ("fm1r", "fm1a", "fm2")]
    if scheme == "Bearer" and macaroons:
        return "a macaroon was sent as `Bearer`; fly-go sends `FlyV1`"
    if scheme == "FlyV1" and macaroons and len(macaroons) != len(parts):
        return "a `FlyV1` header mixed other tokens with macaroons; fly-go sends macaroons only"
    return None
