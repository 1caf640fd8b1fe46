"""``logs`` and ``deploy``: Fly.io platform operations."""

from __future__ import annotations

import argparse
import contextlib
import queue
import sys
from typing import TYPE_CHECKING, Any

from ...errors import ProviderError
from .options import count, one_of, out_option
from .registry import command

LOG_LEVELS = ("debug", "info", "warn", "warning", "error")
"""What ``--level`` takes: ``LogTail``'s levels (the widgets load with the handler)."""

if TYPE_CHECKING:
    from ..call import Call

__all__ = ["deploy", "logs"]


def _logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", metavar="APP")
    p.add_argument("--region", metavar="R")
    p.add_argument("--instance", metavar="ID")
    p.add_argument("--level", metavar="L", type=one_of(LOG_LEVELS),
                   help="minimum level shown: debug, info, warn or error")
    p.add_argument("--grep", metavar="TEXT", help="only lines containing TEXT")
    p.add_argument("--lines", type=count, default=1000, metavar="N",
                   help="ring buffer size (default 1000)")
    p.add_argument("--no-follow", action="store_true",
                   help="print what arrives within --wait seconds, then stop")
    p.add_argument("--wait", type=float, default=3.0, metavar="S")
    out_option(p)


@command("logs", help="live Fly.io app logs",
         description="Live Fly.io app logs in a LogTail panel (bounded ring buffer, "
                     "pause/resume, filters), or the latest lines with --no-follow.",
         args=_logs_args)
def logs(call: Call) -> Any:
    """A live ``LogTail`` panel, or with --no-follow a DataFrame of what arrives."""
    args = call.args
    if not args.no_follow:
        from ..widgets.log_tail import LogTail

        return LogTail(args.app, region=args.region, instance=args.instance, level=args.level,
                       grep=args.grep, max_lines=args.lines)
    import pandas as pd

    from ...fly import tail_logs
    from ..widgets.log_tail import level_rank

    floor = level_rank(args.level) if args.level else -1
    needle = (args.grep or "").lower()
    rows = []
    with tail_logs(args.app, timeout_s=args.wait, max_entries=args.lines,
                   region=args.region, instance=args.instance) as tail:
        for e in tail:
            if level_rank(e.level) >= floor and needle in e.message.lower():
                rows.append((e.timestamp, e.level, e.region, e.instance, e.message))
    return pd.DataFrame.from_records(
        rows, columns=["timestamp", "level", "region", "instance", "message"])


def _deploy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("app_dir", metavar="APP_DIR", help="the folder holding fly.toml")
    p.add_argument("--project", metavar="PATH", default=".",
                   help="project root APP_DIR must stay inside (default: cwd)")
    p.add_argument("--ticket", metavar="ID", help="deploy id to follow it by (default: new)")
    p.add_argument("--background", action="store_true",
                   help="return at once with a panel following the deploy")
    out_option(p)


@command("deploy", help="fly deploy with streamed output",
         description="Run `fly deploy --remote-only` for an app folder and stream its output.",
         args=_deploy_args)
def deploy(call: Call) -> Any:
    """Run ``fly deploy --remote-only``, printing its output; the cell fails if it does.

    Ctrl-C kills the deploy's process group. With --background a ``DeployPanel``
    follows it and the cell returns at once.
    """
    from ...fly import Deployment
    from ..call import Result

    args = call.args
    deployment = Deployment(args.project, args.app_dir, args.ticket)
    if args.background:
        from ..widgets.deploy_panel import DeployPanel

        panel = DeployPanel(deployment)
        deployment.start()
        return Result(deployment, panel)
    events: queue.Queue[Any] = queue.Queue()
    deployment.subscribe(events.put)
    deployment.start()
    result = None
    try:
        while result is None:
            event = events.get()
            line = getattr(event, "line", None)
            if line is not None:
                print(line)  # noqa: T201 - the deploy's own output, in the cell
            else:
                result = event
    except KeyboardInterrupt:
        deployment.cancel()
        with contextlib.suppress(Exception):
            deployment.wait(10.0)
        print(f"deploy {deployment.ticket_id}: cancelled", file=sys.stderr)  # noqa: T201
        raise
    call.store(result)
    print(str(result))  # noqa: T201 - the last line of the deploy's output
    if not result.ok:
        raise ProviderError(str(result), provider="fly",
                            hint="the output above shows why; rerun with %atlas deploy")
    return Result(result, None)
