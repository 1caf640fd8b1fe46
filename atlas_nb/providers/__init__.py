"""The provider registry: one line per built-in provider, imported on first use.

Everything else that lists providers (the catalog's ``provider="all"``, ``doctor``,
``config``'s key variables, the notebook's commands and panels) derives from here:
``names()`` and ``facts(name)``. A provider declares its own facts on its class (see
``base.ProviderFacts``). Third-party providers register without touching this file,
through the ``atlas_nb.providers`` entry-point group (``name = "module:Class"``), or at
run time with ``register(name, cls)``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .._fork_safe_lock import ForkSafeLock
from .._http import HttpOption
from ..errors import ValidationError
from .base import (
    CAPABILITIES,
    BaseProvider,
    Provider,
    ProviderFacts,
    facts_of,
    instantiate,
    strip_secrets,
)

__all__ = [
    "CAPABILITIES",
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "BaseProvider",
    "Provider",
    "ProviderFacts",
    "facts",
    "names",
    "provider_class",
    "register",
    "resolve",
    "strip_secrets",
]

ENTRY_POINT_GROUP = "atlas_nb.providers"

REGISTRY: dict[str, str] = {
    "runpod": "atlas_nb.providers.runpod:RunPod",
    "fly": "atlas_nb.providers.fly:Fly",
    "lambda_labs": "atlas_nb.providers.lambda_labs:LambdaLabs",
    "vast": "atlas_nb.providers.vast:Vast",
    "mock": "atlas_nb.providers.mock:MockProvider",
}
"""Built-in provider name -> ``module:Class``. Plugins come from ``ENTRY_POINT_GROUP``."""

_custom: dict[str, type[Any]] = {}
_plugins: dict[str, str] | None = None  # entry points, read once
_facts: dict[str, ProviderFacts] = {}
_aliases: dict[str, str] | None = None
_lock = ForkSafeLock()
# One reusable instance per ``shareable`` class: building a provider (and its HTTP
# client) per facade call costs more than the rest of a get's local work.
_shared_instances: dict[type[Any], Any] = {}
_shared_by_name: dict[str, Any] = {}
# Optional operations (stop/start, jobs, catalog) may be absent: the facade raises Unsupported.
_CORE = ("name", "capabilities", "spawn_compute", "get_compute", "list_compute", "terminate")


def register(name: str, cls: type[Any]) -> None:
    """Make ``provider=name`` resolve to ``cls`` (a class implementing ``Provider``)."""
    global _aliases
    with _lock:
        _custom[name] = cls
        _facts.pop(name, None)
        _aliases = None
        _shared_by_name.clear()


def _entry_points() -> dict[str, str]:
    """The ``atlas_nb.providers`` entry points of installed distributions (read once)."""
    global _plugins
    if _plugins is None:
        # Imported here: importlib.metadata costs ~6 ms, and built-in names never need it.
        from importlib.metadata import entry_points

        found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
        _plugins = {n: v for n, v in found.items() if n not in REGISTRY}
    return _plugins


def names(*, keyed: bool = False, offline: bool = True) -> tuple[str, ...]:
    """Every registered provider name: built-ins, then plugins, then ``register()``-ed.

    ``keyed=True`` keeps those that take an API key; ``offline=False`` drops in-memory
    stand-ins such as ``mock`` (what ``provider="all"`` means for catalogs).
    """
    every = list(dict.fromkeys([*REGISTRY, *_entry_points(), *_custom]))
    if not keyed and offline:
        return tuple(every)
    kept = []
    for name in every:
        try:
            info = facts(name)
        except Exception:  # a broken plugin must not hide the others
            continue
        if (keyed and not info.keyed) or (not offline and info.offline):
            continue
        kept.append(name)
    return tuple(kept)


def _alias_map() -> dict[str, str]:
    global _aliases
    if _aliases is None:
        table: dict[str, str] = {}
        for name in names():
            try:
                table.update({a.lower(): name for a in facts(name).aliases})
            except Exception:  # a broken plugin must not hide the others
                continue
        _aliases = table
    return _aliases


def _target(name: str) -> str | None:
    return REGISTRY.get(name) or _entry_points().get(name)


def provider_class(name: str) -> type[Any]:
    """The class registered for ``name`` (or an alias); ``ValidationError`` listing the
    known names."""
    key = name.lower()
    if key in _custom:
        return _custom[key]
    target = _target(key)
    if target is None:
        key = _alias_map().get(key, key)
        if key in _custom:
            return _custom[key]
        target = _target(key)
    if target is None:
        import difflib  # only for this error: it would cost every import

        known = names()
        close = difflib.get_close_matches(key, [*known, *_alias_map()], n=1)
        hint = f"did you mean {_alias_map().get(close[0], close[0])!r}? " if close else ""
        raise ValidationError(f"unknown provider {name!r}; {hint}use one of: {', '.join(known)}")
    module, _, attr = target.partition(":")
    cls: type[Any] = getattr(importlib.import_module(module), attr)
    return cls


def facts(name: str) -> ProviderFacts:
    """What the provider registered as ``name`` declares about itself (cached)."""
    hit = _facts.get(name)
    if hit is None:
        hit = _facts[name] = facts_of(provider_class(name))
    return hit


def resolve(
    provider: Any,
    *,
    api_key: str | None = None,
    base_url: Any = None,
    http: HttpOption = None,
) -> Provider:
    """A provider instance from a name, a class or an instance.

    A registered class that declares ``shareable = True`` is built once and reused for
    every call made without ``api_key``/``base_url``/``http`` (see ``BaseProvider``).
    """
    plain = api_key is None and base_url is None and http is None
    if plain and type(provider) is str:
        hit = _shared_by_name.get(provider)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
    from ..config import resolve_provider_name

    if provider is None or isinstance(provider, str):
        cls = provider_class(resolve_provider_name(provider))
        share = plain and getattr(cls, "shareable", False) is True
        instance = _shared_instances.get(cls) if share else None
        if instance is None:
            instance = _checked(instantiate(cls, api_key=api_key, base_url=base_url, http=http))
            if share:
                instance = _shared_instances.setdefault(cls, instance)
        if share and type(provider) is str:
            _shared_by_name[provider] = instance
        return instance
    if isinstance(provider, type):
        return _checked(instantiate(provider, api_key=api_key, base_url=base_url, http=http))
    return _checked(provider)


def _checked(instance: Any) -> Provider:
    missing = [m for m in _CORE if not hasattr(instance, m)]
    if missing:
        raise ValidationError(
            f"{type(instance).__name__} is not an atlas_nb Provider (missing: "
            f"{', '.join(missing)}); implement the methods of atlas_nb.Provider"
        )
    return instance  # type: ignore[no-any-return]
