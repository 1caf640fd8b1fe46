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

Packages: ``logs/`` (the logs API and live streams), ``deploy/`` (``fly deploy`` runs),
``tokens/`` (the one Fly credential chain, used by logs, deploys and the Machines
provider); modules: ``apps`` (``fly.toml`` discovery), ``flyctl`` (finding and running
the CLI), ``auth_header`` (the ``Authorization`` rule).

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
    from .deploy import (
        DeployLimits,
        DeployLine,
        Deployment,
        DeployResult,
        DeploySubscription,
        start_deploy,
        stream_deploy,
        subscribe_deploy,
    )
    from .logs import (
        LogBatch,
        LogPage,
        LogsClient,
        LogSource,
        LogsStopped,
        LogStreams,
        LogSubscription,
        LogTail,
        fetch_logs,
        subscribe_logs,
        tail_logs,
    )
    from .tokens import TokenChain, TokenStore, TokenStoreWarning

_LAZY: dict[str, str] = {
    "discover_apps": "apps", "FlyAppsWarning": "apps",
    "authorization": "auth_header",
    **dict.fromkeys(("Deployment", "DeployLimits", "start_deploy", "stream_deploy", "DeployLine",
                     "DeployResult", "DeploySubscription", "subscribe_deploy"), "deploy"),
    **dict.fromkeys(("LogBatch", "LogsStopped", "LogSource", "LogStreams", "LogSubscription",
                     "subscribe_logs", "tail_logs", "LogTail", "LogPage", "LogsClient",
                     "fetch_logs"), "logs"),
    **dict.fromkeys(("TokenChain", "TokenStore", "TokenStoreWarning"), "tokens"),
}

__all__ = [
    "DeployLimits",
    "DeployLine",
    "DeployResult",
    "DeploySubscription",
    "Deployment",
    "FlyAppsWarning",
    "LogBatch",
    "LogEntry",
    "LogPage",
    "LogSource",
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
