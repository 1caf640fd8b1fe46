"""The detached reaper: ``atlas-nb reap --only ...`` in its own session, for what a shutdown
could not end within its deadline.

A kernel has about 2 s to shut down, and a cloud answering 429 with ``Retry-After: 5`` or
500 for a while needs longer. So the shutdown writes what is left as ``terminate_failed``
and hands it to a process of its own (``start_new_session=True``: no signal sent to the
kernel's process group, no kill of the kernel, reaches it) that retries with backoff for
a few minutes (``RETRY_FOR_S``) and then stops; anything still open after that is left to
the next ``atlas-nb reap`` or orchestrator start.

Keys never go on its command line (``ps`` shows argv to every user): the environment is
inherited, and keys that live only in this process (``api_key=`` per call, a session
login) go as JSON on its stdin (``--keys-from-stdin``). Its output goes to
``<data dir>/reap-<timestamp>-<pid>.log`` (0600).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["RETRY_FOR_S", "launch", "log_files"]

RETRY_FOR_S = 300.0
"""How long the detached reaper keeps retrying (its backoff is 1 s doubling to 60 s)."""

_log = logging.getLogger("atlas_nb.orchestrator")


def launch(only: Iterable[str], *, data_dir: Path, keys: Mapping[str, str] | None = None,
           sandbox_url: str | None = None, retry_for_s: float = RETRY_FOR_S
           ) -> subprocess.Popen[bytes] | None:
    """Start ``atlas-nb reap --only ID... --retry-for S`` detached; the process, or ``None``
    when it could not be started (logged: the ledger still holds the entries).

    ``only``: compute ids or ledger names. ``keys``: provider -> API key, written to its
    stdin. ``sandbox_url``: the sandbox this process talks to (it may have been attached
    in process, not through ``ATLAS_NB_SANDBOX``).
    """
    wanted = sorted(set(only))
    if not wanted:
        return None
    env = dict(os.environ)
    if sandbox_url:
        env["ATLAS_NB_SANDBOX"] = sandbox_url
    env["ATLAS_NB_DATA_DIR"] = str(data_dir)
    argv = [sys.executable, "-m", "atlas_nb.cli", "reap", "--retry-for", f"{retry_for_s:g}",
            "--keys-from-stdin", "--only", *wanted]
    stamp = time.strftime("%Y%m%dT%H%M%S")
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = data_dir / f"reap-{stamp}-{os.getpid()}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, close_fds=True,
                                    start_new_session=True, cwd=str(data_dir))
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(dict(keys or {})).encode())
            proc.stdin.close()
        except OSError:  # it died at once: its log says why
            pass
    except (OSError, subprocess.SubprocessError) as exc:
        _log.warning("could not start the detached reaper (%s); `atlas-nb reap` will end %s",
                     exc, ", ".join(wanted))
        return None
    _log.info("detached reaper pid %d for %s (log: %s)", proc.pid, ", ".join(wanted), path)
    return proc


def log_files(data_dir: Path) -> list[Path]:
    """The detached reapers' logs in ``data_dir``, oldest first."""
    return sorted(data_dir.glob("reap-*.log"))
