"""``LogSource``: where a log subscription reads from (the app, its filters, the connection).

``subscribe_logs(app, callback)`` is the common call; the rest of what used to be a
long tail of keywords lives here::

    subscribe_logs(LogSource("shop-api", region="iad", base_url="https://api.fly.io"), cb)
    subscribe_logs("shop-api", cb, region="iad")        # the same, as keywords
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict

from ..._http import HttpOption

__all__ = ["LogSource", "LogSourceOptions"]


class LogSourceOptions(TypedDict, total=False):
    """The ``LogSource`` fields besides ``app``, as keywords of ``subscribe_logs``/``tail_logs``."""

    region: str | None
    instance: str | None
    http: HttpOption
    base_url: str | Mapping[str, str] | None
    token: str | None


@dataclass(frozen=True)
class LogSource:
    """One app's log stream, as a subscriber asks for it.

    Args:
        app: the Fly app name.
        region: only lines from this region (a per-subscriber filter).
        instance: only lines from this machine (a per-subscriber filter).
        http: the ``http=`` option (client, transport or options dict).
        base_url: the logs API base (see ``LogsClient``).
        token: use exactly this token (no chain); never shown in a repr.
    """

    app: str
    region: str | None = None
    instance: str | None = None
    http: HttpOption = None
    base_url: str | Mapping[str, str] | None = None
    token: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, source: str | LogSource, **options: object) -> LogSource:
        """``source`` as a ``LogSource``, with ``options`` (``LogSourceOptions``) replaced.

        A keyword left at ``None`` keeps the source's value.
        """
        given = {k: v for k, v in options.items() if v is not None}
        unknown = set(given) - set(LogSourceOptions.__annotations__)
        if unknown:
            raise TypeError(f"unexpected log source option(s): {', '.join(sorted(unknown))}")
        base = source if isinstance(source, LogSource) else cls(source)
        return dataclasses.replace(base, **given)  # type: ignore[arg-type]
