"""``Panel``: the base of every atlas_nb panel — a widget tree plus a static fallback."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

from . import _background

__all__ = ["Panel", "escape", "status_html"]

_COLORS = {"info": "#555", "ok": "#2a7", "warn": "#c80", "error": "#c22", "busy": "#36c"}


def escape(value: Any) -> str:
    """HTML-escape ``str(value)``."""
    return html.escape(str(value))


def status_html(level: str, text: str) -> str:
    """One colored status line."""
    color = _COLORS.get(level, "#555")
    return f"<span style='color:{color};font-family:monospace'>{escape(text)}</span>"


def _tree(root: Any) -> list[Any]:
    """``root`` and every widget reachable through its traits (children, layout, style)."""
    import ipywidgets as w

    seen: dict[int, Any] = {}
    stack = [root]
    while stack:
        widget = stack.pop()
        if not isinstance(widget, w.Widget) or id(widget) in seen:
            continue
        seen[id(widget)] = widget
        for name in widget.keys:
            value = getattr(widget, name, None)
            if isinstance(value, w.Widget):
                stack.append(value)
            elif isinstance(value, (list, tuple)):
                stack.extend(v for v in value if isinstance(v, w.Widget))
    return list(seen.values())


class Panel:
    """A widget tree (``self.widget``) that also renders as static HTML and text.

    Subclasses build ``self.widget`` in ``__init__`` and implement ``text()`` and
    ``html()``. Work that may block runs in ``self.run(...)``: in a daemon worker by
    default, inline when the panel was built with ``background=False`` (handy in
    scripts and tests). ``close()`` stops the workers and closes the widgets.
    """

    title = "atlas_nb panel"

    def __init__(self, *, background: bool = True) -> None:
        self.background = background
        self.widget: Any = None
        self.error: str | None = None
        self._workers: list[_background.Worker] = []
        self._lock = threading.RLock()
        self._closed = False
        _background.close_on_unload(self)

    # -- work -------------------------------------------------------------------------
    def run(self, target: Callable[[threading.Event], None], name: str) -> Any:
        """Run ``target(stop_event)`` in a worker (or inline without ``background``)."""
        if not self.background:
            stop = threading.Event()
            try:
                target(stop)
            except Exception as exc:
                self._failed(exc)
            return None
        worker = _background.spawn(target, name=name, on_error=self._failed)
        with self._lock:
            self._workers = [w for w in self._workers if w.alive] + [worker]
        return worker

    def _failed(self, exc: BaseException) -> None:
        """A worker raised: show one line (``AtlasError``s are already one line)."""
        from ...errors import AtlasError

        text = str(exc) if isinstance(exc, AtlasError) else f"{type(exc).__name__}: {exc}"
        self.error = text
        self.show_error(text)

    def show_error(self, text: str) -> None:
        """Display an error line; subclasses put it in their status widget."""

    def join(self, timeout: float | None = 10.0) -> bool:
        """Wait for the panel's current work to finish; ``True`` if it did."""
        with self._lock:
            workers = list(self._workers)
        return all(w.join(timeout) for w in workers)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    def close(self) -> None:
        """Stop background work and close the widgets. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            workers, self._workers = list(self._workers), []
        for worker in workers:
            worker.stop()
        self._on_close()
        if self.widget is not None:
            for widget in _tree(self.widget):
                widget.close()

    def _on_close(self) -> None:
        """Hook: unsubscribe, stop tails (before the widgets close)."""

    # -- display ----------------------------------------------------------------------
    def text(self) -> str:
        """The ``text/plain`` fallback."""
        return self.title

    def html(self) -> str:
        """The ``text/html`` fallback."""
        return f"<b>{escape(self.title)}</b>"

    def __repr__(self) -> str:
        return self.text()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if not self._closed and self.widget is not None:
            bundle = self.widget._repr_mimebundle_()
            if isinstance(bundle, tuple):
                bundle = bundle[0]
            data.update(bundle or {})
        data["text/plain"] = self.text()
        data["text/html"] = self.html()
        return data
