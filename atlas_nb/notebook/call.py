"""``Call``: what a subcommand handler gets — the parsed args, the cell and the magic."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from . import keyguard
from .expand import is_reference, parse_body

if TYPE_CHECKING:
    from .magics import AtlasMagics

__all__ = ["Call", "Lines", "Result"]


@dataclass(frozen=True)
class Result:
    """A handler's answer when what ``-o`` stores differs from what the cell shows."""

    value: Any
    display: Any


class Lines:
    """Plain lines shown as text (and as preformatted HTML)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = list(lines)

    def __repr__(self) -> str:
        return "\n".join(self.lines)

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(repr(self))}</pre>"


@dataclass
class Call:
    """One ``%atlas`` invocation, handed to the subcommand's handler."""

    magics: AtlasMagics
    sub: str
    args: argparse.Namespace
    cell: str | None
    namespaces: tuple[Mapping[str, Any], ...]

    @property
    def shell(self) -> Any:
        """The IPython shell."""
        return self.magics.shell

    def provider(self, explicit: Any = None) -> Any:
        """``--provider`` > ``AtlasMagics.default_provider`` > ``None`` (the config decides)."""
        if explicit is not None:
            return explicit
        return self.magics.default_provider or None

    def body(self) -> Any:
        """The cell body as data (``$var``, JSON or YAML), refusing provider keys in it."""
        data = parse_body(self.cell, self.namespaces)
        if not is_reference(self.cell):  # a $var never went through the history
            keyguard.check_body(data)
        return data

    def store(self, value: Any) -> None:
        """Put ``value`` in the notebook variable named by ``-o`` (if any)."""
        name = getattr(self.args, "out", None)
        if name and self.shell is not None:
            self.shell.push({name: value})

    def usage(self, message: str) -> UsageError:
        """A one-line usage error for this subcommand."""
        return UsageError(f"%atlas {self.sub}: {message} (see %atlas {self.sub} --help)")
