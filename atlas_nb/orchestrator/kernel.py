"""Kernel scope: terminate every tracked compute when the kernel or process ends.

Installed when an orchestrator first tracks something (never on ``import atlas_nb``):

1. **Jupyter shutdown or restart.** ``jupyter_client`` sends ``shutdown_request`` on
   the control channel, waits ~2.5 s, sends SIGTERM, waits ~2.5 s more, then SIGKILL.
   We wrap the running ipykernel's ``do_shutdown`` (called on the control thread as
   soon as the request arrives) to terminate tracked computes *in parallel* within
   ``shutdown_deadline_s`` (2 s), then call the original. A restart is the same
   request with ``restart=True`` and gets the same cleanup.
2. **atexit**, the fallback (and the path outside Jupyter): sequential, no new thread
   (an ``atexit`` handler cannot start one on Python >= 3.12), within 10 s.
3. **SIGTERM and SIGHUP** (a closed terminal, a dropped ssh session), each only where
   its handler is still the default: run the cleanup, restore the default handler and
   re-send the signal, so the process still dies of it. We do not turn it into
   ``sys.exit``: inside a running cell IPython would swallow ``SystemExit``.
4. **A multiprocessing worker** started by fork ends with ``os._exit``, which skips
   ``atexit``: there the cleanup also runs as a ``multiprocessing.util.Finalize``.

kill -9, the OOM killer or a culled container run nothing: the ledger then lets the
next orchestrator start (or ``atlas-nb reap``) find and terminate what was left.

After ``fork()`` the child inherits the hooks (signal handlers and ``atexit`` survive a
fork) but not the parent's computes: ``os.register_at_fork`` empties the target list in
the child, and every orchestrator resets itself there (``Orchestrator._after_fork``), so
the child's hooks only ever end what the child spawned.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .orchestrator import Orchestrator

__all__ = ["cleanup_all", "forget", "install", "installed", "running_kernel"]

_log = logging.getLogger("atlas_nb.orchestrator")
_lock = threading.Lock()
# Strong references: an orchestrator nobody else holds must still be cleaned up at exit.
_targets: list[Orchestrator] = []
_installed: set[str] = set()
_pid = 0
_MARK = "_atlas_nb_cleanup"
# SIGHUP: a closed terminal or a dropped ssh session ends the process like SIGTERM does.
_SIGNALS: tuple[tuple[int, str], ...] = (
    (signal.SIGTERM, "sigterm"),
    *([(signal.SIGHUP, "sighup")] if hasattr(signal, "SIGHUP") else []),
)
ATEXIT_DEADLINE_S = 10.0


def installed() -> frozenset[str]:
    """Which hooks this process has: ``atexit``, ``sigterm``, ``sighup``, ``kernel``,
    ``multiprocessing``."""
    with _lock:
        return frozenset(_installed) if _pid == os.getpid() else frozenset()


def running_kernel() -> Any:
    """The ipykernel ``Kernel`` this process serves, or ``None`` (imports nothing new)."""
    app_module = sys.modules.get("ipykernel.kernelapp")
    if app_module is None:
        return None
    app_cls = getattr(app_module, "IPKernelApp", None)
    try:
        if app_cls is None or not app_cls.initialized():
            return None
        return getattr(app_cls.instance(), "kernel", None)
    except Exception:
        return None


def install(orchestrator: Orchestrator) -> frozenset[str]:
    """Register ``orchestrator`` for cleanup and install the hooks not yet installed."""
    global _pid
    with _lock:
        if _pid != os.getpid():  # first install in this process
            _pid = os.getpid()
        if orchestrator not in _targets:
            _targets.append(orchestrator)
        if "atexit" not in _installed:
            atexit.register(_at_exit)
            _installed.add("atexit")
        for signum, name in _SIGNALS:
            if name not in _installed and _install_signal(signum):
                _installed.add(name)
        if "kernel" not in _installed and _wrap_kernel(running_kernel()):
            _installed.add("kernel")
        if "multiprocessing" not in _installed and _finalize_in_worker():
            _installed.add("multiprocessing")
        return frozenset(_installed)


def _after_fork_in_child() -> None:
    """The child of a fork: none of the parent's orchestrators are ours to clean up.

    The parent's hooks stay installed (a fork keeps signal handlers and ``atexit``), so
    ``_installed`` stays as is, except the multiprocessing finalizer, which a worker must
    register for itself. The lock is new: another thread may have held it at the fork."""
    global _lock, _pid
    _lock = threading.Lock()
    _targets.clear()
    _installed.discard("multiprocessing")
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _finalize_in_worker() -> bool:
    """In a multiprocessing child, also clean up from its exit function (fork-started
    workers leave by ``os._exit``, which skips ``atexit``)."""
    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return False
    from multiprocessing import util

    util.Finalize(None, _at_exit, exitpriority=100)
    return True


def forget(orchestrator: Orchestrator) -> None:
    """Stop cleaning up after ``orchestrator`` (it was shut down)."""
    with _lock:
        if orchestrator in _targets:
            _targets.remove(orchestrator)


def cleanup_all(reason: str, *, parallel: bool) -> dict[str, list[str]]:
    """Shut every registered orchestrator down within one shared deadline (the smallest
    ``shutdown_deadline_s``, or 10 s for the sequential atexit pass); returns session id ->
    the ids left behind (they stay in the ledger for the next reap)."""
    if _pid != os.getpid():
        return {}  # a forked child must not terminate its parent's computes
    with _lock:
        targets = list(_targets)
    if not targets:
        return {}
    budget = (min(o.settings.shutdown_deadline_s for o in targets) if parallel
              else ATEXIT_DEADLINE_S)
    end = time.monotonic() + budget
    left: dict[str, list[str]] = {}
    for orch in targets:
        try:
            left[orch.session_id] = orch.shutdown(
                reason, parallel=parallel, deadline_s=max(0.0, end - time.monotonic()))
        except Exception:  # one orchestrator's failure must not spare the others
            _log.exception("orchestrator cleanup (%s) failed", reason)
    return left


def _at_exit() -> None:
    cleanup_all("atexit", parallel=False)


def _wrap_kernel(kernel: Any) -> bool:
    if kernel is None:
        return False
    original = getattr(kernel, "do_shutdown", None)
    if original is None:
        return False
    if getattr(original, _MARK, False):
        return True

    def do_shutdown(restart: bool) -> Any:
        try:
            cleanup_all("kernel_restart" if restart else "kernel_shutdown", parallel=True)
        except Exception:
            _log.exception("orchestrator kernel-shutdown cleanup failed")
        return original(restart)  # may be a coroutine: ipykernel awaits it

    setattr(do_shutdown, _MARK, True)
    kernel.do_shutdown = do_shutdown
    return True


def _install_signal(signum: int) -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False  # signal handlers can only be set from the main thread
    try:
        current = signal.getsignal(signum)
        if current is _on_signal:
            return True  # inherited through a fork
        if current is not signal.SIG_DFL:
            return False  # someone else handles it (or ignores it, as nohup does): leave it
        signal.signal(signum, _on_signal)
    except (ValueError, OSError):
        return False
    return True


def _on_signal(signum: int, frame: Any) -> None:
    try:
        cleanup_all(signal.Signals(signum).name.lower(), parallel=True)
    finally:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
