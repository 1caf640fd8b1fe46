"""The provider registry: one line per built-in provider, imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

from .._http import HttpOption
from ..errors import ValidationError
from .base import CAPABILITIES, BaseProvider, Provider, instantiate, strip_secrets

__all__ = [
    "CAPABILITIES",
    "REGISTRY",
    "BaseProvider",
    "Provider",
    "provider_class",
    "register",
    "resolve",
    "strip_secrets",
]

REGISTRY: dict[str, str] = {
    "runpod": "atlas_nb.providers.runpod:RunPod",
    "fly": "atlas_nb.providers.fly:Fly",
    "lambda_labs": "atlas_nb.providers.lambda_labs:LambdaLabs",
    "vast": "atlas_nb.providers.vast:Vast",
    "mock": "atlas_nb.providers.mock:MockProvider",
}
"""Provider name -> ``module:Class``. Extend with ``register``."""

_ALIASES = {"lambda": "lambda_labs", "lambdalabs": "lambda_labs", "vastai": "vast", "fly.io": "fly"}
_custom: dict[str, type[Any]] = {}
# One reusable instance per ``shareable`` class: building a provider (and its HTTP
# client) per facade call costs more than the rest of a get's local work.
_shared_instances: dict[type[Any], Any] = {}
_shared_by_name: dict[str, Any] = {}
# Optional operations (stop/start, jobs, catalog) may be absent: the facade raises Unsupported.
_CORE = ("name", "capabilities", "spawn_compute", "get_compute", "list_compute", "terminate")


def register(name: str, cls: type[Any]) -> None:
    """Make ``provider=name`` resolve to ``cls`` (a class implementing ``Provider``)."""
    _custom[name] = cls
    _shared_by_name.clear()


def provider_class(name: str) -> type[Any]:
    """The class registered for ``name``; ``ValidationError`` listing the known names."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key in _custom:
        return _custom[key]
    target = REGISTRY.get(key)
    if target is None:
        known = ", ".join(sorted({*REGISTRY, *_custom}))
        raise ValidationError(f"unknown provider {name!r}; use one of: {known}")
    module, _, attr = target.partition(":")
    cls: type[Any] = getattr(importlib.import_module(module), attr)
    return cls


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
