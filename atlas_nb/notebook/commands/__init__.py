"""The ``%atlas`` subcommands, one module per area; each subcommand's parser sits beside
its handler, registered once with ``@command`` (see ``registry``).

A handler is ``fn(call: Call) -> Any``; its return value is what the cell displays. The
modules import their heavy dependencies (the facade, pandas, widgets) inside the handlers,
so loading them to learn the subcommands keeps ``%load_ext`` fast.
"""

from __future__ import annotations

# Imported for their @command registrations; the overview order is SUBCOMMANDS's.
from . import account, catalog, compute, fly, jobs  # noqa: F401
from .registry import (
    SUBCOMMANDS,
    Handler,
    HelpShown,
    UsageParser,
    command,
    handler_for,
    overview,
    parse,
    parser_for,
)

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
