"""Fly.io platform operations: app discovery, live logs, deploy streaming, the token chain.

These work without a notebook and apart from the compute providers::

    import atlas_nb.fly as fly

    fly.discover_apps("~/code/shop")                 # [("shop-api", Path(...)), ...]
    for entry in fly.tail_logs("shop-api", timeout_s=30):
        print(entry)                                   # LogEntry
    with fly.subscribe_logs("shop-api", print):        # LogBatch / LogsStopped events
        ...
    result = fly.stream_deploy("~/code/shop", "api", "ticket-1", callback=print)
    fly.tokens.get("shop-api")                         # the token chain

Submodules load on first use, so ``import atlas_nb.fly`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models import LogEntry
    from . import tokens
    from .apps import FlyAppsWarning, discover_apps
    from .auth_header import authorization
    from .deploy import Deployment, start_deploy, stream_deploy
    from .deploy_tickets import DeployLine, DeployResult, DeploySubscription, subscribe_deploy
    from .log_events import LogBatch, LogsStopped
    from .log_streamer import LogStreams, LogSubscription, subscribe_logs, tail_logs
    from .log_tail import LogTail
    from .logs import LogPage, LogsClient, fetch_logs
    from .token_store import TokenStore, TokenStoreWarning
    from .tokens import TokenChain

_LAZY: dict[str, str] = {
    "discover_apps": "apps", "FlyAppsWarning": "apps",
    "authorization": "auth_header",
    "Deployment": "deploy", "start_deploy": "deploy", "stream_deploy": "deploy",
    "DeployLine": "deploy_tickets", "DeployResult": "deploy_tickets",
    "DeploySubscription": "deploy_tickets", "subscribe_deploy": "deploy_tickets",
    "LogBatch": "log_events", "LogsStopped": "log_events",
    "LogStreams": "log_streamer", "LogSubscription": "log_streamer",
    "subscribe_logs": "log_streamer", "tail_logs": "log_streamer",
    "LogTail": "log_tail",
    "LogPage": "logs", "LogsClient": "logs", "fetch_logs": "logs",
    "TokenStore": "token_store", "TokenStoreWarning": "token_store",
    "TokenChain": "tokens",
}

__all__ = [
    "DeployLine",
    "DeployResult",
    "DeploySubscription",
    "Deployment",
    "FlyAppsWarning",
    "LogBatch",
    "LogEntry",
    "LogPage",
    "LogStreams",
    "LogSubscription",
    "LogTail",
    "LogsClient",
    "LogsStopped",
    "TokenChain",
    "TokenStore",
    "TokenStoreWarning",
    "authorization",
    "discover_apps",
    "fetch_logs",
    "start_deploy",
    "stream_deploy",
    "subscribe_deploy",
    "subscribe_logs",
    "tail_logs",
    "tokens",
]


def __getattr__(name: str) -> Any:
    if name == "tokens":
        value: Any = importlib.import_module(".tokens", __name__)
    elif name == "LogEntry":
        from ..models import LogEntry

        value = LogEntry
    elif name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'atlas_nb.fly' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
