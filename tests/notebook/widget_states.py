"""Test helper: every synced state in a widget tree (what a front-end would receive)."""

from __future__ import annotations

import json
from typing import Any

import ipywidgets as w


def widgets_in(root: Any) -> list[w.Widget]:
    """``root`` and every widget reachable through its traits, once each."""
    seen: dict[str, w.Widget] = {}
    stack = [root]
    while stack:
        widget = stack.pop()
        if not isinstance(widget, w.Widget) or widget.model_id in seen:
            continue
        seen[widget.model_id] = widget
        for name in widget.keys:
            value = getattr(widget, name, None)
            if isinstance(value, w.Widget):
                stack.append(value)
            elif isinstance(value, (list, tuple)):
                stack.extend(v for v in value if isinstance(v, w.Widget))
    return list(seen.values())


def state_text(root: Any) -> str:
    """All synced states of the tree as one JSON string, for ``in`` checks."""
    return json.dumps([x.get_state() for x in widgets_in(root)], default=str)
