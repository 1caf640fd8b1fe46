"""The layers of the Fly token chain, in their documented order (``default_layers``).

1. ``ManualLayer``: ``set_manual(app, token)`` (per app, or ``None`` for every app);
2. ``AtlasConfigLayer``: atlas_nb's own settings for provider ``"fly"``: the session
   key (``%atlas login fly``, ``config.set_session_key``), then ``providers.fly.api_key``
   in the config file;
3. ``EnvLayer``: ``FLY_API_TOKEN``, then ``FLY_ACCESS_TOKEN``;
4. ``StoreLayer``: the encrypted store (manual tokens saved with ``persist=True``, and
   tokens minted by layer 6);
5. ``FlyctlConfigLayer``: flyctl's ``~/.fly/config.yml`` (``fly auth login``);
6. ``MintLayer``: ``fly tokens create readonly`` (read-only: **logs only**).

Layers 1-3 are explicit choices of the user: a server refusing their token never
makes the chain skip them. Layers 4-6 are remembered in the chain's memory.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar

from ... import config
from ...errors import ValidationError
from ..auth_header import _is_text
from .flyctl_config import fly_config_path, read_config_token
from .mint import mint_readonly, parse_duration, store_name
from .store import TokenStore
from .token import LOGS_ONLY, Purpose, Token, TokenLayer

__all__ = [
    "ENV_VARS",
    "AtlasConfigLayer",
    "EnvLayer",
    "FlyctlConfigLayer",
    "ManualLayer",
    "MintLayer",
    "StoreLayer",
    "default_layers",
]

ENV_VARS: tuple[str, ...] = ("FLY_API_TOKEN", "FLY_ACCESS_TOKEN")
PROVIDER = "fly"
"""The provider name atlas_nb's config uses for Fly (``providers.fly.api_key``)."""
_ANY = "*"  # the manual key meaning "every app"
_REFRESH_LEAD_S = 60.0  # a minted token is replaced this long (at most) before it expires


def _manual_name(app: str | None) -> str:
    return f"manual:{app or _ANY}"


class ManualLayer:
    """Tokens set by hand (``set_manual``); ``persist=True`` also saves them in ``store``."""

    name = "manual"

    def __init__(self, store: TokenStore | None = None) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"ManualLayer(apps={len(self._tokens)})"

    def resolve(self, app: str | None, purpose: Purpose) -> Token | None:
        """The override for ``app``, else the one for every app."""
        with self._lock:
            value = self._tokens.get(app or _ANY) or self._tokens.get(_ANY)
        return Token(value, "manual", explicit=True) if value else None

    def set(self, app: str | None, token: str, *, persist: bool = False) -> None:
        """Override every later layer for ``app`` (``None``: every app)."""
        if not _is_text(token):
            raise ValidationError("set_manual: the token is empty; pass a Fly.io token string")
        with self._lock:
            self._tokens[app or _ANY] = token.strip()
        if persist and self._store is not None:
            self._store.put(_manual_name(app), token.strip(), source="manual", expires_at=None)

    def clear(self, app: str | None = None) -> bool:
        """Remove the override for ``app`` (memory and store); ``True`` if there was one."""
        with self._lock:
            had = self._tokens.pop(app or _ANY, None) is not None
        if self._store is not None:
            had = self._store.delete(_manual_name(app)) or had
        return had


class AtlasConfigLayer:
    """atlas_nb's key for ``"fly"``: the session login, then the config file's ``api_key``.

    Read as set, whether or not a sandbox is active: a caller talking to the sandbox
    uses the sandbox's key itself (``LogsClient``, the Machines provider).
    """

    name = "atlas_config"

    def __repr__(self) -> str:
        return "AtlasConfigLayer()"

    def resolve(self, app: str | None, purpose: Purpose) -> Token | None:
        """``%atlas login fly`` / ``config.set_session_key``, else ``providers.fly.api_key``."""
        session = config.session_key(PROVIDER)
        if _is_text(session):
            return Token(str(session).strip(), "session", explicit=True)
        configured = config.provider_setting(PROVIDER, "api_key")
        if _is_text(configured):
            return Token(str(configured).strip(), "atlas_config", explicit=True)
        return None


class EnvLayer:
    """``FLY_API_TOKEN``, then ``FLY_ACCESS_TOKEN`` (read on every call)."""

    name = "env"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = env

    def __repr__(self) -> str:
        return "EnvLayer()"

    def resolve(self, app: str | None, purpose: Purpose) -> Token | None:
        """The first env var that is set."""
        env = os.environ if self._env is None else self._env
        for var in ENV_VARS:
            value = (env.get(var) or "").strip()
            if value:
                return Token(value, f"env:{var}", explicit=True)
        return None


