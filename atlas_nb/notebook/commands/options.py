"""Flags several ``%atlas`` subcommands share: ``-o NAME`` and ``--provider``."""

from __future__ import annotations

import argparse

__all__ = ["out_option", "provider_option"]


def out_option(p: argparse.ArgumentParser) -> None:
    """``-o/--out NAME``: also store the result in a notebook variable."""
    p.add_argument("-o", "--out", metavar="NAME",
                   help="also store the result in the notebook variable NAME")


def provider_option(p: argparse.ArgumentParser, *, many: bool = False) -> None:
    """``--provider/-p P``: one provider, or with ``many`` a repeatable list."""
    if many:
        p.add_argument("--provider", "-p", action="append", metavar="P",
                       help="provider name (repeatable; 'all' for every provider)")
    else:
        p.add_argument("--provider", "-p", metavar="P",
                       help="provider name (default: AtlasMagics.default_provider, then config)")
