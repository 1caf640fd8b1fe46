"""One argparse parser per ``%atlas`` subcommand; every error is a one-line ``UsageError``.

Parsers are built on first use and cached. ``%atlas SUB --help`` prints the parser's
help and the magic returns nothing (``HelpShown``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from IPython.core.error import UsageError

__all__ = ["SUBCOMMANDS", "HelpShown", "UsageParser", "overview", "parse", "parser_for"]


class HelpShown(Exception):
    """``--help`` was printed; the magic returns ``None``."""


class UsageParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises ``UsageError`` (one line) instead of exiting."""

    def __init__(self, sub: str, **kwargs: Any) -> None:
        self.sub = sub
        super().__init__(prog=f"%atlas {sub}", add_help=True, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        raise UsageError(f"%atlas {self.sub}: {text} (see %atlas {self.sub} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message.rstrip())  # noqa: T201 - argparse's own --help/--version text
        raise HelpShown


def _out(p: UsageParser) -> None:
    p.add_argument("-o", "--out", metavar="NAME",
                   help="also store the result in the notebook variable NAME")


def _provider(p: UsageParser, *, many: bool = False) -> None:
    if many:
        p.add_argument("--provider", "-p", action="append", metavar="P",
                       help="provider name (repeatable; 'all' for every provider)")
    else:
        p.add_argument("--provider", "-p", metavar="P",
                       help="provider name (default: AtlasMagics.default_provider, then config)")


def _providers() -> UsageParser:
    p = UsageParser("providers", description="Every provider, its capabilities and where its "
                    "key comes from (never the key itself).")
    _out(p)
    return p


def _login() -> UsageParser:
    p = UsageParser("login", description="Type a provider's API key at a hidden prompt "
                    "(getpass). It is kept in memory for this kernel, or written to the "
                    "config file with --save. Never put a key on the magic line: IPython "
                    "history keeps every line.")
    p.add_argument("provider", metavar="PROVIDER", help="runpod, lambda_labs, vast or fly")
    p.add_argument("--save", action="store_true",
                   help="also write the key to the config file (mode 0600)")
    p.add_argument("--forget", action="store_true",
                   help="drop the in-memory key (and the saved one with --save)")
    return p


def _gpus() -> UsageParser:
    p = UsageParser("gpus", description="One cross-provider GPU price table, cheapest first. "
                    "Catalogs are cached (AtlasMagics.catalog_ttl seconds).")
    p.add_argument("--gpu", "-g", action="append", metavar="G",
                   help="canonical GPU name or family, e.g. h100 (repeatable)")
    p.add_argument("--max-price", type=float, metavar="USD",
                   help="only offers at or below this $/h (the spot price with --spot)")
    _provider(p, many=True)
    p.add_argument("--spot", action="store_true",
                   help="only offers with a spot price, sorted by it")
    p.add_argument("--refresh", action="store_true", help="refetch the catalogs now")
    p.add_argument("--limit", type=int, metavar="N", help="show the N cheapest rows")
    p.add_argument("--panel", action="store_true",
                   help="open the CatalogPanel (filter, sort, pick a row to spawn)")
    _out(p)
    return p


def _spawn() -> UsageParser:
    p = UsageParser("spawn", description="Spawn a compute, tracked by the orchestrator "
                    "(idle TTL, terminated with the kernel). Flags, or a YAML/JSON spec (or "
                    "$var) in the cell body; flags win over the body.")
    _provider(p)
    p.add_argument("--gpu", "-g", metavar="G", help="canonical GPU name; 'cpu' for none")
    p.add_argument("--gpu-count", type=int, metavar="N")
    p.add_argument("--image", "-i", metavar="IMAGE")
    p.add_argument("--port", action="append", metavar="PORT",
                   help="8000/http or 22/tcp (repeatable)")
    p.add_argument("--auth", choices=("none", "bearer", "signed_url"))
    p.add_argument("--idle-ttl", type=float, metavar="MIN",
                   help="terminate after MIN idle minutes (default AtlasMagics.idle_ttl)")
    p.add_argument("--name", metavar="NAME")
    p.add_argument("--spot", action="store_true", default=None)
    p.add_argument("--max-price", type=float, metavar="USD", help="cap in $/h")
    p.add_argument("--region", action="append", metavar="R", help="region hint (repeatable)")
    p.add_argument("--untracked", action="store_true",
                   help="plain spawn: no idle TTL and not terminated with the kernel")
    p.add_argument("--no-wait", action="store_true", help="return before it is ready")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="seconds to wait until ready (default 600)")
    p.add_argument("--panel", action="store_true", help="open the SpawnPanel instead")
    _out(p)
    return p


def _ls() -> UsageParser:
    p = UsageParser("ls", description="Computes in your accounts: tracked ones first, with "
                    "their $/h, accrued $ and idle time.")
    _provider(p, many=True)
    p.add_argument("--status", metavar="S", help="running, stopped, provisioning, ...")
    p.add_argument("--tracked", action="store_true", help="only computes this kernel tracks")
    _out(p)
    return p


def _ids(sub: str, help_: str) -> Callable[[], UsageParser]:
    def build() -> UsageParser:
        p = UsageParser(sub, description=help_)
        p.add_argument("ids", nargs="+", metavar="ID", help="compute id (or a $compute)")
        _provider(p)
        _out(p)
        return p

    return build


def _run() -> UsageParser:
    p = UsageParser("run", description="Submit a serverless job. The cell body is the job "
                    "input: JSON, YAML or $var. Ctrl-C cancels the remote job.")
    _provider(p)
    p.add_argument("--endpoint", "-e", required=True, metavar="EP")
    p.add_argument("input", nargs="?", metavar="INPUT",
                   help="the input as $var, when there is no cell body")
    p.add_argument("--sync", action="store_true", help="wait for the result")
    p.add_argument("--timeout", type=float, metavar="S", help="with --sync: give up after S s")
    p.add_argument("--stream", action="store_true",
                   help="stream the output into a live DataFrame")
    p.add_argument("--panel", action="store_true", help="open the JobPanel instead")
    _out(p)
    return p


def _stream() -> UsageParser:
    p = UsageParser("stream", description="Stream a job's output into a DataFrame that grows "
                    "live; returns the complete frame. Ctrl-C cancels the remote job.")
    p.add_argument("job", metavar="JOB", help="a job id or a $job")
    p.add_argument("--endpoint", "-e", metavar="EP", help="needed with a bare job id")
    _provider(p)
    _out(p)
    return p


def _jobs() -> UsageParser:
    p = UsageParser("jobs", description="This session's jobs, with status, timings and output.")
    p.add_argument("--no-refresh", action="store_true",
                   help="do not poll unfinished jobs for their current state")
    _out(p)
    return p


def _logs() -> UsageParser:
    p = UsageParser("logs", description="Live Fly.io app logs in a LogTail panel (bounded ring "
                    "buffer, pause/resume, filters), or the latest lines with --no-follow.")
    p.add_argument("app", metavar="APP")
    p.add_argument("--region", metavar="R")
    p.add_argument("--instance", metavar="ID")
    p.add_argument("--level", metavar="L", help="minimum level shown, e.g. warn")
    p.add_argument("--grep", metavar="TEXT", help="only lines containing TEXT")
    p.add_argument("--lines", type=int, default=1000, metavar="N",
                   help="ring buffer size (default 1000)")
    p.add_argument("--no-follow", action="store_true",
                   help="print what arrives within --wait seconds, then stop")
    p.add_argument("--wait", type=float, default=3.0, metavar="S")
    _out(p)
    return p


def _deploy() -> UsageParser:
    p = UsageParser("deploy", description="Run `fly deploy --remote-only` for an app folder "
                    "and stream its output.")
    p.add_argument("app_dir", metavar="APP_DIR", help="the folder holding fly.toml")
    p.add_argument("--project", metavar="PATH", default=".",
                   help="project root APP_DIR must stay inside (default: cwd)")
    p.add_argument("--ticket", metavar="ID", help="deploy id to follow it by (default: new)")
    p.add_argument("--background", action="store_true",
                   help="return at once with a panel following the deploy")
    _out(p)
    return p


def _dashboard() -> UsageParser:
    p = UsageParser("dashboard", description="Live table of tracked computes: status, $/h, "
                    "accrued $, idle time; Touch (and Stop/Terminate when allowed).")
    p.add_argument("--allow-destructive-actions", action="store_true",
                   help="show Stop and Terminate buttons (each asks to confirm)")
    p.add_argument("--refresh", type=float, metavar="S",
                   help="seconds between refreshes (default AtlasMagics.refresh_interval)")
    _out(p)
    return p


def _sandbox() -> UsageParser:
    p = UsageParser("sandbox", description="Point this kernel at the local emulated clouds "
                    "(no account needed), or back at the real ones.")
    p.add_argument("action", choices=("on", "off", "status"), nargs="?", default="status")
    p.add_argument("--url", metavar="URL", help="attach to a sandbox already running there")
    return p


def _reap() -> UsageParser:
    p = UsageParser("reap", description="Terminate atlas-named computes that no live session "
                    "tracks (orphans of dead kernels). Never touches other resources.")
    p.add_argument("--dry-run", action="store_true", help="only report what would be done")
    _provider(p, many=True)
    _out(p)
    return p


def _doctor() -> UsageParser:
    p = UsageParser("doctor", description="Versions (and an ipywidgets/jupyterlab_widgets "
                    "mismatch), the config file, the sandbox and which keys are present.")
    _out(p)
    return p


SUBCOMMANDS: dict[str, tuple[Callable[[], UsageParser], str]] = {
    "providers": (_providers, "providers, capabilities, where each key comes from"),
    "login": (_login, "type a provider key at a hidden prompt (--save to keep it)"),
    "gpus": (_gpus, "cross-provider GPU price table (--panel for the picker)"),
    "spawn": (_spawn, "spawn a tracked compute (flags or a YAML/JSON cell)"),
    "ls": (_ls, "computes with status, $/h, accrued $, idle time"),
    "touch": (_ids("touch", "Mark tracked computes active (resets the idle timer)."),
              "reset the idle timer of tracked computes"),
    "stop": (_ids("stop", "Stop computes, keeping their disks (stop_start providers)."),
             "stop computes (keep the disk)"),
    "start": (_ids("start", "Start stopped computes."), "start stopped computes"),
    "terminate": (_ids("terminate", "Terminate computes for good (idempotent)."),
                  "terminate computes"),
    "run": (_run, "submit a serverless job (cell body = input)"),
    "stream": (_stream, "stream a job into a live DataFrame"),
    "jobs": (_jobs, "this session's jobs"),
    "logs": (_logs, "live Fly.io app logs"),
    "deploy": (_deploy, "fly deploy with streamed output"),
    "dashboard": (_dashboard, "live table of tracked computes"),
    "sandbox": (_sandbox, "use the local emulated clouds: on | off | status"),
    "reap": (_reap, "terminate orphaned atlas computes (--dry-run)"),
    "doctor": (_doctor, "versions, config, keys present"),
}
"""Subcommand -> (parser builder, one-line summary), in help order."""

_cache: dict[str, UsageParser] = {}


def parser_for(sub: str) -> UsageParser:
    """The (cached) parser of ``sub``; ``UsageError`` naming the known subcommands."""
    if sub not in SUBCOMMANDS:
        import difflib

        close = difflib.get_close_matches(sub, SUBCOMMANDS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UsageError(f"%atlas: unknown subcommand {sub!r}; {hint}"
                         f"use one of: {', '.join(SUBCOMMANDS)}")
    if sub not in _cache:
        _cache[sub] = SUBCOMMANDS[sub][0]()
    return _cache[sub]


def parse(sub: str, args: Sequence[str]) -> argparse.Namespace:
    """Parse ``args`` for ``sub``; ``UsageError`` on bad input, ``HelpShown`` after --help."""
    return parser_for(sub).parse_args(list(args))


def overview() -> str:
    """The text ``%atlas`` and ``%atlas --help`` print."""
    width = max(len(s) for s in SUBCOMMANDS)
    lines = ["%atlas SUBCOMMAND [args]   (cell form: %%atlas SUBCOMMAND, body = spec or input)", ""]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines += ["", "%atlas SUB --help shows a subcommand's flags. -o NAME stores the result;",
              "$name passes a notebook variable by reference; a trailing ; hides the output.",
              "Keys never go on the magic line: use %atlas login PROVIDER."]
    return "\n".join(lines)
