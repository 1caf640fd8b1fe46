"""``gpus``: the cross-provider price table (or the CatalogPanel)."""

from __future__ import annotations

import sys
from typing import Any

from ..call import Call
from ..catalog_cache import provider_names

__all__ = ["default_catalog_providers", "gpus"]


def default_catalog_providers(call: Call) -> list[str]:
    """``--provider`` values; else the default provider; else every provider with a key
    (every provider when none has one, so the errors say what is missing)."""
    from ... import config
    from ...facade import ALL_PROVIDERS

    given = call.args.provider
    if given:
        return provider_names(given)
    if call.magics.default_provider:
        return [call.magics.default_provider]
    keyed = [p for p in ALL_PROVIDERS if config.key_source(p)]
    return keyed or list(ALL_PROVIDERS)


def gpus(call: Call) -> Any:
    """The price table, cheapest first; failed catalogs are named on stderr."""
    args = call.args
    names = default_catalog_providers(call)
    if args.panel:
        from ..widgets.catalog_panel import CatalogPanel
        from ..widgets.spawn_panel import SpawnPanel

        spawn = SpawnPanel(provider=names[0] if len(names) == 1 else None,
                           idle_ttl=call.magics.idle_ttl)
        return CatalogPanel(providers=names, spawn_panel=spawn, ttl=call.magics.catalog_ttl,
                            refresh=args.refresh)
    from .. import frames

    df = frames.gpus(provider=names, gpu=args.gpu, max_price=args.max_price, spot=args.spot,
                     refresh=args.refresh, ttl=call.magics.catalog_ttl, limit=args.limit)
    for name, message in df.attrs.get("failures", {}).items():
        print(f"note: {name} catalog not loaded: {message}", file=sys.stderr)  # noqa: T201
    return df
