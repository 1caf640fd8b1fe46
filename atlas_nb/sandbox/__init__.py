"""The sandbox: local, wire-faithful emulators of RunPod, Fly.io, Lambda Cloud and Vast.ai.

``with atlas_nb.sandbox.start() as sb:`` runs every emulated cloud on a loopback
port and points all providers at it with sandbox keys. ``attach(url)`` (or the
``ATLAS_NB_SANDBOX`` env var) points this process at a sandbox running elsewhere.
This module stays light: the server itself is imported only by ``start()``.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import Sandbox

__all__ = ["active_url", "attach", "detach", "sandbox_key", "start"]

_lock = threading.Lock()
_attached: list[str] = []


def sandbox_key(provider: str) -> str:
    """The API key the sandbox accepts for ``provider`` (not a secret)."""
    return f"sandbox-{provider}-key"


def active_url() -> str | None:
    """The URL of the sandbox this process talks to, or ``None``."""
    with _lock:
        if _attached:
            return _attached[-1]
    url = os.environ.get("ATLAS_NB_SANDBOX")
    return url.rstrip("/") if url else None


def attach(url: str) -> None:
    """Point every provider in this process at the sandbox at ``url``."""
    with _lock:
        _attached.append(url.rstrip("/"))


def detach(url: str | None = None) -> None:
    """Undo ``attach`` (the most recent one, or the one for ``url``)."""
    with _lock:
        if not _attached:
            return
        if url is None:
            _attached.pop()
        elif url.rstrip("/") in _attached:
            _attached.remove(url.rstrip("/"))


def start(**kwargs: Any) -> Sandbox:
    """Start the emulated clouds on loopback in a background thread (a context manager)."""
    from .server import Sandbox

    return Sandbox(**kwargs).start()
