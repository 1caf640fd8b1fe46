"""``fly deploy --remote-only``, streamed line by line, with timeouts that really kill it.

``stream_deploy(project_path, app_dir, ticket_id)`` runs the deploy and returns its
``DeployResult``; ``start_deploy`` does the same on a background thread and returns
a ``Deployment`` handle; ``subscribe_deploy(ticket_id, callback)`` follows either.

* ``fly`` then ``flyctl`` is looked up on ``path`` (default: ``env["PATH"]``, else the
  process PATH); neither is a clear ``Unsupported`` error.
* ``app_dir`` (relative to ``project_path``, or absolute) must resolve, symlinks
  included, to a folder inside ``project_path``: anything else is refused.
* The CLI runs in a new process group (``start_new_session=True``), stdin closed,
  stderr merged into stdout. Output is split into whole lines on ``\\n`` and on
  ``\\r`` progress updates (``output_lines``); the last ``max_lines`` are kept.
* Two timeouts (``DeployLimits``): ``inactivity_timeout_s`` (default 5 min, reset by
  any output) and ``max_timeout_s`` (default 30 min). Either one SIGTERMs the **whole
  process group**, waits ``kill_grace_s``, then SIGKILLs it; stray children left by a
  leader that exited are killed too.
* The CLI gets ``FLY_API_TOKEN``: ``token=`` if given; else, unless ``env`` already
  carries ``FLY_API_TOKEN``/``FLY_ACCESS_TOKEN``, the Fly token chain's token for the
  app in ``fly.toml`` (``purpose="deploy"``: never a read-only minted token); when the
  chain has none, flyctl uses its own login.
* Every subscriber receives a final ``DeployResult`` (ok / exit code n / timeout /
  cancelled), which is also returned.

Telemetry: ``fly.deploy.start`` ``{ticket_id}`` and ``fly.deploy.finish``
``{ticket_id, status, exit_code, timeout, duration_s, lines}``.
"""

from __future__ import annotations

import codecs
import os
import selectors
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Unpack

from ... import telemetry
from ...errors import AtlasError, Unsupported, ValidationError
from .. import flyctl
from ..tokens import ENV_VARS, default_chain
from .limits import DeployLimitOptions, DeployLimits
from .output_lines import LineSplitter
from .project import app_name, resolve_app_dir
from .tickets import (
    DeployCallback,
    DeployResult,
    DeployStatus,
    Ticket,
    check_ticket,
    subscribe_deploy,
    ticket,
)

__all__ = ["Deployment", "start_deploy", "stream_deploy", "subscribe_deploy"]

_POLL_S = 0.2  # how often the reader looks at the leader's exit and at cancel()
_DRAIN_S = 0.5  # after the leader exits, how long stray children may hold the pipe


