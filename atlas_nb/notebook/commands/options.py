"""Flags several ``%atlas`` subcommands share (``-o NAME``, ``--provider``), and the value
types that refuse bad input at parse time with the flag's name and the fix."""

from __future__ import annotations

import argparse
import difflib
import math
from collections.abc import Callable, Iterable

__all__ = ["count", "one_of", "out_option", "price", "provider_option"]


def count(text: str) -> int:
    """A whole number of at least 1 (``--limit``, ``--gpu-count``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not allowed; give 1 or more")
    return value


def price(text: str) -> float:
    """A finite price in US dollars of 0 or more (``--max-price``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of dollars") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed; give a price of 0 or more")
    return value


def one_of(values: Iterable[str]) -> Callable[[str], str]:
    """A type accepting one of ``values`` (any case); otherwise "did you mean ...?"."""
    known = tuple(values)

    def parse(text: str) -> str:
        if text.lower() in known:
            return text.lower()
        close = difflib.get_close_matches(text.lower(), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise argparse.ArgumentTypeError(f"{text!r} is not known; {hint}one of: "
                                         f"{', '.join(known)}")

    parse.__name__ = "value"  # argparse names the type in some messages
    return parse


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
