"""Who owns a ledger entry: a process (pid + start time) on a host, and whether it still lives.

A pid alone cannot prove a process dead: pids are reused. So an owner is recorded
as ``(host, pid, start token)`` where the start token is the boot id plus the
process start time (Linux ``/proc``; ``psutil`` elsewhere when installed). An
owner is *provably dead* when it runs on this host and its pid is gone, is a
zombie, or now belongs to a process that started at another time (or in another
boot). Owners on other hosts are never provably dead: their liveness is unknown.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = ["Owner", "current", "is_alive", "start_token"]


@dataclass(frozen=True)
class Owner:
    """One process: ``host``, ``pid`` and ``start`` (``None`` where it cannot be read)."""

    host: str
    pid: int
    start: str | None


@cache
def _host() -> str:
    return socket.gethostname()


@cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """``(state, starttime)`` from ``/proc/<pid>/stat``; ``None`` when there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except FileNotFoundError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = text[text.rfind(")") + 2:].split()
    return fields[0], fields[19]


def _psutil_start(pid: int) -> tuple[bool, str | None]:
    try:  # optional (not a dependency): only where /proc is missing, e.g. macOS
        psutil: Any = importlib.import_module("psutil")
    except ImportError:
        return _exists(pid), None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False, None
        return True, f"{proc.create_time():.3f}"
    except psutil.NoSuchProcess:
        return False, None
    except psutil.Error:
        return True, None


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return True
    return True


def _probe(pid: int) -> tuple[bool, str | None]:
    """``(alive, start token)`` of ``pid`` on this host; zombies count as dead."""
    if pid <= 0:
        return False, None
    if sys.platform.startswith("linux") and os.path.isdir("/proc/self"):
        stat = _proc_stat(pid)
        if stat is None:
            return False, None
        state, started = stat
        if state in ("Z", "X", "x"):
            return False, None
        return True, f"{_boot_id()}:{started}"
    return _psutil_start(pid)


def start_token(pid: int) -> str | None:
    """The start token of a live ``pid`` on this host (``None`` if unknown or gone)."""
    return _probe(pid)[1]


@cache
def _current(pid: int) -> Owner:
    return Owner(host=_host(), pid=pid, start=start_token(pid))


def current() -> Owner:
    """This process (recomputed after a fork, since the pid changes)."""
    return _current(os.getpid())


def is_alive(owner: Owner) -> bool | None:
    """``False`` when provably dead, ``True`` when alive here, ``None`` for another host."""
    if owner.host != _host():
        return None
    me = current()
    if owner.pid == me.pid:
        return owner.start is None or me.start is None or owner.start == me.start
    alive, token = _probe(owner.pid)
    if not alive:
        return False
    # Same pid, another start time: the pid was reused by an unrelated process.
    return not (owner.start and token and owner.start != token)
