"""The ``%atlas`` subcommand registry, and the parsers built from it.

Each module of this package registers its subcommands with ``@command(name, help=...,
description=..., args=...)`` right above the handler; ``args`` adds the subcommand's
arguments to an argparse parser. For the magic that parser is a ``UsageParser``: every
error is one ``UsageError`` line, and ``--help`` prints the help and raises
``HelpShown`` (the magic then returns nothing). Parsers are built on first use and cached.

IPython is imported only when an error is raised, so the definitions stay importable
without it (``atlas-nb`` can reuse them).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from ...cli.registry import Command, Registry

if TYPE_CHECKING:
    from ..call import Call

__all__ = [
    "SUBCOMMANDS",
    "Handler",
    "HelpShown",
    "UsageParser",
    "command",
    "handler_for",
    "overview",
    "parse",
    "parser_for",
]

Handler = Callable[["Call"], Any]
"""A subcommand handler: its return value is what the cell displays."""

SUBCOMMANDS: Registry[Handler] = Registry("%atlas", order=(
    "providers", "login", "gpus", "spawn", "ls", "touch", "stop", "start", "terminate",
    "run", "stream", "jobs", "logs", "deploy", "dashboard", "sandbox", "reap", "doctor",
))
"""Every ``%atlas`` subcommand, in the overview's order (a subcommand the order does not
name comes last); the modules of this package fill it when imported."""

command = SUBCOMMANDS.command
"""``@command(name, help=..., description=..., args=...)`` registers a subcommand."""


class HelpShown(Exception):
    """``--help`` was printed; the magic returns ``None``."""


class UsageParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises ``UsageError`` (one line) instead of exiting."""

    def __init__(self, sub: str, **kwargs: Any) -> None:
        self.sub = sub
        super().__init__(prog=f"%atlas {sub}", add_help=True, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        from IPython.core.error import UsageError

        text = " ".join(message.split())
        raise UsageError(f"%atlas {self.sub}: {text} (see %atlas {self.sub} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message.rstrip())  # noqa: T201 - argparse's own --help/--version text
        raise HelpShown


_cache: dict[str, UsageParser] = {}


def _command(sub: str) -> Command[Handler]:
    """The registered ``sub``; ``UsageError`` naming the known subcommands."""
    found = SUBCOMMANDS.get(sub)
    if found is None:
        from IPython.core.error import UsageError

        close = SUBCOMMANDS.closest(sub)
        hint = f"did you mean '{close}'? " if close else ""
        raise UsageError(f"%atlas: unknown subcommand {sub!r}; {hint}"
                         f"use one of: {', '.join(SUBCOMMANDS)}")
    return found


def parser_for(sub: str) -> UsageParser:
    """The (cached) parser of ``sub``; ``UsageError`` naming the known subcommands."""
    found = _command(sub)
    if sub not in _cache:
        parser = UsageParser(sub, description=found.description)
        found.configure(parser)
        _cache[sub] = parser
    return _cache[sub]


def handler_for(sub: str) -> Handler:
    """The handler of ``sub`` (``UsageError`` for an unknown subcommand)."""
    return _command(sub).handler


def parse(sub: str, args: Sequence[str]) -> argparse.Namespace:
    """Parse ``args`` for ``sub``; ``UsageError`` on bad input, ``HelpShown`` after --help."""
    return parser_for(sub).parse_args(list(args))


def overview() -> str:
    """The text ``%atlas`` and ``%atlas --help`` print."""
    width = max(len(s) for s in SUBCOMMANDS)
    lines = ["%atlas SUBCOMMAND [args]   (cell form: %%atlas SUBCOMMAND, body = spec or input)", ""]
    lines += [f"  {name:<{width}}  {sub.help}" for name, sub in SUBCOMMANDS.items()]
    lines += ["", "%atlas SUB --help shows a subcommand's flags. -o NAME stores the result;",
              "$name passes a notebook variable by reference; a trailing ; hides the output.",
              "Keys never go on the magic line: use %atlas login PROVIDER."]
    return "\n".join(lines)
