"""The ``atlas-nb`` console script: one module per command group, on the command registry
the ``%atlas`` magic uses (``atlas_nb.cli.registry``).

    atlas-nb init [--ipython] [--force]               write the config file and private dirs
    atlas-nb upgrade [--dry-run]                      run the config (and ledger) migrations
    atlas-nb sandbox [--port N] [--host 127.0.0.1]    run the emulated clouds in the foreground
    atlas-nb reap [--dry-run] [--provider P]          terminate what dead sessions left behind
    atlas-nb doctor [--strict]                        versions, config, sandbox, keys present

Adding a command is one function in a group module, decorated with
``@command(name, help=..., description=..., args=...)``; it takes the parsed arguments and
returns an exit code (``atlas_nb.cli.exit_codes``). A new group module is one entry in
``GROUPS``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence

from .exit_codes import USAGE
from .registry import Registry

__all__ = ["COMMANDS", "GROUPS", "build_parser", "command", "main"]

Handler = Callable[[argparse.Namespace], int]

COMMANDS: Registry[Handler] = Registry("atlas-nb")
"""Every ``atlas-nb`` command, in help order; the ``GROUPS`` modules register them when
imported (``build_parser`` imports them)."""

command = COMMANDS.command
"""``@command(name, help=..., description=..., args=...)`` registers an ``atlas-nb`` command."""

GROUPS = ("init", "sandbox", "reap", "doctor")
"""The modules of this package holding commands, in help order."""


def build_parser() -> argparse.ArgumentParser:
    """The ``atlas-nb`` parser with every sub-command."""
    from .. import __version__

    for group in GROUPS:  # each registers its commands on first import
        importlib.import_module(f"{__name__}.{group}")
    parser = argparse.ArgumentParser(
        prog="atlas-nb", description="atlas_nb: rent GPUs and run inference from a notebook."
    )
    parser.add_argument("--version", action="version", version=f"atlas-nb {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    COMMANDS.add_subparsers(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``atlas-nb``; returns the exit code (argparse exits 2 itself on bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return USAGE
    return func(args)
