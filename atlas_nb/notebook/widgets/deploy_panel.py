"""``DeployPanel``: follow a ``fly deploy`` running in the background; Cancel kills it."""

from __future__ import annotations

from collections import deque
from typing import Any

from ._panel import Panel, escape, status_html

__all__ = ["DeployPanel"]


class DeployPanel(Panel):
    """The last ``max_lines`` output lines of a deploy, its status, and **Cancel**.

    Args:
        deployment: an ``atlas_nb.fly.Deployment`` (started or not; it is subscribed to).
    """

    title = "DeployPanel"

    def __init__(self, deployment: Any, *, max_lines: int = 200) -> None:
        super().__init__(background=False)
        import ipywidgets as w

        self.deployment = deployment
        self.lines: deque[str] = deque(maxlen=max(1, max_lines))
        self.result: Any = None
        self.status = w.HTML(value=status_html("busy", f"deploy {deployment.ticket_id}: "
                                                       "running…"))
        self.cancel_button = w.Button(description="Cancel", icon="stop",
                                      button_style="warning")
        self.view = w.Output(layout=w.Layout(border="1px solid #ddd", padding="2px"))
        self.widget = w.VBox([w.HTML(value=f"<b>fly deploy</b> ({escape(deployment.app_dir)})"),
                              w.HBox([self.cancel_button, self.status]), self.view])
        self.cancel_button.on_click(lambda _b: self.cancel())
        deployment.subscribe(self.feed)

    def feed(self, event: Any) -> None:
        """A ``DeployLine`` or the final ``DeployResult`` (runs on the deploy's thread)."""
        line = getattr(event, "line", None)
        if line is not None:
            with self._lock:
                self.lines.append(line)
                text = "\n".join(self.lines) + "\n"
            self.view.outputs = ({"output_type": "stream", "name": "stdout", "text": text},)
            return
        self.result = event
        self.cancel_button.disabled = True
        self.status.value = status_html("ok" if event.ok else "error", str(event))

    def cancel(self) -> None:
        """Kill the deploy's process group."""
        self.deployment.cancel()
        self.status.value = status_html("warn", f"deploy {self.deployment.ticket_id}: "
                                                "cancelling…")

    def text(self) -> str:
        with self._lock:
            tail = list(self.lines)[-20:]
        state = str(self.result) if self.result is not None else "running"
        return "\n".join([f"DeployPanel({state})", *tail])

    def html(self) -> str:
        return f"<b>fly deploy</b>: <pre>{escape(self.text())}</pre>"
