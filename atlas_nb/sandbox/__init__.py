"""The sandbox: local, wire-faithful emulators of RunPod, Fly.io, Lambda Cloud and Vast.ai.

``with atlas_nb.sandbox.start() as sb:`` runs every emulated cloud on a loopback
port and points all providers at it with sandbox keys. ``attach(url)`` (or the
``ATLAS_NB_SANDBOX`` env var) points this process at a sandbox running elsewhere,
and ``control.Control(url)`` drives its faults, clock and GPU stock over HTTP.
This module stays light: the server itself is imported only by ``start()``.

Layout: what every cloud shares sits here (``server``, ``app``, ``faults``,
``capacity``, ``control_api``/``control``, ``cloud``, ``contract``, ``schemas``,
``ratelimit``, ``inprocess``); each emulated cloud is a package mirroring
``atlas_nb/providers/<cloud>/`` (``runpod/``, ``lambda_labs/``, ``vast/``, ``fly/``).
Which clouds exist comes from the provider registry (``registry.py``).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import Sandbox

__all__ = ["active_url", "attach", "attached", "detach", "detach_all", "sandbox_key", "start"]

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


def attached() -> list[str]:
    """The URLs ``attach`` has stacked up, oldest first (the last one is active)."""
    with _lock:
        return list(_attached)


def detach_all() -> list[str]:
    """Undo every ``attach`` (``ATLAS_NB_SANDBOX`` still applies); what was attached."""
    with _lock:
        gone = list(_attached)
        _attached.clear()
    return gone


def start(**kwargs: Any) -> Sandbox:
    """Start the emulated clouds on loopback in a background thread (a context manager)."""
    from .server import Sandbox

    return Sandbox(**kwargs).start()
