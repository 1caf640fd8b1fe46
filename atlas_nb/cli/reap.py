"""``atlas-nb reap [--dry-run] [--provider P]``: one reaper pass from the shell.

Prints one line per action (``would:`` in a dry run, ``did:`` otherwise), listing
errors, and a summary. Exit status: 0 when everything planned worked, 1 when a
terminate or a provider listing failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from . import command
from .exit_codes import FAILURE, OK, USAGE

__all__ = ["reap"]


def _out(line: str, *, err: bool = False) -> None:
    (sys.stderr if err else sys.stdout).write(line + "\n")


def _reap_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be done and change nothing")
    p.add_argument("--provider", action="append", metavar="P",
                   help="only this provider (repeatable; default: every provider the ledger "
                        "mentions, or orchestrator.reap_providers)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show the owned resources kept, and why")


@command(
    "reap",
    help="terminate what dead or untracked orchestrator sessions left behind",
    description=(
        "List each provider and terminate resources named by an atlas_nb orchestrator "
        "whose owning process is dead (at once), that no ledger knows (after the grace "
        "period), or whose terminate failed before. Resources without the configured "
        "name prefix are never touched."
    ),
    args=_reap_args,
)
def reap(args: argparse.Namespace) -> int:
    """Run one reap with the parsed arguments; returns the exit code."""
    from ..errors import AtlasError
    from ..orchestrator import Orchestrator

    try:
        orch = Orchestrator(background=False, kernel_hooks=False)
        report = orch.reap_now(dry_run=args.dry_run,
                               providers=args.provider or None)
    except AtlasError as exc:  # e.g. an unknown provider name: the request is at fault
        _out(f"atlas-nb reap: {exc}", err=True)
        return USAGE
    if args.json:
        _out(json.dumps({
            "dry_run": report.dry_run,
            "actions": [asdict(a) for a in report],
            "kept": [asdict(a) for a in report.kept] if args.verbose else len(report.kept),
            "errors": report.errors,
        }, indent=2))
    else:
        if args.verbose:
            for kept in report.kept:
                _out(f"kept: {kept}")
        for line in report.lines():
            _out(line)
    return FAILURE if report.failed or report.errors else OK