class Deployment:
    """One ``fly deploy`` run (see the module docstring). ``run()`` blocks; ``start()`` doesn't."""

    def __init__(
        self,
        project_path: str | os.PathLike[str],
        app_dir: str | os.PathLike[str] = ".",
        ticket_id: str | None = None,
        *,
        args: Sequence[str] = (),
        path: str | None = None,
        env: Mapping[str, str] | None = None,
        token: str | None = None,
        limits: DeployLimits | None = None,
        **limit_options: Unpack[DeployLimitOptions],
    ) -> None:
        self.limits = (limits or DeployLimits()).with_options(**limit_options)
        self.ticket_id = check_ticket(ticket_id) if ticket_id is not None else uuid.uuid4().hex
        self.app_dir = resolve_app_dir(project_path, app_dir)
        binary = flyctl.find(path, env)
        if binary is None:
            raise Unsupported(
                "the Fly CLI is not installed: neither `fly` nor `flyctl` is on PATH; install "
                "it (https://fly.io/docs/flyctl/install/) or pass path=", provider="fly")
        self.command: tuple[str, ...] = (binary, "deploy", "--remote-only", *args)
        child_env = dict(os.environ if env is None else env)
        if not token and not any(child_env.get(var) for var in ENV_VARS):
            token = _chain_token(self.app_dir)
        if token:
            child_env["FLY_API_TOKEN"] = token
        self._env = child_env
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._ticket: Ticket | None = None
        self._launched = False

    def __repr__(self) -> str:
        state = self.result.status if self.result else ("running" if self._ticket else "new")
        return f"Deployment(ticket_id={self.ticket_id!r}, {state})"

    @property
    def result(self) -> DeployResult | None:
        """The result once the deploy is over."""
        return self._ticket.result if self._ticket else None

    def subscribe(self, callback: DeployCallback, *, backfill: bool = True) -> None:
        """Follow this run (like ``subscribe_deploy``, but never an earlier run's ticket)."""
        if not callable(callback):
            raise ValidationError("callback must be callable: callback(event) -> None")
        self._ensure_ticket().add(callback, backfill=backfill)

    def cancel(self) -> None:
        """Kill the deploy's process group; the result's status becomes ``cancelled``."""
        self._cancel.set()

    def start(self) -> Deployment:
        """Run on a daemon thread; returns ``self`` (use ``wait()``)."""
        self._launch()
        self._thread = threading.Thread(target=self._run, name=f"atlas-fly-deploy-{self.ticket_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> DeployResult | None:
        """Block until the deploy ends (or ``timeout``); its result or ``None``."""
        if self._ticket is None:
            raise ValidationError("this deploy was never started; call start() or run()")
        self._ticket.done.wait(timeout)
        return self._ticket.result

    def run(self) -> DeployResult:
        """Run in this thread and return the result."""
        self._launch()
        return self._run()

    # -- internals ---------------------------------------------------------------------
    def _ensure_ticket(self) -> Ticket:
        if self._ticket is None:
            self._ticket = ticket(self.ticket_id, max_lines=self.limits.max_lines, new_run=True)
        return self._ticket

    def _launch(self) -> None:
        if self._launched:
            raise ValidationError(f"deploy {self.ticket_id!r} was already started")
        self._launched = True
        tk = self._ensure_ticket()
        with tk.lock:
            if tk.running or tk.result is not None:
                raise ValidationError(f"deploy ticket {self.ticket_id!r} is already in use; "
                                      "pick another ticket_id")
            tk.running = True

    def _run(self) -> DeployResult:
        assert self._ticket is not None
        tk = self._ticket
        started = time.monotonic()
        telemetry.emit("fly.deploy.start", {"ticket_id": self.ticket_id})
        try:
            proc = subprocess.Popen(
                list(self.command), cwd=self.app_dir, env=self._env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            tk.line(f"cannot run {self.command[0]}: {exc.strerror or type(exc).__name__}", False)
            return self._finish(tk, self._result("failed", None, started, None))
        status, timeout_kind = self._pump(proc, tk, started)
        if status is None:
            code = proc.wait()
            flyctl.reap_group(proc.pid)  # children a finished leader left behind
            status = "ok" if code == 0 else "failed"
        else:
            flyctl.kill_group(proc, self.limits.kill_grace_s)
        assert proc.stdout is not None
        proc.stdout.close()
        exit_code = proc.returncode if status in ("ok", "failed") else None
        return self._finish(tk, self._result(status, exit_code, started, timeout_kind))

    def _pump(self, proc: subprocess.Popen[bytes], tk: Ticket, started: float
              ) -> tuple[DeployStatus | None, str | None]:
        """Read output until EOF; ``(None, None)``, or why the group must be killed."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        splitter = LineSplitter()
        last_output = started
        leader_exit: float | None = None
        verdict: tuple[DeployStatus | None, str | None] = (None, None)
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                idle_left = last_output + self.limits.inactivity_timeout_s - now
                total_left = started + self.limits.max_timeout_s - now
                if total_left <= 0:
                    verdict = ("timeout", "max")
                    break
                if idle_left <= 0:
                    verdict = ("timeout", "inactivity")
                    break
                if self._cancel.is_set():
                    verdict = ("cancelled", None)
                    break
                if proc.poll() is not None:
                    leader_exit = leader_exit or now
                    if now - leader_exit > _DRAIN_S:
                        break  # stray children hold the pipe open; reap_group ends them
                if not sel.select(min(idle_left, total_left, _POLL_S)):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                last_output = time.monotonic()
                for text, progress in splitter.feed(decoder.decode(chunk)):
                    tk.line(text, progress)
        for text, progress in (*splitter.feed(decoder.decode(b"", final=True)),
                               *splitter.flush()):
            tk.line(text, progress)
        return verdict

    def _result(self, status: DeployStatus, exit_code: int | None, started: float,
                timeout_kind: str | None) -> DeployResult:
        tk = self._ticket
        assert tk is not None
        with tk.lock:
            output = tuple(line.line for line in tk.lines)
            total = tk.total
        return DeployResult(
            ticket_id=self.ticket_id, status=status, exit_code=exit_code,
            duration_s=time.monotonic() - started, output=output, lines_total=total,
            lines_dropped=max(0, total - len(output)),
            timeout="max" if timeout_kind == "max" else
            "inactivity" if timeout_kind == "inactivity" else None,
            command=self.command,
        )

    def _finish(self, tk: Ticket, result: DeployResult) -> DeployResult:
        tk.finish(result)
        telemetry.emit("fly.deploy.finish", {
            "ticket_id": self.ticket_id, "status": result.status, "exit_code": result.exit_code,
            "timeout": result.timeout, "duration_s": result.duration_s,
            "lines": result.lines_total,
        })
        return result


def start_deploy(
    project_path: str | os.PathLike[str],
    app_dir: str | os.PathLike[str] = ".",
    ticket_id: str | None = None,
    *,
    callback: DeployCallback | None = None,
    args: Sequence[str] = (),
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    token: str | None = None,
    limits: DeployLimits | None = None,
    **limit_options: Unpack[DeployLimitOptions],
) -> Deployment:
    """Like ``stream_deploy`` but on a background thread: returns the ``Deployment``
    (``wait()``, ``cancel()``, ``result``)."""
    deployment = Deployment(project_path, app_dir, ticket_id, args=args, path=path, env=env,
                            token=token, limits=limits, **limit_options)
    if callback is not None:
        deployment.subscribe(callback)
    return deployment.start()


def stream_deploy(
    project_path: str | os.PathLike[str],
    app_dir: str | os.PathLike[str] = ".",
    ticket_id: str | None = None,
    *,
    callback: DeployCallback | None = None,
    args: Sequence[str] = (),
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    token: str | None = None,
    limits: DeployLimits | None = None,
    **limit_options: Unpack[DeployLimitOptions],
) -> DeployResult:
    """Run ``fly deploy --remote-only`` in ``app_dir`` and return its ``DeployResult``.

    ``callback`` (and anyone who called ``subscribe_deploy(ticket_id, ...)``) gets each
    ``DeployLine`` and then the result. ``path`` is the PATH searched for ``fly``;
    ``token`` is passed to the CLI as ``FLY_API_TOKEN`` (default: the token chain's, see
    the module docstring). ``limits`` (or its fields as keywords, e.g.
    ``max_timeout_s=600``) bound the run: see ``DeployLimits``.

    Raises:
        ValidationError: ``app_dir`` leaves ``project_path`` or does not exist.
        Unsupported: neither ``fly`` nor ``flyctl`` is installed.
    """
    deployment = Deployment(project_path, app_dir, ticket_id, args=args, path=path, env=env,
                            token=token, limits=limits, **limit_options)
    if callback is not None:
        deployment.subscribe(callback)
    return deployment.run()


def _chain_token(app_dir: Path) -> str | None:
    """The token chain's deploy token for the app in ``app_dir``, or ``None`` (flyctl decides)."""
    try:
        return default_chain().get(app_name(app_dir), purpose="deploy")
    except AtlasError:
        return None
