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

Exit codes, the same for every command: 0 ok, 1 operational failure, 2 usage error. Errors
are one line on stderr that ends with the fix; ``main`` turns argparse's errors, and any
``AtlasError`` or ``OSError`` a handler let through, into that line instead of a usage block
or a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from .exit_codes import FAILURE, USAGE, failure
from .registry import Registry

__all__ = ["COMMANDS", "GROUPS", "build_parser", "command", "main", "usage_error"]

Handler = Callable[[argparse.Namespace], int]

COMMANDS: Registry[Handler] = Registry("atlas-nb")
"""Every ``atlas-nb`` command, in help order; the ``GROUPS`` modules register them when
imported (``build_parser`` imports them)."""

command = COMMANDS.command
"""``@command(name, help=..., description=..., args=...)`` registers an ``atlas-nb`` command."""

GROUPS = ("init", "sandbox", "reap", "doctor")
"""The modules of this package holding commands, in help order."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are the one stderr line every command uses."""

    def error(self, message: str) -> NoReturn:
        sys.exit(usage_error(self.prog, message))


def usage_error(prog: str, message: str) -> int:
    """Write ``"<prog>: error: <message>; see `<prog> --help`"`` to stderr; returns 2."""
    return failure(prog, f"error: {message}", fix=f"see `{prog} --help`", code=USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The ``atlas-nb`` parser with every sub-command."""
    from .. import __version__

    for group in GROUPS:  # each registers its commands on first import
        importlib.import_module(f"{__name__}.{group}")
    parser = _Parser(
        prog="atlas-nb", description="atlas_nb: rent GPUs and run inference from a notebook."
    )
    parser.add_argument("--version", action="version", version=f"atlas-nb {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    COMMANDS.add_subparsers(subparsers)  # sub-parsers are _Parser too (argparse's default)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``atlas-nb``; returns the exit code (0 ok, 1 operational failure, 2 usage).

    A bad flag value exits 2 through ``SystemExit`` (raised by argparse, as usual).
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    func: Handler | None = getattr(args, "func", None)
    prog = f"{parser.prog} {args.command}" if func is not None else parser.prog
    if extra:  # reported against the command, whose --help lists what it takes
        return usage_error(prog, f"unrecognized arguments: {' '.join(extra)}")
    if func is None:
        return usage_error(prog, "no command given")
    try:
        return func(args)
    except Exception as exc:
        # A handler reports what it expects itself; this is the net for the rest, so a
        # user sees one line rather than a traceback. A bug still shows its traceback.
        from ..errors import AtlasError

        if not isinstance(exc, (AtlasError, OSError)):
            raise
        hint = getattr(exc, "hint", None)
        return failure(prog, exc, fix=hint, code=FAILURE)
