"""The Fly.io token chain: ``get``, ``invalidate``, ``set_manual``, ``clear_manual``.

Logs, deploys and the Machines provider all resolve Fly tokens through one chain of
layers; the first hit wins (``layers`` has one class per layer):

1. **per call or manual**: ``token=`` / ``api_key=`` on the call, else ``set_manual(app, token)``;
2. **atlas_nb's config**: the session login (``%atlas login fly``), then
   ``providers.fly.api_key`` in the config file;
3. **the environment**: ``FLY_API_TOKEN``, then ``FLY_ACCESS_TOKEN``;
4. **the encrypted store** (``TokenStore``): manual tokens saved with ``persist=True``, and
   the token minted by step 6;
5. **flyctl's** ``~/.fly/config.yml`` (``$FLY_CONFIG_DIR`` moves it), parsed as YAML;
6. **the CLI**: ``fly tokens create readonly --expiry <ttl> --json`` (stdout only); a
   missing binary or a timeout is a miss, never a crash. A read-only token cannot
   create machines or deploy, so this step serves **logs only**.

Each request names its purpose (``get(app, purpose="logs" | "compute" | "deploy")``,
``"logs"`` by default) and only tokens that can serve it are returned. When
everything misses the ``Unauthorized`` error says how to provide a token, and a
failure that ran the CLI is cached with a growing backoff (5 s ... 5 min).
``invalidate(app, rejected=token)`` clears the memory, minted tokens on disk and the
backoff, and skips the refused token from then on (explicit choices, steps 1-3 and
saved manual tokens, are never skipped). Minted tokens are replaced a minute before
their ``--expiry``. Tokens never appear in logs, reprs, telemetry or errors.
"""

from __future__ import annotations

from typing import Any

from ..._fork_safe_lock import ForkSafeLock
from .chain import HOW_TO, TokenChain
from .layers import (
    ENV_VARS,
    AtlasConfigLayer,
    EnvLayer,
    FlyctlConfigLayer,
    ManualLayer,
    MintLayer,
    StoreLayer,
    default_layers,
)
from .source import FixedToken, TokenSource
from .store import TokenStore, TokenStoreWarning
from .token import ALL_PURPOSES, LOGS_ONLY, Purpose, Token, TokenLayer

__all__ = [
    "ALL_PURPOSES",
    "ENV_VARS",
    "HOW_TO",
    "LOGS_ONLY",
    "AtlasConfigLayer",
    "EnvLayer",
    "FixedToken",
    "FlyctlConfigLayer",
    "ManualLayer",
    "MintLayer",
    "Purpose",
    "StoreLayer",
    "Token",
    "TokenChain",
    "TokenLayer",
    "TokenSource",
    "TokenStore",
    "TokenStoreWarning",
    "clear_manual",
    "configure",
    "default_chain",
    "default_layers",
    "get",
    "invalidate",
    "set_manual",
]

_default_lock = ForkSafeLock()
_default: TokenChain | None = None


def default_chain() -> TokenChain:
    """The process-wide chain the module functions use (built on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = TokenChain()
        return _default


def configure(chain: TokenChain | None = None, **options: Any) -> TokenChain:
    """Replace the process-wide chain: pass a ``TokenChain``, or ``default_layers`` options
    (``store``, ``env``, ``org``, ``expiry``, ``clock``) for a standard chain."""
    global _default
    new = chain if chain is not None else TokenChain(default_layers(**options))
    with _default_lock:
        _default = new
    return new


def get(app: str | None = None, *, purpose: Purpose = "logs") -> str:
    """A Fly.io token for ``app`` from the process-wide chain (see the module docstring)."""
    return default_chain().get(app, purpose=purpose)


def invalidate(app: str | None = None, *, rejected: str | None = None) -> None:
    """Clear the process-wide chain's memory and minted tokens (see ``TokenChain.invalidate``)."""
    default_chain().invalidate(app, rejected=rejected)


def set_manual(app: str | None, token: str, *, persist: bool = False) -> None:
    """Override every later layer for ``app`` (``None``: all apps)."""
    default_chain().set_manual(app, token, persist=persist)


def clear_manual(app: str | None = None) -> bool:
    """Remove the manual override for ``app``."""
    return default_chain().clear_manual(app)