class StoreLayer:
    """The encrypted store: saved manual tokens (any purpose), then the minted one (logs).

    ``forget()`` deletes the minted token (``TokenChain.invalidate``); saved manual
    tokens stay until ``clear_manual``.
    """

    name = "store"
    cached: ClassVar[bool] = True

    def __init__(self, store: TokenStore, *, org: str | None = None) -> None:
        self.store = store
        self._org = org

    def __repr__(self) -> str:
        return f"StoreLayer({self.store!r})"

    def resolve(self, app: str | None, purpose: Purpose) -> Token | None:
        """A saved manual token for ``app`` (or every app), else the minted one for logs."""
        for name in dict.fromkeys((_manual_name(app), _manual_name(None))):
            entry = self.store.get(name)
            if entry:
                return Token(entry["token"], "store", explicit=True)
        if purpose not in LOGS_ONLY:
            return None
        entry = self.store.get(store_name(self._org))
        if not entry:  # (expired entries are dropped by the store itself)
            return None
        expires = entry.get("expires_at")
        return Token(entry["token"], "store", purposes=LOGS_ONLY,
                     fresh_until=float(expires) if isinstance(expires, (int, float)) else None)

    def forget(self) -> None:
        """Delete minted tokens (a server refused one, or the caller asked)."""
        self.store.delete_where(lambda name: name.startswith("cli:"))


class FlyctlConfigLayer:
    """flyctl's ``config.yml`` (``$FLY_CONFIG_DIR`` moves it); kept in memory ``cache_s``.

    It holds the user's personal token, which can do anything; it is never copied
    to disk by atlas_nb.
    """

    name = "config_file"
    cached: ClassVar[bool] = True

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 env: Mapping[str, str] | None = None, cache_s: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._path = Path(path) if path is not None else None
        self._env = env
        self._cache_s = cache_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"FlyctlConfigLayer({str(self.path)!r})"

    @property
    def path(self) -> Path:
        """The config file this layer reads."""
        return self._path or fly_config_path(self._env)

    def resolve(self, app: str | None, purpose: Purpose) -> Token | None:
        """``access_token`` from the file, or ``None``."""
        value = read_config_token(self.path)
        if not value:
            return None
        return Token(value, "config_file", fresh_until=self._clock() + self._cache_s)


class MintLayer:
    """``fly tokens create readonly [org] --expiry <expiry> --json``: **logs only**.

    A read-only token cannot create machines or deploy, so this layer answers only
    for ``purpose="logs"``. A minted token is saved in ``store`` (so a new process
    reuses it) and replaced a minute before it expires.

    Args:
        store: where minted tokens are saved (``None``: not saved).
        org: the org passed to the CLI (default: flyctl's choice).
        expiry: ``--expiry`` (a Go duration), also how long the token is reused.
        path: the PATH searched for ``fly``/``flyctl`` (default: the process PATH).
        env: the environment the CLI runs with (default: this process's).
        timeout_s: how long the CLI may take.
        clock: epoch seconds.
    """

    name = "cli"
    cached: ClassVar[bool] = True
    costly: ClassVar[bool] = True

    def __init__(self, store: TokenStore | None = None, *, org: str | None = None,
                 expiry: str = "24h", path: str | None = None,
                 env: Mapping[str, str] | None = None, timeout_s: float = 15.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._lifetime_s = parse_duration(expiry)
        self.expiry = expiry
        self.org = org
        self._store = store
        self._path = path
        self._env = env
        self._timeout_s = timeout_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"MintLayer(expiry={self.expiry!r})"

    def resolve(self, app: str | None, purpose: Purpose) -> Token | None:
        """Run the CLI for a logs token; any other purpose is a miss without running it."""
        if purpose not in LOGS_ONLY:
            return None
        value = mint_readonly(expiry=self.expiry, org=self.org, path=self._path,
                              env=self._env, timeout_s=self._timeout_s)
        if not value:
            return None
        lead = min(_REFRESH_LEAD_S, self._lifetime_s / 10)
        fresh_until = self._clock() + self._lifetime_s - lead
        if self._store is not None:
            self._store.put(store_name(self.org), value, source="cli", expires_at=fresh_until)
        return Token(value, "cli", purposes=LOGS_ONLY, fresh_until=fresh_until)


def default_layers(
    *,
    store: TokenStore | None = None,
    env: Mapping[str, str] | None = None,
    org: str | None = None,
    expiry: str = "24h",
    clock: Callable[[], float] = time.time,
) -> list[TokenLayer]:
    """The documented chain: manual, atlas_nb config, env, store, flyctl config, CLI mint.

    ``store`` defaults to a ``TokenStore`` in the user data dir; ``env`` to ``os.environ``.
    """
    store = store or TokenStore(clock=clock)
    return [
        ManualLayer(store),
        AtlasConfigLayer(),
        EnvLayer(env),
        StoreLayer(store, org=org),
        FlyctlConfigLayer(env=env, clock=clock),
        MintLayer(store, org=org, expiry=expiry, clock=clock),
    ]
