"""Finding and running the ``fly`` CLI (flyctl), and killing what it started.

Every flyctl process runs in its own process group (``start_new_session=True``)
so a timeout can kill the whole group: ``fly deploy`` starts helpers (builders,
proxies) that would outlive a kill of the leader alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["NAMES", "CliResult", "find", "kill_group", "run_capture"]

NAMES: tuple[str, ...] = ("fly", "flyctl")
"""Executable names tried, in order (flyctl installs both; some packages only one)."""


def find(path: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The first of ``fly``/``flyctl`` on ``path`` (else ``env["PATH"]``, else ``$PATH``)."""
    search = path if path is not None else (env or os.environ).get("PATH", os.defpath)
    for name in NAMES:
        found = shutil.which(name, path=search)
        if found:
            return found
    return None


def kill_group(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM the process group of ``proc``, wait ``grace_s``, then SIGKILL what is left.

    ``proc`` must have been started with ``start_new_session=True`` (its pid is the
    group id). SIGKILL goes to the group even when the leader exited in time, so a
    child that ignores SIGTERM still dies.
    """
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=max(0.0, grace_s))
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()


def reap_group(pgid: int) -> None:
    """SIGKILL whatever is left of a finished process group (a leader's stray children)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass(frozen=True)
class CliResult:
    """The outcome of one flyctl run: ``stdout`` only (stderr is never mixed in)."""

    returncode: int | None
    stdout: str
    timed_out: bool = False

    def __repr__(self) -> str:
        # stdout may hold a token: never show it.
        return f"CliResult(returncode={self.returncode}, timed_out={self.timed_out})"


def run_capture(
    argv: Sequence[str],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    max_bytes: int = 1 << 20,
) -> CliResult:
    """Run ``argv`` with no stdin, read stdout (stderr is discarded), kill its group on timeout.

    Raises ``OSError`` when the executable cannot be started (missing, not executable).
    """
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # warnings and update notices must not become the token
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc, grace_s=0.5)
        with contextlib.suppress(Exception):
            proc.communicate(timeout=1)
        return CliResult(None, "", timed_out=True)
    finally:
        if proc.poll() is None:  # an unexpected exception while waiting
            kill_group(proc, grace_s=0.0)
    reap_group(proc.pid)
    return CliResult(proc.returncode, out[:max_bytes].decode("utf-8", "replace"))
