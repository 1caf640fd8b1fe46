"""Fly app logs: the logs API (``wire``, ``client``) and live streams (``streams``).

Modules, leaves first (no import cycles): ``wire`` (pages of the API, pure), ``client``
(``LogsClient``, ``fetch_logs``), ``events`` (``LogBatch``, ``LogsStopped``),
``dedupe``, ``source`` (``LogSource``), ``subscription``, ``streamer`` (one app's
polling thread), ``tail`` (``LogTail``), ``streams`` (``LogStreams``,
``subscribe_logs``, ``tail_logs``).
"""

from __future__ import annotations

from .client import DEFAULT_BASE_URL, LogsClient, fetch_logs
from .events import LogBatch, LogCallback, LogEvent, LogsStopped, StopReason
from .source import LogSource, LogSourceOptions
from .streams import LogStreams, subscribe_logs, tail_logs
from .subscription import LogSubscription
from .tail import LogTail
from .wire import LogPage, page_from_bytes, page_from_wire

__all__ = [
    "DEFAULT_BASE_URL",
    "LogBatch",
    "LogCallback",
    "LogEvent",
    "LogPage",
    "LogSource",
    "LogSourceOptions",
    "LogStreams",
    "LogSubscription",
    "LogTail",
    "LogsClient",
    "LogsStopped",
    "StopReason",
    "fetch_logs",
    "page_from_bytes",
    "page_from_wire",
    "subscribe_logs",
    "tail_logs",
]
