"""Settings resolution: per call, then the session, then the config file, then env vars.

The config file is YAML at ``platformdirs.user_config_dir("atlas_nb")/config.yaml``;
``ATLAS_NB_CONFIG`` overrides its path. Shape::

    default_provider: runpod
    providers:
      runpod: {api_key: "...", base_url: "https://api.runpod.io"}
      lambda_labs: {ssh_key_name: my-key}
      fly: {default_app: my-app}

While a sandbox is active (``atlas_nb.sandbox``), every provider points at it
with the sandbox keys unless a call passes its own ``base_url``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import sandbox as sandbox_link  # light (no server); imported once, not per call
from ._fork_safe_lock import ForkSafeLock
from .errors import ValidationError

__all__ = [
    "api_key_env",
    "clear_session_keys",
    "config_path",
    "data_dir",
    "load",
    "provider_setting",
    "resolve_api_key",
    "resolve_base_url",
    "resolve_provider_name",
    "session_key",
    "set_session_key",
]

_lock = ForkSafeLock()
_cache: dict[str, tuple[str, dict[str, Any]]] = {}
_session_keys: dict[str, str] = {}


def config_path() -> Path:
    """Where the config file lives (``ATLAS_NB_CONFIG`` wins)."""
    override = os.environ.get("ATLAS_NB_CONFIG")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("atlas_nb")) / "config.yaml"


def data_dir() -> Path:
    """The user data dir for ledgers and caches (``ATLAS_NB_DATA_DIR`` wins), created 0700."""
    override = os.environ.get("ATLAS_NB_DATA_DIR")
    if override:
        path = Path(override).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("atlas_nb"))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def load() -> dict[str, Any]:
    """The parsed config file, or ``{}`` when there is none. Re-parsed when it changes."""
    path = config_path()
    try:
        # Keyed on content, not mtime: a rewrite within one coarse clock tick keeps the mtime.
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(
            f"config file {path} cannot be read ({type(exc).__name__}); fix or delete it"
        ) from None
    key = str(path)
    with _lock:
        hit = _cache.get(key)
        if hit and hit[0] == text:
            return hit[1]
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValidationError(
            f"config file {path} is not valid YAML ({type(exc).__name__}); fix or delete it"
        ) from None
    if not isinstance(data, dict):
        raise ValidationError(f"config file {path} must hold a mapping at the top level")
    with _lock:
        _cache[key] = (text, data)
    return data


def _section(provider: str) -> Mapping[str, Any]:
    providers = load().get("providers") or {}
    section = providers.get(provider) if isinstance(providers, dict) else None
    return section if isinstance(section, dict) else {}


def provider_setting(provider: str, key: str, default: Any = None) -> Any:
    """One setting from the provider's section of the config file."""
    return _section(provider).get(key, default)


def resolve_provider_name(provider: str | None) -> str:
    """Per call > ``default_provider`` in the config file > ``ATLAS_NB_PROVIDER``."""
    if provider:
        return provider
    name = load().get("default_provider") or os.environ.get("ATLAS_NB_PROVIDER")
    if not name:
        from .providers import names

        first, *rest = names()
        others = ", ".join(repr(n) for n in rest)
        raise ValidationError(
            f"no provider given; pass provider={first!r} (or {others}), or set "
            "default_provider in the config file or ATLAS_NB_PROVIDER"
        )
    return str(name)


def api_key_env(provider: str) -> tuple[str, ...]:
    """The env vars that may hold ``provider``'s key, first wins (its ``key_env``)."""
    from .providers import facts

    try:
        return facts(provider).key_env
    except ValidationError:  # not a registered provider: no env vars
        return ()


def set_session_key(provider: str, api_key: str | None) -> None:
    """Keep a key in memory for this process only (``%atlas login``)."""
    with _lock:
        if api_key:
            _session_keys[provider] = api_key
        else:
            _session_keys.pop(provider, None)


def session_key(provider: str) -> str | None:
    """The key ``set_session_key`` keeps for ``provider`` (``%atlas login``), or ``None``."""
    with _lock:
        return _session_keys.get(provider)


def clear_session_keys() -> None:
    """Forget every key set with ``set_session_key`` (``%atlas logout`` of all; tests)."""
    with _lock:
        _session_keys.clear()


def resolve_api_key(provider: str, api_key: str | None = None) -> str | None:
    """Per call > sandbox > session login > config file > env var."""
    if api_key:
        return api_key
    if sandbox_link.active_url():
        return sandbox_link.sandbox_key(provider)
    with _lock:
        if provider in _session_keys:
            return _session_keys[provider]
    configured = provider_setting(provider, "api_key")
    if configured:
        return str(configured)
    for var in api_key_env(provider):
        if os.environ.get(var):
            return os.environ[var]
    return None


def key_source(provider: str) -> str | None:
    """Where a key would come from (never the key itself), for ``doctor``/``providers``."""
    if sandbox_link.active_url():
        return "sandbox"
    with _lock:
        if provider in _session_keys:
            return "session"
    if provider_setting(provider, "api_key"):
        return "config"
    for var in api_key_env(provider):
        if os.environ.get(var):
            return f"env:{var}"
    return None


def resolve_base_url(
    provider: str, api: str, default: str, base_url: str | Mapping[str, str] | None = None
) -> str:
    """Per call (a URL, or ``{api: URL}``) > sandbox > config file > the provider default."""
    if base_url is not None and not isinstance(base_url, str):  # {api: URL}
        base_url = base_url.get(api)
    if base_url:
        return base_url.rstrip("/")
    sandbox = sandbox_link.active_url()
    if sandbox:
        return f"{sandbox}/{provider}/{api}"
    configured = provider_setting(provider, "base_url")
    if isinstance(configured, dict):
        configured = configured.get(api)
    return str(configured or default).rstrip("/")
