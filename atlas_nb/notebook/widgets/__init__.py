"""Panels built from stock ipywidgets (no custom JS): spawn, catalog, jobs, logs, dashboard.

Each panel is a plain class wrapping a widget tree (``panel.widget``). Displaying it
shows the live widget plus a static ``text/html`` and ``text/plain`` fallback, so
GitHub, nbviewer or a broken widget install still show something. Background
threads touch widgets only through traits or ``Output.append_*``; they are daemon
threads and stop on ``panel.close()`` or ``%unload_ext``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["CatalogPanel", "Dashboard", "JobPanel", "LogTail", "SpawnPanel"]

_WHERE = {
    "CatalogPanel": "catalog_panel",
    "Dashboard": "dashboard",
    "JobPanel": "job_panel",
    "LogTail": "log_tail",
    "SpawnPanel": "spawn_panel",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
