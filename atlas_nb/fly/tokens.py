"""The Fly.io token chain: ``get``, ``invalidate``, ``set_manual``, ``clear_manual``.

``get(app)`` walks these layers; the first hit wins:

1. the **manual** override (``set_manual``): it wins because it is an override;
2. the env vars ``FLY_API_TOKEN`` then ``FLY_ACCESS_TOKEN``;
3. the in-memory cache (tokens found by the layers below);
4. the durable, encrypted store (``token_store.TokenStore``: minted tokens only);
5. flyctl's ``~/.fly/config.yml`` (``$FLY_CONFIG_DIR`` moves it), parsed as YAML;
6. ``fly tokens create readonly --expiry <ttl> --json`` (stdout only); a missing
   binary or a timeout is a miss, never a crash.

When everything misses the ``Unauthorized`` error says how to provide a token, and
the failure is cached with a growing backoff (5 s, 10 s, ... 5 min) during which
the CLI is not run again: a log poller never hammers it. ``invalidate`` clears the
memory and disk caches and the failure cache; pass ``rejected=token`` (what a 401
answered) and that token is skipped by the cache and config-file layers from then
on, so the chain moves on to mint a fresh one. Manual and env tokens are explicit
choices and are never skipped. Expiry is honoured: a minted token expires after
its ``--expiry``, and cached entries are refreshed a minute early.

Telemetry: ``fly.token.resolve`` ``{app, source, ok, duration_ms}`` and
``fly.token.invalidate`` ``{app, rejected}`` (a bool): never a token.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .. import telemetry
from ..errors import Unauthorized, ValidationError
from . import token_sources
from .auth_header import _is_text
from .token_store import TokenStore

__all__ = [
    "ENV_VARS",
    "FixedToken",
    "TokenChain",
    "TokenSource",
    "clear_manual",
    "configure",
    "default_chain",
    "get",
    "invalidate",
    "set_manual",
]

ENV_VARS: tuple[str, ...] = ("FLY_API_TOKEN", "FLY_ACCESS_TOKEN")
HOW_TO = ("set FLY_API_TOKEN, run `fly auth login`, or call "
          "atlas_nb.fly.tokens.set_manual(app, token)")
_ANY = "*"
_REFRESH_LEAD_S = 60.0


class TokenSource(Protocol):
    """Anything that hands out Fly tokens and can be told one was rejected."""

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


class _Miss(Exception):
    """Every layer missed (``cached``: answered from the failure cache, CLI not run)."""

    def __init__(self, *, cached: bool) -> None:
        super().__init__("no token")
        self.cached = cached


@dataclass
class _Cached:
    token: str
    source: str
    expires_at: float | None


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenChain:
    """The resolution chain (see the module docstring). Thread-safe.

    Args:
        store: the durable cache (default: a ``TokenStore`` in the user data dir);
            ``use_store=False`` turns the layer off.
        config_file: flyctl's config (default ``token_sources.fly_config_path()``);
            ``use_config_file=False`` turns the layer off.
        use_cli: whether the CLI step (``fly tokens create``) runs.
        cli_path: the PATH searched for ``fly``/``flyctl`` (default: the process PATH).
        cli_env: the environment the CLI runs with (default: this process's).
        cli_timeout_s: how long the CLI may take.
        expiry: ``--expiry`` for minted tokens (Go duration), also their cache lifetime.
        org: the org passed to ``fly tokens create readonly`` (default: flyctl's choice).
        env: where env vars are read (default ``os.environ``, read on every call).
        clock: epoch seconds (injectable for expiry and backoff tests).
        negative_backoff_s: ``(first, max)`` seconds a failed resolution is cached.
        config_cache_s: how long a config-file token stays in the memory cache.
    """

    def __init__(
        self,
        *,
        store: TokenStore | None = None,
        use_store: bool = True,
        config_file: str | os.PathLike[str] | None = None,
        use_config_file: bool = True,
        use_cli: bool = True,
        cli_path: str | None = None,
        cli_env: Mapping[str, str] | None = None,
        cli_timeout_s: float = 15.0,
        expiry: str = "24h",
        org: str | None = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        negative_backoff_s: tuple[float, float] = (5.0, 300.0),
        config_cache_s: float = 300.0,
    ) -> None:
        self._expiry_s = token_sources.parse_duration(expiry)
        self.expiry = expiry
        self.org = org
        self._store = (store or TokenStore(clock=clock)) if use_store else None
        self._config_file = Path(config_file) if config_file is not None else None
        self._use_config = use_config_file
        self._use_cli = use_cli
        self._cli_path = cli_path
        self._cli_env = cli_env
        self._cli_timeout_s = cli_timeout_s
        self._env = env
        self._clock = clock
        self._neg_first, self._neg_max = negative_backoff_s
        self._config_cache_s = config_cache_s
        self._lock = threading.RLock()
        self._manual: dict[str, str] = {}
        self._manual_loaded = False
        self._memory: _Cached | None = None
        self._rejected: set[str] = set()
        self._negative_until = 0.0
        self._negative_wait = 0.0

    def __repr__(self) -> str:
        layers = [n for n, on in (("store", self._store is not None),
                                  ("config_file", self._use_config), ("cli", self._use_cli)) if on]
        return f"TokenChain(layers={layers}, expiry={self.expiry!r})"

    @property
    def config_file(self) -> Path:
        """The flyctl config file this chain reads."""
        return self._config_file or token_sources.fly_config_path(self._env)

    @property
    def _cli_key(self) -> str:
        return f"cli:{self.org or 'default'}"

    # -- public API --------------------------------------------------------------------
    def get(self, app: str | None = None) -> str:
        """A token for ``app`` (see the module docstring for the order).

        Raises:
            Unauthorized: no layer has a token; the message says how to provide one.
        """
        return self.resolve(app)[0]

    def resolve(self, app: str | None = None) -> tuple[str, str]:
        """``(token, source)``; ``source`` names the layer (``"manual"``, ``"env:FLY_API_TOKEN"``,
        ``"memory"``, ``"store"``, ``"config_file"``, ``"cli"``)."""
        started = time.perf_counter()
        try:
            token, source = self._resolve(app)
        except _Miss as miss:
            self._emit_resolve(app, "negative_cache" if miss.cached else "none", False, started)
            target = f" for app {app!r}" if app else ""
            raise Unauthorized(f"no Fly.io token found{target}: {HOW_TO}", provider="fly",
                               hint=HOW_TO) from None
        self._emit_resolve(app, source, True, started)
        return token, source

    def invalidate(self, app: str | None = None, *, rejected: str | None = None) -> None:
        """Clear the memory and disk caches and the failure cache.

        ``rejected`` is the token a server answered 401 to: cached, stored and
        config-file copies of it are skipped from now on (manual and env are not).
        """
        with self._lock:
            if rejected:
                self._rejected.add(_fingerprint(rejected.strip()))
            self._memory = None
            self._negative_until = 0.0
            self._negative_wait = 0.0
            if self._store is not None:
                self._store.delete_where(lambda name: name.startswith("cli:"))
        telemetry.emit("fly.token.invalidate", {"app": app, "rejected": bool(rejected)})

    def set_manual(self, app: str | None, token: str, *, persist: bool = False) -> None:
        """Override every other layer for ``app`` (``None``: every app).

        ``persist=True`` also writes it to the encrypted store, so it survives restarts.
        """
        if not _is_text(token):
            raise ValidationError("set_manual: the token is empty; pass a Fly.io token string")
        key = app or _ANY
        with self._lock:
            self._load_manual()
            self._manual[key] = token.strip()
            self._negative_until = 0.0
            if persist and self._store is not None:
                self._store.put(f"manual:{key}", token.strip(), source="manual", expires_at=None)

    def clear_manual(self, app: str | None = None) -> bool:
        """Remove the manual override for ``app`` (memory and disk); ``True`` if there was one."""
        key = app or _ANY
        with self._lock:
            self._load_manual()
            had = self._manual.pop(key, None) is not None
            if self._store is not None:
                had = self._store.delete(f"manual:{key}") or had
            return had

    # -- the layers --------------------------------------------------------------------
    def _resolve(self, app: str | None) -> tuple[str, str]:
        with self._lock:
            now = self._clock()
            self._load_manual()
            manual = self._manual.get(app or _ANY) or self._manual.get(_ANY)
            if manual:
                return manual, "manual"
            env = os.environ if self._env is None else self._env
            for var in ENV_VARS:
                value = (env.get(var) or "").strip()
                if value:
                    return value, f"env:{var}"
            cached = self._memory
            if cached and self._fresh(cached.expires_at, now) and self._usable(cached.token):
                return cached.token, "memory"
            self._memory = None
            if self._store is not None:
                entry = self._store.get(self._cli_key)
                if entry and self._fresh(entry.get("expires_at"), now) \
                        and self._usable(entry["token"]):
                    return self._remember(entry["token"], "store", entry.get("expires_at"))
            if self._use_config:
                token = token_sources.read_config_token(self.config_file)
                if token and self._usable(token):
                    return self._remember(token, "config_file", now + self._config_cache_s)
            if now < self._negative_until:
                raise _Miss(cached=True)
            if self._use_cli:
                token = token_sources.mint_readonly(
                    expiry=self.expiry, org=self.org, path=self._cli_path, env=self._cli_env,
                    timeout_s=self._cli_timeout_s,
                )
                if token and self._usable(token):
                    expires = now + self._expiry_s
                    if self._store is not None:
                        self._store.put(self._cli_key, token, source="cli", expires_at=expires)
                    return self._remember(token, "cli", expires)
            self._negative_wait = (min(self._negative_wait * 2, self._neg_max)
                                   if self._negative_wait else self._neg_first)
            self._negative_until = now + self._negative_wait
            raise _Miss(cached=False)

    def _load_manual(self) -> None:
        if self._manual_loaded:
            return
        self._manual_loaded = True
        if self._store is None:
            return
        for name in self._store.names():
            if name.startswith("manual:"):
                entry = self._store.get(name)
                key = name.removeprefix("manual:")
                if entry and key not in self._manual:
                    self._manual[key] = entry["token"]

    def _remember(self, token: str, source: str, expires_at: float | None) -> tuple[str, str]:
        self._memory = _Cached(token, source, expires_at)
        self._negative_until = self._negative_wait = 0.0  # a success resets the backoff
        return token, source

    def _fresh(self, expires_at: object, now: float) -> bool:
        if expires_at is None:
            return True
        if not isinstance(expires_at, (int, float)):
            return False
        lead = min(_REFRESH_LEAD_S, self._expiry_s / 10)
        return float(expires_at) - lead > now

    def _usable(self, token: str) -> bool:
        return _fingerprint(token) not in self._rejected

    def _emit_resolve(self, app: str | None, source: str, ok: bool, started: float) -> None:
        telemetry.emit("fly.token.resolve", {
            "app": app, "source": source, "ok": ok,
            "duration_ms": (time.perf_counter() - started) * 1000.0,
        })


_default_lock = threading.Lock()
_default: TokenChain | None = None


def default_chain() -> TokenChain:
    """The process-wide chain the module functions use (built on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = TokenChain()
        return _default


def configure(chain: TokenChain | None = None, **options: object) -> TokenChain:
    """Replace the process-wide chain: pass a ``TokenChain`` or ``TokenChain`` options."""
    global _default
    new = chain if chain is not None else TokenChain(**options)  # type: ignore[arg-type]
    with _default_lock:
        _default = new
    return new


def get(app: str | None = None) -> str:
    """A Fly.io token for ``app`` from the process-wide chain."""
    return default_chain().get(app)


def invalidate(app: str | None = None, *, rejected: str | None = None) -> None:
    """Clear the process-wide chain's memory and disk caches (see ``TokenChain.invalidate``)."""
    default_chain().invalidate(app, rejected=rejected)


def set_manual(app: str | None, token: str, *, persist: bool = False) -> None:
    """Override every other layer for ``app`` (``None``: all apps)."""
    default_chain().set_manual(app, token, persist=persist)


def clear_manual(app: str | None = None) -> bool:
    """Remove the manual override for ``app``."""
    return default_chain().clear_manual(app)
