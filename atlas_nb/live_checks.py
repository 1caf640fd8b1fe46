"""``atlas-nb doctor --live``: read-only calls that prove each configured key works.

For every registered provider with a key (per ``config.resolve_api_key``; with a sandbox
attached, the sandbox's keys), three checks, each one read-only call:

* ``auth``: the key is accepted and names an account. RunPod: GraphQL ``myself { id }``
  (what runpod-python's ``get_user`` asks); Vast: ``GET /api/v0/users/current/``
  (vast-cli's ``show user``); Fly: ``GET /v1/apps?org_slug=`` (the token can read the
  org's apps: flyctl's ``apps list``, the permission a spawn needs); Lambda has no
  "who am I" call in its spec, so ``GET /api/v1/instances`` stands in.
* ``catalog``: ``list_gpu_types()``.
* ``listing``: ``list_compute()``.

Nothing is created, changed or deleted. Base URLs resolve as for every call (per-config
``base_url``, ``ATLAS_NB_SANDBOX``), so the same checks run against the sandbox in CI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import AtlasError, Forbidden, NotFound, RateLimited, TransportError, Unauthorized

__all__ = ["LiveCheck", "run_live_checks"]


@dataclass(frozen=True)
class LiveCheck:
    """One line of ``doctor --live``: ``ok`` or ``FAIL``, what was checked, and the fix."""

    ok: bool
    provider: str
    check: str
    detail: str
    fix: str | None = None

    def __str__(self) -> str:
        head = f"{'ok' if self.ok else 'FAIL':<4}  {self.provider:<11}  {self.check:<7}  "
        return head + self.detail + (f"; fix: {self.fix}" if self.fix else "")


def _fix(provider: str, err: AtlasError) -> str:
    from . import config

    env = " or ".join(config.api_key_env(provider)) or "the provider's key"
    if isinstance(err, Unauthorized):
        return (f"the key was refused: set a valid key in {env} or `%atlas login {provider}`"
                " (a key made for another account or revoked reads the same)")
    if isinstance(err, Forbidden):
        return ("the key lacks this permission: create one with read access to compute "
                "(Fly: a deploy/org token for the org, not a read-only or app-scoped one)")
    if isinstance(err, TransportError):
        return (f"cannot reach the API: check the network, a proxy, and providers.{provider}."
                "base_url in the config file")
    if isinstance(err, RateLimited):
        return "rate limited: wait a minute and run it again"
    if isinstance(err, NotFound):
        return f"the API path is missing: check providers.{provider}.base_url"
    hint = getattr(err, "hint", None)
    return str(hint) if hint else "the provider answered with an error: run again; if it " \
        "persists, check the provider's status page"


def _auth(provider: Any) -> str:
    name = provider.name
    if name == "fly":
        org = provider._org_slug()  # the org a spawn would create apps in
        body = provider.client("machines").request(
            "GET", "/v1/apps", params={"org_slug": org}, idempotent=True)
        apps = body.get("apps") if isinstance(body, dict) else None
        return f"token reads org {org!r} ({len(apps or [])} apps)"
    if name == "lambda_labs":
        provider.client("rest").request("GET", "/api/v1/instances", idempotent=True)
        return "key accepted (GET /api/v1/instances)"
    account = provider.account_fingerprint()
    return f"key accepted, account {account}"


def _catalog(provider: Any) -> str:
    rows = provider.list_gpu_types()
    return f"{len(rows)} catalog rows"


def _listing(provider: Any) -> str:
    return f"{len(provider.list_compute())} computes listed"


_CHECKS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("auth", _auth), ("catalog", _catalog), ("listing", _listing))


def keyed_providers() -> list[str]:
    """The registered providers that have a key here (the sandbox's, when one is attached)."""
    from . import config
    from .providers import names

    return [n for n in names(keyed=True, offline=False) if config.resolve_api_key(n)]


def run_live_checks(providers: Iterable[str] | None = None) -> list[LiveCheck]:
    """Run every check for ``providers`` (default: those with a key), in order.

    A failed ``auth`` skips that provider's other checks (they would fail the same way).
    Never raises for a provider's failure: it becomes a ``FAIL`` line.
    """
    from .providers import resolve

    out: list[LiveCheck] = []
    for name in list(providers) if providers is not None else keyed_providers():
        try:
            provider = resolve(name)
        except AtlasError as err:
            out.append(LiveCheck(False, name, "setup", err.message, _fix(name, err)))
            continue
        for check, run in _CHECKS:
            try:
                detail = run(provider)
            except AtlasError as err:
                out.append(LiveCheck(False, name, check, " ".join(err.message.split()),
                                     _fix(name, err)))
                if check == "auth":
                    break
            else:
                out.append(LiveCheck(True, name, check, detail))
    return out
