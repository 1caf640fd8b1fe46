"""``atlas-nb doctor``: versions, config, sandbox and which keys are present."""

from __future__ import annotations

import argparse

from . import command
from .exit_codes import FAILURE, OK

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
    """Print the report; with --strict, 1 when any check warns or fails."""
    from ..doctor import diagnose

    report = diagnose()
    print(report)
    return OK if report.ok or not args.strict else FAILURE
