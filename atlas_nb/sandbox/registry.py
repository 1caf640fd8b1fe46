"""Which clouds the sandbox emulates: derived from the provider registry, plus plugins.

There is no list here to edit. A provider class names its emulated cloud itself
(``sandbox_cloud = "atlas_nb.sandbox.runpod:RunPodCloud"``, read through
``atlas_nb.providers.facts``), and a third-party package can ship a cloud for any
name through the ``atlas_nb.sandbox_clouds`` entry-point group (entry point name =
cloud name, value = ``module:Class``) with no change to atlas_nb.

A cloud is a class built as ``cls(ctx: CloudContext)`` with ``name``, ``apis()`` and
``close()`` (see ``cloud.py``). Its name is the provider name, and so the first URL
segment: ``S/{name}/{api}``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

__all__ = ["ENTRY_POINT_GROUP", "clouds", "load", "names"]

ENTRY_POINT_GROUP = "atlas_nb.sandbox_clouds"


def clouds() -> dict[str, str]:
    """Cloud name -> ``module:Class``: every provider's ``sandbox_cloud``, then plugins.

    A provider's own pointer wins over an entry point of the same name, so an
    installed package cannot silently swap the emulator of a provider that names
    one; entry points fill in every other name.
    """
    # Imported here: ``atlas_nb.sandbox`` stays light, and the provider registry
    # imports config, which imports the sandbox package.
    from ..providers import facts
    from ..providers import names as provider_names

    found: dict[str, str] = {}
    for name in provider_names():
        target = facts(name).sandbox_cloud
        if target:
            found[name] = target
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def names() -> tuple[str, ...]:
    """Every cloud the sandbox can serve, in registry order."""
    return tuple(clouds())


def load(name: str, table: Mapping[str, str] | None = None) -> Any:
    """The cloud class registered as ``name``; ``ValueError`` listing the known names.

    ``table`` is a ``clouds()`` result to reuse (reading entry points costs milliseconds).
    """
    known = clouds() if table is None else table
    try:
        target = known[name]
    except KeyError:
        raise ValueError(f"no sandbox cloud {name!r}; known: {', '.join(known)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
