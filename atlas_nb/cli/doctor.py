"""``atlas-nb doctor``: versions, config, sandbox and which keys are present."""

from __future__ import annotations

import argparse

from . import command
from .exit_codes import OK, failure

__all__ = ["doctor"]


def _doctor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any check warns or fails")


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

    report = diagnose()
    print(report, flush=True)
    if report.ok or not args.strict:
        return OK
    bad = [c.topic for c in report.checks if c.level not in ("ok", "info")]
    return failure("atlas-nb doctor", f"{len(bad)} check(s) warn or fail under --strict: "
                   f"{', '.join(bad)}", fix="fix what the report above says for each")
