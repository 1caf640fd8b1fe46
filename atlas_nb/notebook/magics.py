"""``AtlasMagics``: the one ``%atlas`` / ``%%atlas`` magic. It only parses, delegates and
returns what the subcommand built (a DataFrame, a model, a panel) for display.

Settings are traitlets: ``%config AtlasMagics.default_provider = "runpod"``.
"""

from __future__ import annotations

import getpass
import keyword
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    line_cell_magic,
    magics_class,
    needs_local_scope,
    no_var_expand,
    output_can_be_silenced,
)
from traitlets import Float, TraitError, Unicode, validate
from traitlets.config import Configurable

from . import keyguard
from .call import Call, Result
from .commands import HelpShown, handler_for, overview, parse
from .expand import expand, without_comment

__all__ = ["AtlasMagics"]


@magics_class
class AtlasMagics(Magics, Configurable):
    """The ``%atlas`` magics and their settings (``%config AtlasMagics``)."""

    default_provider = Unicode(
        None, allow_none=True,
        help="Provider used when a subcommand gets no --provider (then the config file's "
             "default_provider, then ATLAS_NB_PROVIDER).",
    ).tag(config=True)
    idle_ttl = Float(
        None, allow_none=True,
        help="Minutes a tracked compute may stay idle before it is terminated (None: the "
             "orchestrator's idle_ttl_ms from the config file, 30 min by default; 0: no idle "
             "TTL). %atlas spawn --idle-ttl overrides it.",
    ).tag(config=True)
    refresh_interval = Float(
        2.0, help="Seconds between refreshes of live panels (dashboard, job table).",
    ).tag(config=True)
    catalog_ttl = Float(
        300.0, help="Seconds a fetched GPU catalog is reused (%atlas gpus --refresh refetches).",
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.getpass: Callable[[str], str] = getpass.getpass
        """Reads a key at a hidden prompt (``%atlas login``); replaceable in tests."""

    @validate("idle_ttl", "catalog_ttl")
    def _non_negative(self, proposal: Any) -> float | None:
        if proposal["value"] is None:  # idle_ttl only: the orchestrator's default applies
            return None
        value = float(proposal["value"])
        if value < 0:
            raise TraitError(f"AtlasMagics.{proposal['trait'].name} must be >= 0, got {value}")
        return value

    @validate("refresh_interval")
    def _positive(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise TraitError(f"AtlasMagics.refresh_interval must be > 0, got {value}")
        return value

    @no_var_expand
    @needs_local_scope
    @output_can_be_silenced
    @line_cell_magic
    def atlas(self, line: str, cell: str | None = None,
              local_ns: Mapping[str, Any] | None = None) -> Any:
        return self.dispatch(line, cell, local_ns)

    def dispatch(self, line: str, cell: str | None = None,
                 local_ns: Mapping[str, Any] | None = None) -> Any:
        """Run one ``%atlas`` line (and cell); what the subcommand returns is displayed."""
        text = without_comment(line.strip())
        if text.endswith(";"):  # IPython's silencing marker; it checks the line itself
            text = text[:-1].rstrip()
        try:
            raw_tokens = shlex.split(text, posix=True)
        except ValueError:
            raw_tokens = text.split()
        try:
            keyguard.check_line(raw_tokens)
        except UsageError:
            keyguard.scrub_history(self.shell, line)
            raise
        if not raw_tokens or raw_tokens[0] in ("-h", "--help", "help"):
            print(overview())  # noqa: T201 - this is the help the user asked for
            return None
        user_ns: Mapping[str, Any] = self.shell.user_ns if self.shell is not None else {}
        namespaces = (local_ns, user_ns) if local_ns is not None and local_ns is not user_ns \
            else (user_ns,)
        expanded = expand(text, namespaces)
        sub = expanded.tokens[0]
        handler = handler_for(sub)  # UsageError for an unknown subcommand
        try:
            args = parse(sub, expanded.tokens[1:])
        except HelpShown:
            return None
        for key, value in vars(args).items():
            setattr(args, key, expanded.restore(value))
        out = getattr(args, "out", None)
        if out is not None and (not out.isidentifier() or keyword.iskeyword(out)):
            raise UsageError(f"%atlas {sub}: -o needs a Python variable name, got {out!r}")
        call = Call(magics=self, sub=sub, args=args, cell=cell, namespaces=namespaces)
        result = handler(call)
        if isinstance(result, Result):
            call.store(result.value)
            return result.display
        call.store(result)
        return result


AtlasMagics.atlas.__doc__ = overview()
