"""``Dashboard``: the live table of tracked computes, with the session's spend.

Every row has **Touch** (resets the idle clock). **Stop** and **Terminate** exist
only when built with ``allow_destructive_actions=True``, and each asks to confirm.
Figures (accrued $, idle time) refresh every ``refresh_interval`` seconds from the
orchestrator; statuses come from listing each provider (a list is not activity, so
watching a compute never keeps it alive).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ... import facade
from ..._html import grid
from ...errors import AtlasError
from .. import tracking
from ._panel import Panel, escape, status_html

__all__ = ["Dashboard", "duration"]

_COLUMNS = ("id", "name", "provider", "status", "$/h", "accrued $", "idle")
_WIDTHS = ("9em", "16em", "6em", "7em", "5em", "6em", "8em")


def duration(seconds: float | None) -> str:
    """``3725`` -> ``"1h02m"``, ``65`` -> ``"1m05s"``."""
    if seconds is None:
        return "—"
    s = int(max(0.0, seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s" if s % 60 else f"{s // 60}m"
    return f"{s}s"


@dataclass
class _Values:
    id: str
    name: str
    provider: str
    status: str
    rate: float
    accrued: float
    idle: str
    ended: bool = False

    def cells(self) -> tuple[str, ...]:
        return (self.id, self.name, self.provider, self.status, f"${self.rate:.2f}",
                f"${self.accrued:.4f}", self.idle)


class _Row:
    """The widgets of one compute's row."""

    def __init__(self, w: Any, dash: Dashboard, values: _Values) -> None:
        self.values = values
        self.cells = [w.HTML(value="", layout=w.Layout(width=width)) for width in _WIDTHS]
        self.touch = w.Button(description="Touch", icon="hand-pointer-o",
                              layout=w.Layout(width="6em"), tooltip="reset the idle clock")
        self.touch.on_click(lambda _b: dash.touch(values.id))
        self.buttons = [self.touch]
        self.stop: Any = None
        self.terminate: Any = None
        if dash.allow_destructive_actions:
            self.stop = w.Button(description="Stop", icon="pause", button_style="warning",
                                 layout=w.Layout(width="6em"))
            self.terminate = w.Button(description="Terminate", icon="trash",
                                      button_style="danger", layout=w.Layout(width="8em"))
            self.stop.on_click(lambda _b: dash.ask(values.id, "stop"))
            self.terminate.on_click(lambda _b: dash.ask(values.id, "terminate"))
            self.buttons += [self.stop, self.terminate]
        self.question = w.HTML(value="")
        self.confirm_yes = w.Button(description="Yes", button_style="danger",
                                    layout=w.Layout(width="5em"))
        self.confirm_no = w.Button(description="No", layout=w.Layout(width="5em"))
        self.confirm_yes.on_click(lambda _b: dash.confirm(values.id))
        self.confirm_no.on_click(lambda _b: dash.dismiss(values.id))
        self.pending: str | None = None
        self.box = w.HBox([*self.cells, *self.buttons])
        self.update(values)

    def update(self, values: _Values) -> None:
        self.values = values
        style = "color:#999;text-decoration:line-through" if values.ended else ""
        for cell, text in zip(self.cells, values.cells(), strict=True):
            cell.value = f"<span style='font-family:monospace;{style}'>{escape(text)}</span>"
        self.layout_buttons()

    def layout_buttons(self) -> None:
        if self.values.ended:
            children = self.cells
        elif self.pending is not None:
            children = [*self.cells, self.question, self.confirm_yes, self.confirm_no]
        else:
            children = [*self.cells, *self.buttons]
        if list(self.box.children) != children:
            self.box.children = children



