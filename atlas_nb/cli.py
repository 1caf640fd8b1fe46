"""The ``atlas-nb`` console script.

One argparse sub-command per verb. Adding a verb is one ``_add_<verb>(subparsers)``
function that registers its parser with ``set_defaults(func=...)`` and one entry
in ``COMMANDS``; the function it points at takes the parsed args and returns the
exit code.

    atlas-nb init [--ipython] [--force]               write the config file and private dirs
    atlas-nb upgrade [--dry-run]                      run the config (and ledger) migrations
    atlas-nb sandbox [--port N] [--host 127.0.0.1]    run the emulated clouds in the foreground
    atlas-nb reap [--dry-run] [--provider P]          terminate what dead sessions left behind
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

__all__ = ["COMMANDS", "build_parser", "main"]

Subparsers = Any  # argparse's _SubParsersAction is private


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox.server import Sandbox

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sandbox = Sandbox(
            host=args.host,
            port=args.port,
            seed=args.seed,
            validate=args.validate,
            provision_delay_s=args.provision_delay,
            start_delay_s=args.start_delay,
            attach=False,
        )
        try:
            sandbox.start()
        except RuntimeError as exc:
            sandbox.close()
            print(f"atlas-nb sandbox: {exc}", file=sys.stderr)
            return 1
        try:
            print(f"atlas_nb sandbox listening on {sandbox.url}")
            for name, key in sandbox.keys.items():
                apis = ",".join(api.name for api in sandbox.clouds[name].apis())
                print(f"  {name:<12} key {key:<24} {sandbox.url}/{name}/{{{apis}}}")
            print("Point another process (a kernel, the CLI, a test) at it with:")
            print(f"  export ATLAS_NB_SANDBOX={sandbox.url}")
            print("Press Ctrl-C to stop.", flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            sandbox.close()
        if args.validate:
            for line in sandbox.violations:
                print(f"violation: {line}")
        print("sandbox stopped", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _add_sandbox(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "sandbox",
        help="run the emulated clouds (RunPod, Lambda, Vast, Fly) on a loopback port",
        description=(
            "Run every emulated cloud in the foreground until Ctrl-C or SIGTERM. "
            "Prints the URL, the sandbox keys and the ATLAS_NB_SANDBOX line to export "
            "so other processes use it."
        ),
    )
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed for ids and fault streams")
    p.add_argument(
        "--provision-delay",
        type=float,
        default=0.2,
        metavar="S",
        help="seconds a new pod stays PROVISIONING (default 0.2)",
    )
    p.add_argument(
        "--start-delay",
        type=float,
        default=0.2,
        metavar="S",
        help="seconds a pod stays STARTING (default 0.2)",
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="check traffic against the vendored OpenAPI specs (needs openapi-core); "
        "violations are printed on exit",
    )
    p.set_defaults(func=_cmd_sandbox)


def _add_reap(subparsers: Subparsers) -> None:
    """``atlas-nb reap [--dry-run] [--provider P]``: see ``atlas_nb.orchestrator.reap_cli``."""
    from .orchestrator.reap_cli import add_parser

    add_parser(subparsers)


def _add_init(subparsers: Subparsers) -> None:
    """``atlas-nb init [--ipython] [--force]``: see ``atlas_nb.init_cli``."""
    from .init_cli import add_parser

    add_parser(subparsers)


def _cmd_upgrade(args: argparse.Namespace) -> int:
    from .errors import AtlasError
    from .migrations import upgrade

    try:
        steps = upgrade(dry_run=args.dry_run)
    except (AtlasError, OSError) as exc:
        print(f"atlas-nb upgrade: {exc}", file=sys.stderr)
        return 1
    for step in steps:
        print(step.line())
    return 0


def _add_upgrade(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "upgrade",
        help="migrate the config file (and the ledger) to this version's schema",
        description=(
            "Run the pending versioned migrations of the config file (recording its "
            "schema_version) and of the orchestrator ledger. Safe to run again: a file at "
            "the current schema is left alone. A config file from a newer atlas_nb is "
            "refused, never downgraded."
        ),
    )
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be migrated; write nothing")
    p.set_defaults(func=_cmd_upgrade)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import diagnose

    report = diagnose()
    print(report)
    return 0 if report.ok or not args.strict else 1


def _add_doctor(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="versions, config, sandbox and which keys are present (never their values)",
        description=(
            "Report installed versions (flagging an ipywidgets / jupyterlab_widgets mismatch), "
            "the config file, whether a sandbox is attached, and where each provider's key "
            "would come from. Keys are reported by source, never by value."
        ),
    )
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any check warns or fails")
    p.set_defaults(func=_cmd_doctor)


COMMANDS: list[Callable[[Subparsers], None]] = [
    _add_init, _add_upgrade, _add_sandbox, _add_reap, _add_doctor,
]
"""Registrars, one per sub-command, in help order."""


def build_parser() -> argparse.ArgumentParser:
    """The ``atlas-nb`` parser with every sub-command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="atlas-nb", description="atlas_nb: rent GPUs and run inference from a notebook."
    )
    parser.add_argument("--version", action="version", version=f"atlas-nb {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``atlas-nb``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
