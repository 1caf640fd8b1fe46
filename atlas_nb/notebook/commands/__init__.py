"""Subcommand handlers, one module per area, imported only when a subcommand first runs.

A handler is ``fn(call: Call) -> Any``; its return value is what the cell displays.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..call import Call
from ..parsers import parser_for

__all__ = ["HANDLERS", "handler_for"]

HANDLERS: dict[str, str] = {
    "providers": "account:providers",
    "login": "account:login",
    "doctor": "account:doctor",
    "sandbox": "account:sandbox",
    "gpus": "catalog:gpus",
    "spawn": "compute:spawn",
    "ls": "compute:ls",
    "touch": "compute:touch",
    "stop": "compute:stop",
    "start": "compute:start",
    "terminate": "compute:terminate",
    "dashboard": "compute:dashboard",
    "reap": "compute:reap",
    "run": "jobs:run",
    "stream": "jobs:stream",
    "jobs": "jobs:jobs",
    "logs": "fly:logs",
    "deploy": "fly:deploy",
}
"""Subcommand -> ``module:function`` in this package."""


def handler_for(sub: str) -> Callable[[Call], Any]:
    """The handler of ``sub`` (``UsageError`` for an unknown subcommand)."""
    parser_for(sub)  # validates the name with a helpful message
    module, _, name = HANDLERS[sub].partition(":")
    fn: Callable[[Call], Any] = getattr(importlib.import_module(f".{module}", __name__), name)
    return fn
