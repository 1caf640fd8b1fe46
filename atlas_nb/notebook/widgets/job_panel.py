"""``JobPanel``: edit a job's input, Submit, watch its output stream into a table, Cancel."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

from ... import facade
from ..._html import grid
from ...errors import AtlasError, ValidationError
from ...models import Job
from ..expand import json_or_yaml
from ..frames import _frame, _row
from ..joblog import JOBS
from ._panel import Panel, escape, status_html

__all__ = ["JobPanel"]


def parse_input(text: str) -> Any:
    """Editor text as data: JSON, else YAML; empty -> ``None``."""
    text = text.strip()
    if not text:
        return None
    try:
        return json_or_yaml(text)
    except ValueError as exc:
        raise ValidationError(f"the input is neither JSON nor YAML ({exc})") from None


class JobPanel(Panel):
    """An input editor, **Submit**, a live table of streamed chunks, and **Cancel**.

    Args:
        provider: where jobs go (editable in the panel).
        endpoint: where jobs go (editable in the panel).
        input: the initial input (shown as JSON in the editor).
        stream: stream chunks into the table (else poll until the job is done).
        refresh_interval: seconds between status polls when not streaming.
        max_redraws_per_s: table redraws are throttled to this rate.
        max_rows: rows shown in the table (``frame`` keeps them all).
    """

    title = "JobPanel"

    def __init__(
        self,
        *,
        provider: str | None = None,
        endpoint: str = "",
        input: Any = None,
        stream: bool = True,
        refresh_interval: float = 1.0,
        max_redraws_per_s: float = 10.0,
        max_rows: int = 50,
        background: bool = True,
    ) -> None:
        super().__init__(background=background)
        import ipywidgets as w

        self.refresh_interval = refresh_interval
        self.min_gap = 1.0 / max_redraws_per_s if max_redraws_per_s > 0 else 0.0
        self.max_rows = max_rows
        self.job: Job | None = None
        self.rows: list[dict[str, Any]] = []
        self.redraws = 0
        self._last_draw = -1e9
        self._cancel = threading.Event()
        text = "" if input is None else json.dumps(input, indent=2, default=str)
        self.provider = w.Text(value=provider or "", placeholder="runpod",
                               description="provider")
        self.endpoint = w.Text(value=endpoint, placeholder="endpoint id",
                               description="endpoint")
        self.editor = w.Textarea(value=text, placeholder='{"prompt": "hello"}',
                                 description="input", layout=w.Layout(width="95%",
                                                                      height="8em"))
        self.stream = w.Checkbox(value=stream, description="stream output")
        self.submit_button = w.Button(description="Submit", button_style="primary",
                                      icon="play")
        self.cancel_button = w.Button(description="Cancel", button_style="warning",
                                      icon="stop", disabled=True)
        self.status = w.HTML(value=status_html("info", "edit the input, then Submit"))
        self.table = w.HTML(value="")
        self.output = w.HTML(value="")
        self.widget = w.VBox([
            w.HTML(value="<b>Serverless job</b>"),
            w.HBox([self.provider, self.endpoint, self.stream]),
            self.editor, w.HBox([self.submit_button, self.cancel_button]),
            self.status, self.table, self.output,
        ])
        self.submit_button.on_click(lambda _b: self.submit())
        self.cancel_button.on_click(lambda _b: self.cancel())

    @property
    def frame(self) -> Any:
        """Every chunk received so far, as a DataFrame."""
        with self._lock:
            return _frame(list(self.rows))

    # -- actions ----------------------------------------------------------------------
    def submit(self) -> Job | None:
        """Submit the editor's input; output is followed in the background."""
        try:
            data = parse_input(self.editor.value)
            if not self.endpoint.value.strip():
                from ...errors import ValidationError

                raise ValidationError("endpoint missing: type the endpoint id")
            job = facade.run_job(provider=self.provider.value.strip() or None,
                                 endpoint=self.endpoint.value.strip(), input=data, mode="async")
        except AtlasError as exc:
            self.show_error(str(exc))
            return None
        JOBS.record(job)
        with self._lock:
            self.job, self.rows, self.redraws, self.error = job, [], 0, None
        self._cancel.clear()
        self.table.value = self.output.value = ""
        self.submit_button.disabled, self.cancel_button.disabled = True, False
        self.status.value = status_html("busy", f"job {job.id} submitted ({job.status})")
        streaming = self.stream.value

        def work(stop: threading.Event) -> None:
            try:
                if streaming:
                    self._follow_stream(job, stop)
                else:
                    self._poll(job, stop)
            finally:
                self.submit_button.disabled, self.cancel_button.disabled = False, True

        self.run(work, f"job-{job.id}")
        return job

    def cancel(self) -> None:
        """Cancel the running job remotely (the Cancel button)."""
        job = self.job
        if job is None:
            return
        self._cancel.set()
        self.status.value = status_html("busy", f"cancelling {job.id}…")
        try:
            self.job = JOBS.record(facade.cancel_job(job)).job
        except AtlasError as exc:
            self.show_error(f"cancel failed: {exc}")
            return
        self.status.value = status_html("warn", f"job {job.id}: {self.job.status}")

    # -- background -------------------------------------------------------------------
    def _redraw(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_draw < self.min_gap:
                return
            self._last_draw = now
            rows = self.rows[-self.max_rows:]
            self.redraws += 1
        cols = list(dict.fromkeys(k for r in rows for k in r))
        self.table.value = grid(cols, [[r.get(c) for c in cols] for r in rows])

    def _follow_stream(self, job: Job, stop: threading.Event) -> None:
        t0 = time.monotonic()
        try:
            for chunk in facade.stream_job(job):
                with self._lock:
                    self.rows.append(_row(len(self.rows), time.monotonic() - t0, chunk))
                    n = len(self.rows)
                self.status.value = status_html("busy", f"job {job.id}: {n} chunks")
                self._redraw()
                if stop.is_set() or self._cancel.is_set():
                    break
        except AtlasError as exc:
            if not self._cancel.is_set():
                self._finish(job, f"stream failed: {exc}")
                return
        self._redraw(force=True)
        self._finish(job)

    def _poll(self, job: Job, stop: threading.Event) -> None:
        while not job.done and not stop.is_set() and not self._cancel.is_set():
            stop.wait(self.refresh_interval)
            try:
                job = JOBS.record(facade.get_job(job)).job
            except AtlasError as exc:
                self._finish(job, f"status poll failed: {exc}")
                return
            self.status.value = status_html("busy", f"job {job.id}: {job.status}")
        self._finish(job)

    def _finish(self, job: Job, error: str | None = None) -> None:
        with contextlib.suppress(AtlasError):
            job = JOBS.record(facade.get_job(job), chunks=len(self.rows)).job
        self.job = job
        if error is not None and job.status not in ("cancelled",):
            self.show_error(error)
            return
        level = "ok" if job.status == "completed" else "warn"
        self.status.value = status_html(level, f"job {job.id}: {job.status}"
                                               f" ({len(self.rows)} chunks)")
        if job.output is not None:
            text = json.dumps(job.output, indent=2, default=str)
            self.output.value = f"<pre>{escape(text[:20000])}</pre>"

    def show_error(self, text: str) -> None:
        self.status.value = status_html("error", text)

    # -- fallback ---------------------------------------------------------------------
    def text(self) -> str:
        job = self.job
        state = f"job {job.id} {job.status}" if job else "no job yet"
        return (f"JobPanel(provider={self.provider.value or '-'}, "
                f"endpoint={self.endpoint.value or '-'}, {state}, {len(self.rows)} chunks)")

    def html(self) -> str:
        with self._lock:
            rows = self.rows[-self.max_rows:]
        cols = list(dict.fromkeys(k for r in rows for k in r))
        table = grid(cols, [[r.get(c) for c in cols] for r in rows]) if rows else ""
        return f"<b>{escape(self.text())}</b>{table}"
