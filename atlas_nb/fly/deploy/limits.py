"""``DeployLimits``: how long a ``fly deploy`` may run and how much of its output is kept.

One frozen value shared by ``Deployment``, ``start_deploy`` and ``stream_deploy``::

    stream_deploy(project, "api", "t-1", limits=DeployLimits(max_timeout_s=600))
    stream_deploy(project, "api", "t-1", max_timeout_s=600)     # the same, as a keyword
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypedDict

from ...errors import ValidationError

__all__ = ["DeployLimitOptions", "DeployLimits"]


class DeployLimitOptions(TypedDict, total=False):
    """The ``DeployLimits`` fields, as keywords of the deploy functions."""

    inactivity_timeout_s: float
    max_timeout_s: float
    kill_grace_s: float
    max_lines: int


@dataclass(frozen=True)
class DeployLimits:
    """Timeouts and output retention of one deploy.

    Args:
        inactivity_timeout_s: kill the deploy after this long without output (5 min).
        max_timeout_s: kill it after this long in total (30 min).
        kill_grace_s: after SIGTERM to the process group, wait this long before SIGKILL.
        max_lines: output lines retained for late subscribers and the result.

    Raises:
        ValidationError: a timeout <= 0, ``kill_grace_s`` < 0 or ``max_lines`` < 1.
    """

    inactivity_timeout_s: float = 300.0
    max_timeout_s: float = 1800.0
    kill_grace_s: float = 5.0
    max_lines: int = 1000

    def __post_init__(self) -> None:
        if (self.inactivity_timeout_s <= 0 or self.max_timeout_s <= 0
                or self.kill_grace_s < 0 or self.max_lines < 1):
            raise ValidationError("timeouts must be > 0, kill_grace_s >= 0 and max_lines >= 1")

    def with_options(self, **options: object) -> DeployLimits:
        """A copy with ``options`` (``DeployLimitOptions``) replaced."""
        unknown = set(options) - set(DeployLimitOptions.__annotations__)
        if unknown:
            raise TypeError(f"unexpected deploy option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **options) if options else self  # type: ignore[arg-type]
