"""``fly deploy``: runs (``deployment``), their limits, tickets that followers subscribe to.

Modules, leaves first: ``output_lines`` (``LineSplitter``), ``limits`` (``DeployLimits``),
``project`` (the folder a deploy runs in), ``tickets`` (``subscribe_deploy``,
``DeployLine``, ``DeployResult``), ``deployment`` (``Deployment``, ``start_deploy``,
``stream_deploy``).
"""

from __future__ import annotations

from .deployment import Deployment, start_deploy, stream_deploy
from .limits import DeployLimitOptions, DeployLimits
from .project import resolve_app_dir
from .tickets import (
    DeployCallback,
    DeployEvent,
    DeployLine,
    DeployResult,
    DeploySubscription,
    subscribe_deploy,
)

__all__ = [
    "DeployCallback",
    "DeployEvent",
    "DeployLimitOptions",
    "DeployLimits",
    "DeployLine",
    "DeployResult",
    "DeploySubscription",
    "Deployment",
    "resolve_app_dir",
    "start_deploy",
    "stream_deploy",
    "subscribe_deploy",
]
