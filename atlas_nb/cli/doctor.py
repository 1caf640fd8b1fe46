"""``atlas-nb doctor``: versions, config, sandbox and which keys are present; with ``--live``,
read-only calls to every provider with a key (``atlas_nb.live_checks``)."""

from __future__ import annotations

import argparse

from . import command
from .exit_codes import OK, USAGE, failure

__all__ = ["doctor"]


def _doctor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any check warns or fails")
    p.add_argument("--live", action="store_true",
                   help="also call every provider with a key (read-only: auth, catalog, "
                        "listing); exit 1 when any call fails")
    p.add_argument("--provider", action="append", metavar="NAME",
                   help="with --live: check only this provider (repeatable)")


@command(
    "doctor",
    help="versions, config, sandbox and which keys are present (never their values)",
    description=(
        "Report installed versions (flagging an ipywidgets / jupyterlab_widgets mismatch), "
        "the config file, whether a sandbox is attached, and where each provider's key "
        "would come from. Keys are reported by source, never by value."
    ),
    args=_doctor_args,
)
def doctor(args: argparse.Namespace) -> int:
    """Print the report (stdout); with --strict, 1 when any check warns or fails, with one
    stderr line naming them."""
    from ..doctor import diagnose

    if args.provider and not args.live:
        return failure("atlas-nb doctor", "--provider only applies to --live",
                       fix="add --live, e.g. atlas-nb doctor --live --provider runpod",
                       code=USAGE)
    if args.live:
        return _live(args.provider)
    report = diagnose()
    print(report, flush=True)
    if report.ok or not args.strict:
        return OK
    bad = [c.topic for c in report.checks if c.level not in ("ok", "info")]
    return failure("atlas-nb doctor", f"{len(bad)} check(s) warn or fail under --strict: "
                   f"{', '.join(bad)}", fix="fix what the report above says for each")


def _live(wanted: list[str] | None) -> int:
    """One line per check on stdout; 1 (with one stderr line) when any failed."""
    from ..errors import AtlasError
    from ..live_checks import keyed_providers, run_live_checks
    from ..providers import provider_class

    if wanted:
        try:
            names = [provider_class(w).name for w in wanted]
        except AtlasError as err:
            return failure("atlas-nb doctor", err.message,
                           fix="use a registered name, e.g. runpod", code=USAGE)
    else:
        names = keyed_providers()
    if not names:
        return failure("atlas-nb doctor --live", "no provider has a key, nothing was checked",
                       fix="set e.g. RUNPOD_API_KEY (see `atlas-nb doctor`), or point at a "
                           "sandbox with ATLAS_NB_SANDBOX")
    checks = run_live_checks(names)
    for check in checks:
        print(check, flush=True)
    failed = [f"{c.provider} {c.check}" for c in checks if not c.ok]
    if not failed:
        return OK
    return failure("atlas-nb doctor --live", f"{len(failed)} check(s) failed: "
                   f"{', '.join(failed)}", fix="see the FAIL lines above for each fix")
