"""``Command`` and ``Registry``: a subcommand's argparse definition registered beside its
handler, once.

Both front ends use it: ``atlas-nb`` (``atlas_nb.cli.COMMANDS``) and the ``%atlas`` magic
(``atlas_nb.notebook.commands.SUBCOMMANDS``). A command's ``args`` only calls
``add_argument`` on the parser it is given, so the same definition fits a standalone
parser (the magic builds one per subcommand) or an ``add_subparsers()`` entry (the CLI).

This module is core: it imports neither IPython nor the handlers' dependencies, which a
handler imports itself when it runs.

    @REGISTRY.command("spawn", help="spawn a compute", description="...", args=_spawn_args)
    def spawn(call): ...
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["ArgsFn", "Command", "Registry", "no_args"]

H = TypeVar("H", bound=Callable[..., Any])

ArgsFn = Callable[[argparse.ArgumentParser], None]
"""Adds a command's arguments to the parser it is given."""


def no_args(parser: argparse.ArgumentParser) -> None:
    """The ``args`` of a command that takes no arguments."""


@dataclass(frozen=True)
class Command(Generic[H]):
    """One subcommand: its name, help texts, argparse definition and handler."""

    name: str
    help: str
    """One line, for a list of every command."""
    description: str
    """The paragraph ``COMMAND --help`` prints above the flags."""
    args: ArgsFn
    handler: H

    def configure(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Add this command's arguments to ``parser``; returns it."""
        self.args(parser)
        return parser


class Registry(Mapping[str, "Command[H]"], Generic[H]):
    """Commands by name, in display order: those named in ``order`` first (in that order),
    the rest in the order they registered."""

    def __init__(self, prog: str, *, order: Iterable[str] = ()) -> None:
        self.prog = prog
        """How users invoke the commands (``atlas-nb``, ``%atlas``); used in messages."""
        self._order = tuple(order)
        self._commands: dict[str, Command[H]] = {}

    def command(self, name: str, *, help: str, description: str | None = None,
                args: ArgsFn = no_args) -> Callable[[H], H]:
        """Register the decorated function as the handler of ``name``; returns it unchanged.

        ``help`` is the one-line summary, ``description`` the ``--help`` paragraph (the
        summary when omitted), ``args`` adds the arguments to a parser.
        """

        def register(handler: H) -> H:
            self.add(Command(name, help, description or help, args, handler))
            return handler

        return register

    def add(self, command: Command[H]) -> None:
        """Register ``command``; a name registers once (``ValueError`` otherwise)."""
        if command.name in self._commands:
            raise ValueError(f"{self.prog}: command {command.name!r} is already registered")
        self._commands[command.name] = command

    def closest(self, name: str) -> str | None:
        """The registered name most like ``name`` (for "did you mean"), if any is close."""
        close = difflib.get_close_matches(name, list(self), n=1)
        return close[0] if close else None

    def add_subparsers(self, subparsers: Any, **kwargs: Any) -> None:
        """Add every command to ``subparsers`` (from ``ArgumentParser.add_subparsers``),
        with ``set_defaults(func=handler)``; ``kwargs`` go to each ``add_parser``."""
        for command in self.values():
            parser = subparsers.add_parser(command.name, help=command.help,
                                           description=command.description, **kwargs)
            command.configure(parser).set_defaults(func=command.handler)

    def __getitem__(self, name: str) -> Command[H]:
        return self._commands[name]

    def __iter__(self) -> Iterator[str]:
        listed = [n for n in self._order if n in self._commands]
        return iter([*listed, *(n for n in self._commands if n not in listed)])

    def __len__(self) -> int:
        return len(self._commands)

    def __repr__(self) -> str:
        return f"Registry({self.prog!r}, {list(self)})"
