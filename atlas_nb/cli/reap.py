"""``atlas-nb reap [--dry-run] [--provider P] [--only ID...]``: a reaper pass from the shell.

Prints one line per action (``would:`` in a dry run, ``did:`` otherwise), listing
errors, and a summary. Exit status:

* 0: every action planned worked. Entries that are merely *kept* do not count against
  it: an owner still alive, the grace period, or a spawn whose outcome is not known yet
  (no id, and no listing has proved it absent: it is retried by name on the next run).
  So a row that cannot be resolved today never makes every reap fail.
* 1: an operational failure of this run: a terminate failed, or a provider's listing
  failed (nothing of that provider could be checked). With ``--retry-for``, the
  ``--only`` entries still open when the time is up.
* 2: bad usage, e.g. ``--provider nosuch`` (one line on stderr, with a suggestion).

``--only ID...`` (compute ids or ledger names) limits the pass to those entries, and
``--retry-for S`` repeats it with backoff (1 s doubling to 60 s) until they are all
closed or ``S`` seconds have passed: what the detached reaper a kernel shutdown starts
runs (``orchestrator.detached``). ``--keys-from-stdin`` reads a JSON object
``{"provider": "api key"}`` from stdin, so keys never appear in the process's argv.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from dataclasses import asdict
from typing import Any

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
    p.add_argument("--include-foreign", action="store_true",
                   help="also terminate computes named by other ledgers (another machine, CI "
                        "job or colleague on the account) once past the grace period; by "
                        "default they are only reported")
    p.add_argument("--only", nargs="+", metavar="ID",
                   help="only these compute ids or ledger names (what a detached reaper does)")
    p.add_argument("--retry-for", type=float, default=0.0, metavar="S",
                   help="repeat with backoff until the --only entries are closed, for at "
                        "most S seconds (default: one pass)")
    p.add_argument("--keys-from-stdin", action="store_true",
                   help='read API keys as JSON {"provider": "key"} from stdin (never argv)')
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show the resources kept, and why")


@command(
    "reap",
    help="terminate what dead or untracked orchestrator sessions left behind",
    description=(
        "List each provider and terminate resources named by an atlas_nb orchestrator "
        "whose owning process is dead (at once), that no ledger knows (after the grace "
        "period), or whose terminate failed before. Resources without the configured "
        "name prefix are never touched, nor are other ledgers' computes (reported) unless "
        "--include-foreign is given."
    ),
    args=_reap_args,
)
def reap(args: argparse.Namespace) -> int:
    """Run one reap with the parsed arguments; returns the exit code."""
    from ..errors import AtlasError
    from ..orchestrator import Orchestrator

    problem = _usage_problem(args)
    if problem is not None:
        _out(f"atlas-nb reap: error: {problem} (see `atlas-nb reap --help`)", err=True)
        return USAGE
    try:
        # Keys from stdin are this run's explicit keys, like ``api_key=``: they must win
        # over the sandbox's default key too (a second sandbox account's leftovers).
        from ..providers import resolve

        given = {p: resolve(p, api_key=k) for p, k in getattr(args, "keys", {}).items()}
        orch = Orchestrator(background=False, kernel_hooks=False, providers=given)
    except AtlasError as exc:  # a broken config file or ledger: nothing could be checked
        _out(f"atlas-nb reap: {exc}", err=True)
        return FAILURE
    started = time.monotonic()
    wait = 1.0
    while True:
        try:
            report = orch.reap_now(dry_run=args.dry_run, providers=args.provider or None,
                                   include_foreign=args.include_foreign, only=args.only)
        except AtlasError as exc:
            _out(f"atlas-nb reap: {exc}", err=True)
            return FAILURE
        if args.retry_for <= 0 or args.dry_run:
            break
        left = _still_open(orch, args.only) if args.only else (report.failed or report.errors)
        if not left or time.monotonic() - started + wait > args.retry_for:
            break
        _out(f"{time.strftime('%H:%M:%S')} still open: {_brief(left)}; next try in {wait:g}s")
        sys.stdout.flush()
        time.sleep(wait)
        wait = min(wait * 2, 60.0)
    if args.json:
        _out(json.dumps({
            "dry_run": report.dry_run,
            "actions": [asdict(a) for a in report],
            "kept": [asdict(a) for a in report.kept] if args.verbose else len(report.kept),
            "errors": report.errors,
            "needs_key": [asdict(a) for a in report.needs_key],
            "foreign": len(report.foreign),
        }, indent=2))
    else:
        if args.verbose:
            for kept in report.kept:
                _out(f"kept: {kept}")
        for line in report.lines():  # a provider that could not be listed is an error
            _out(line, err=line.startswith("error: "))
    if args.only and args.retry_for > 0 and not args.dry_run:
        left = _still_open(orch, args.only)
        if left:
            _out(f"still open after {args.retry_for:g}s: {_brief(left)}; `atlas-nb reap` "
                 "retries them", err=True)
            return FAILURE
        return OK
    return FAILURE if report.failed or report.errors else OK


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the request itself (before anything is listed), or ``None``."""
    from .. import config
    from ..providers import names, provider_class

    for name in args.provider or ():
        try:
            provider_class(name)
        except Exception:
            known = names()
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            return f"unknown provider {name!r}; {hint}known: {', '.join(known)}"
    if args.retry_for < 0:
        return "--retry-for must be >= 0 seconds"
    if args.keys_from_stdin:
        try:
            keys: Any = json.loads(sys.stdin.read() or "{}")
        except json.JSONDecodeError as exc:
            return f"--keys-from-stdin: not JSON ({exc.msg})"
        if not isinstance(keys, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
            return '--keys-from-stdin: expected {"provider": "api key", ...}'
        for provider, key in keys.items():
            config.set_session_key(provider, key)
        args.keys = keys
    return None


def _still_open(orch: Any, only: list[str]) -> list[str]:
    """The ``only`` entries whose ledger rows are still open."""
    wanted = set(only)
    return sorted(e.compute_id or e.name for e in orch.ledger.open_entries()
                  if e.name in wanted or e.compute_id in wanted)


def _brief(left: Any) -> str:
    items = [str(x) if isinstance(x, str) else getattr(x, "compute_id", None) or str(x)
             for x in (left.items() if isinstance(left, dict) else left)]
    return ", ".join(items[:10]) + (f" (+{len(items) - 10})" if len(items) > 10 else "")
