"""``LogTail``: live Fly.io app logs in a bounded ring buffer, with pause/resume and
level, region and text filters.

The streamer thread only appends to the ring buffer; a panel worker redraws the
view (a trait update) at most ``max_redraws_per_s`` times a second, so a burst of
thousands of lines costs a few redraws, and memory stays at ``max_lines`` entries.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ...models import LogEntry
from ._panel import Panel, escape, status_html

__all__ = ["LEVELS", "LogTail", "level_option", "level_rank"]

LEVELS = ("any", "debug", "info", "warn", "error")
_RANK = {"trace": 0, "debug": 0, "info": 1, "notice": 1, "warn": 2, "warning": 2, "error": 3,
         "err": 3, "fatal": 4, "critical": 4, "panic": 4}
_ANY = "any"


def level_rank(level: str | None) -> int:
    """Severity order of a Fly log level (unknown levels count as info)."""
    return _RANK.get((level or "info").lower(), 1)


def level_option(level: str | None) -> str:
    """The dropdown entry for a level name (``None``: any; ``fatal``: error)."""
    if not level or level.lower() == _ANY:
        return _ANY
    rank = min(level_rank(level), level_rank("error"))
    return next(name for name in LEVELS[1:] if level_rank(name) == rank)


class LogTail(Panel):
    """Follow a Fly app's logs live.

    Args:
        app: the Fly app name.
        region: a server-side filter passed to the subscription.
        instance: a server-side filter passed to the subscription.
        level: minimum level shown (``"warn"`` shows warn and error).
        grep: only show lines containing this text (case-insensitive).
        max_lines: ring buffer size (older entries are dropped, and counted).
        view_lines: how many of the newest matching lines the view shows.
        max_redraws_per_s: redraw throttle.
        subscribe: ``subscribe(app, callback, region=, instance=, **kw)`` returning a
            handle with ``close()`` (default ``atlas_nb.fly.subscribe_logs``).
        background: redraw in a daemon worker (``False``: call ``render()`` yourself).
        follow: subscribe now (``False``: feed events with ``feed()``, for replays).
        subscribe_options: passed on to ``subscribe`` (``http``, ``base_url``, ``token``).
    """

    title = "LogTail"

    def __init__(
        self,
        app: str,
        *,
        region: str | None = None,
        instance: str | None = None,
        level: str | None = None,
        grep: str | None = None,
        max_lines: int = 1000,
        view_lines: int = 200,
        max_redraws_per_s: float = 4.0,
        subscribe: Callable[..., Any] | None = None,
        background: bool = True,
        follow: bool = True,
        **subscribe_options: Any,
    ) -> None:
        super().__init__(background=background)
        import ipywidgets as w

        self.app = app
        self.max_lines = max(1, max_lines)
        self.view_lines = max(1, view_lines)
        self.min_gap = 1.0 / max_redraws_per_s if max_redraws_per_s > 0 else 0.0
        self.buffer: deque[LogEntry] = deque(maxlen=self.max_lines)
        self.received = 0
        self.dropped = 0
        self.redraws = 0
        self.stopped: str | None = None
        self._dirty = threading.Event()
        self._regions: set[str] = set()
        self.level = w.Dropdown(options=list(LEVELS), value=level_option(level),
                                description="level ≥")
        self.region = w.Dropdown(options=[_ANY], value=_ANY, description="region")
        self.grep = w.Text(value=grep or "", placeholder="text filter", description="contains")
        self.pause = w.ToggleButton(value=False, description="Pause", icon="pause")
        self.clear_button = w.Button(description="Clear", icon="eraser")
        self.status = w.HTML(value=status_html("busy", f"following {app}…"))
        self.view = w.Output(layout=w.Layout(border="1px solid #ddd", padding="2px"))
        self.widget = w.VBox([
            w.HTML(value=f"<b>Fly logs: {escape(app)}</b>"),
            w.HBox([self.level, self.region, self.grep]),
            w.HBox([self.pause, self.clear_button]), self.status, self.view,
        ])
        for control in (self.level, self.region, self.grep):
            control.observe(lambda _c: self._changed(), names="value")
        self.pause.observe(lambda _c: self._on_pause(), names="value")
        self.clear_button.on_click(lambda _b: self.clear())
        self._subscription: Any = None
        if follow:
            if subscribe is None:
                from ...fly import subscribe_logs

                subscribe = subscribe_logs
            self._subscription = subscribe(app, self.feed, region=region, instance=instance,
                                           **subscribe_options)
        if background:
            self.run(self._loop, f"logtail-{app}")

    # -- intake (streamer thread) -----------------------------------------------------
    def feed(self, event: Any) -> None:
        """Take a ``LogBatch`` (or ``LogsStopped``, or any iterable of ``LogEntry``)."""
        entries: Iterable[LogEntry] | None = getattr(event, "entries", None)
        if entries is None and not hasattr(event, "reason"):
            entries = event
        if entries is None:
            self.stopped = getattr(event, "message", None) or f"stopped ({event.reason})"
            self._dirty.set()
            return
        with self._lock:
            for entry in entries:
                if len(self.buffer) == self.max_lines:
                    self.dropped += 1
                self.buffer.append(entry)
                self.received += 1
                if entry.region:
                    self._regions.add(entry.region)
        self._dirty.set()

    # -- view -------------------------------------------------------------------------
    def matching(self) -> list[LogEntry]:
        """Buffered entries that pass the level, region and text filters, oldest first."""
        floor = -1 if self.level.value == _ANY else level_rank(self.level.value)
        region = self.region.value
        needle = self.grep.value.strip().lower()
        with self._lock:
            entries = list(self.buffer)
        return [e for e in entries
                if level_rank(e.level) >= floor
                and (region == _ANY or e.region == region)
                and (not needle or needle in e.message.lower())]

    def render(self) -> None:
        """Redraw the view now (paused: only the status line)."""
        self._dirty.clear()
        with self._lock:
            regions = sorted(self._regions)
        if [_ANY, *regions] != list(self.region.options):
            self.region.options = [_ANY, *regions]
        shown = self.matching()[-self.view_lines:]
        state = self.stopped or ("paused" if self.pause.value else "live")
        self.status.value = status_html(
            "warn" if self.stopped else "info",
            f"{self.app}: {state} · {self.received} received · {len(self.buffer)} buffered"
            f" (max {self.max_lines}, {self.dropped} dropped) · {len(shown)} shown")
        if self.pause.value:
            return
        text = "".join(f"{e}\n" for e in shown)
        # A whole-trait update (never `with out:` from a thread): the view stays bounded.
        self.view.outputs = ({"output_type": "stream", "name": "stdout", "text": text},)
        self.redraws += 1

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self._dirty.wait(0.25) and not stop.is_set():
                self.render()
                stop.wait(self.min_gap)

    def _changed(self) -> None:
        self._dirty.set()
        if not self.background:
            self.render()

    def _on_pause(self) -> None:
        self.pause.description = "Resume" if self.pause.value else "Pause"
        self.pause.icon = "play" if self.pause.value else "pause"
        self._changed()

    def clear(self) -> None:
        """Empty the buffer and the view."""
        with self._lock:
            self.buffer.clear()
        self._changed()

    def show_error(self, text: str) -> None:
        self.status.value = status_html("error", text)

    def _on_close(self) -> None:
        sub, self._subscription = self._subscription, None
        if sub is not None:
            sub.close()

    # -- fallback ---------------------------------------------------------------------
    def text(self) -> str:
        shown = self.matching()[-20:]
        head = f"LogTail({self.app}: {self.received} received, {len(shown)} latest shown)"
        return "\n".join([head, *(str(e) for e in shown)])

    def html(self) -> str:
        shown = self.matching()[-50:]
        lines = escape("\n".join(str(e) for e in shown))
        return (f"<b>Fly logs: {escape(self.app)}</b> ({self.received} received)"
                f"<pre style='font-size:11px'>{lines}</pre>")
