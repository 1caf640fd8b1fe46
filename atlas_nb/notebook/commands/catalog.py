"""``gpus``: the cross-provider price table (or the CatalogPanel)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .options import count, out_option, price, provider_option
from .registry import command

if TYPE_CHECKING:
    from ..call import Call

__all__ = ["default_catalog_providers", "gpus"]


def default_catalog_providers(call: Call) -> list[str]:
    """``--provider`` values; else the default provider; else every provider with a key
    (every provider when none has one, so the errors say what is missing)."""
    from ... import config
    from ...facade import all_providers
    from ..catalog_cache import provider_names

    given = call.args.provider
    if given:
        return provider_names(given)
    if call.magics.default_provider:
        return [call.magics.default_provider]
    keyed = [p for p in all_providers() if config.key_source(p)]
    return keyed or list(all_providers())


def _gpus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", "-g", action="append", metavar="G",
                   help="canonical GPU name or family, e.g. h100 (repeatable)")
    p.add_argument("--max-price", type=price, metavar="USD",
                   help="only offers at or below this $/h (the spot price with --spot)")
    provider_option(p, many=True)
    p.add_argument("--spot", action="store_true",
                   help="only offers with a spot price, sorted by it")
    p.add_argument("--refresh", action="store_true", help="refetch the catalogs now")
    p.add_argument("--limit", type=count, metavar="N", help="show the N cheapest rows")
    p.add_argument("--panel", action="store_true",
                   help="open the CatalogPanel (filter, sort, pick a row to spawn)")
    out_option(p)


@command("gpus", help="cross-provider GPU price table (--panel for the picker)",
         description="One cross-provider GPU price table, cheapest first. Catalogs are "
                     "cached (AtlasMagics.catalog_ttl seconds).",
         args=_gpus_args)
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