class Dashboard(Panel):
    """Live table of tracked computes: status, $/h, accrued $, idle time and actions.

    Args:
        allow_destructive_actions: add Stop and Terminate (each confirmed) to every row.
        refresh_interval: seconds between refreshes of the figures.
        status_interval: seconds between provider listings for fresh statuses
            (default ``max(refresh_interval, 5)``).
        source: what to watch: anything with ``tracked``, ``touch``, ``stop_tracked``,
            ``cost`` and ``subscribe`` (default: the kernel's orchestrator; an
            ``Orchestrator`` instance works too).
        background: refresh in a daemon thread (``False``: call ``refresh()`` yourself).
    """

    title = "Dashboard"

    def __init__(
        self,
        *,
        allow_destructive_actions: bool = False,
        refresh_interval: float = 2.0,
        status_interval: float | None = None,
        source: Any = None,
        background: bool = True,
    ) -> None:
        super().__init__(background=background)
        import ipywidgets as w

        self._w = w
        self.allow_destructive_actions = allow_destructive_actions
        self.refresh_interval = refresh_interval
        self.status_interval = (status_interval if status_interval is not None
                                else max(refresh_interval, 5.0))
        self.source: Any = source if source is not None else tracking
        self.rows: dict[str, _Row] = {}
        self.statuses: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self._last_status_poll = -1e9
        self.spend = w.HTML(value="")
        self.status = w.HTML(value=status_html("info", "watching tracked computes"))
        self.header = w.HBox([w.HTML(value=f"<b>{escape(c)}</b>",
                                     layout=w.Layout(width=width))
                              for c, width in zip(_COLUMNS, _WIDTHS, strict=True)])
        self.body = w.VBox([])
        self.empty = w.HTML(value="<i>no tracked computes (spawn one with %atlas spawn)</i>")
        self.widget = w.VBox([w.HTML(value="<b>atlas_nb: tracked computes</b>"), self.spend,
                              self.header, self.body, self.status])
        self._subscription = self._subscribe()
        self.refresh(poll_status=True)
        if background:
            self.run(self._loop, "dashboard")

    def _subscribe(self) -> Any:
        if not hasattr(self.source, "subscribe"):
            return None
        try:
            return self.source.subscribe("*", self._on_event)
        except AtlasError:
            return None

    def _on_event(self, event: Any) -> None:
        # Runs in whatever thread made the transition: only trait updates from here.
        if event.kind == "terminating" and event.reason:
            self.reasons[event.compute_id] = event.reason
        if event.kind == "status" and event.status == "terminated":
            self.statuses[event.compute_id] = "terminated"
            self.refresh()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.refresh_interval):
            due = time.monotonic() - self._last_status_poll >= self.status_interval
            self.refresh(poll_status=due)

    # -- data -------------------------------------------------------------------------
    def _poll_statuses(self, snaps: list[Any]) -> None:
        self._last_status_poll = time.monotonic()
        ids = {t.id for t in snaps}
        for provider in sorted({t.provider for t in snaps}):
            try:
                listed = facade.list_compute(provider=provider)
            except AtlasError:
                continue  # keep the last known statuses; the next poll tries again
            seen = {c.id: c.status for c in listed if c.id in ids}
            for t in snaps:
                if t.provider == provider:
                    self.statuses[t.id] = seen.get(t.id, "gone")

    def refresh(self, *, poll_status: bool = False) -> None:
        """Re-read the tracked computes (and, with ``poll_status``, their statuses)."""
        snaps = list(self.source.tracked())
        if poll_status:
            self._poll_statuses(snaps)
        with self._lock:
            if self._closed:
                return
            live = set()
            for t in snaps:
                live.add(t.id)
                status = self.statuses.get(t.id) or t.compute.status
                if t.state != "running":
                    status = t.state.replace("_", " ")
                ttl = f" / {duration(t.idle_ttl_ms / 1000)}" if t.idle_ttl_ms else ""
                values = _Values(t.id, t.name, t.provider, status, t.cost_per_hour,
                                 t.accrued_cost, duration(t.idle_for_s) + ttl)
                self._put(values)
            for cid, row in self.rows.items():
                if cid not in live and not row.values.ended:
                    reason = self.reasons.get(cid)
                    ended = _Values(**{**row.values.__dict__, "ended": True,
                                       "status": "terminated" + (f" ({reason})" if reason
                                                                 else ""),
                                       "rate": 0.0})
                    row.update(ended)
            children = [r.box for r in self.rows.values()]
            self.body.children = children or [self.empty]
            self.spend.value = self._spend_html()

    def _put(self, values: _Values) -> None:
        row = self.rows.get(values.id)
        if row is None:
            self.rows[values.id] = _Row(self._w, self, values)
        else:
            row.update(values)

    def _spend_html(self) -> str:
        try:
            c = self.source.cost()
        except AtlasError as exc:
            return status_html("warn", f"spend unavailable: {exc}")
        caps = []
        if c.max_hourly_spend is not None:
            caps.append(f"max ${c.max_hourly_spend:g}/h")
        if c.max_total_spend is not None:
            caps.append(f"max ${c.max_total_spend:g} total")
        tail = f" (caps: {', '.join(caps)})" if caps else ""
        return (f"<span style='font-family:monospace'>session spend: "
                f"<b>${c.rate_per_hour:.2f}/h</b> now · ${c.accrued_live:.4f} accrued by live "
                f"computes · <b>${c.spent_total:.4f}</b> in total{escape(tail)}</span>")

    # -- actions ----------------------------------------------------------------------
    def touch(self, compute_id: str) -> None:
        """Reset one compute's idle clock (the Touch button)."""
        try:
            self.source.touch(compute_id)
        except AtlasError as exc:
            self.show_error(str(exc))
            return
        self.status.value = status_html("ok", f"touched {compute_id}: idle clock reset")
        self.refresh()

    def ask(self, compute_id: str, action: str) -> None:
        """First click on Stop/Terminate: ask to confirm in the row."""
        if not self.allow_destructive_actions:
            self.show_error("Stop and Terminate need Dashboard(allow_destructive_actions=True)")
            return
        row = self.rows.get(compute_id)
        if row is None or row.values.ended:
            return
        row.pending = action
        row.question.value = status_html("warn", f"{action} {compute_id}?")
        row.layout_buttons()

    def dismiss(self, compute_id: str) -> None:
        """Cancel a pending confirmation."""
        row = self.rows.get(compute_id)
        if row is not None:
            row.pending = None
            row.layout_buttons()

    def confirm(self, compute_id: str) -> None:
        """Second click: run the pending Stop/Terminate (in the background)."""
        row = self.rows.get(compute_id)
        if row is None or row.pending is None or not self.allow_destructive_actions:
            return
        action, row.pending = row.pending, None
        row.layout_buttons()
        provider = row.values.provider
        self.status.value = status_html("busy", f"{action} {compute_id}…")

        def work(stop: threading.Event) -> None:
            if action == "terminate":
                self.source.stop_tracked(compute_id)
                self.reasons[compute_id] = "dashboard"
                self.statuses[compute_id] = "terminated"
            else:
                self.statuses[compute_id] = facade.stop(compute_id, provider=provider).status
            self.status.value = status_html("ok", f"{action} {compute_id}: done")
            self.refresh()

        self.run(work, f"dashboard-{action}")

    def show_error(self, text: str) -> None:
        self.status.value = status_html("error", text)

    def _on_close(self) -> None:
        sub, self._subscription = self._subscription, None
        if sub is not None:
            sub.unsubscribe()
        with self._lock:
            rows = list(self.rows.values())
        for row in rows:  # hidden confirm buttons are not in the displayed tree
            for widget in (*row.cells, *row.buttons, row.question, row.confirm_yes,
                           row.confirm_no, row.box):
                widget.close()

    # -- fallback ---------------------------------------------------------------------
    def _table(self) -> tuple[list[str], list[tuple[str, ...]]]:
        with self._lock:
            return list(_COLUMNS), [r.values.cells() for r in self.rows.values()]

    def text(self) -> str:
        cols, rows = self._table()
        lines = [f"Dashboard: {len(rows)} compute(s)", "  ".join(cols)]
        lines += ["  ".join(r) for r in rows]
        return "\n".join(lines)

    def html(self) -> str:
        cols, rows = self._table()
        return f"<b>atlas_nb: tracked computes</b><br>{self.spend.value}{grid(cols, rows)}"
