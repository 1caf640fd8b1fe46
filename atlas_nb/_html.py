"""Pure HTML fragments for ``_repr_html_`` (no IPython import)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

_STYLE = "border-collapse:collapse;font-family:monospace;font-size:12px"
_CELL = "border:1px solid #ccc;padding:2px 6px;text-align:left"


def _cell(value: Any) -> str:
    if value is None:
        return "<span style='color:#999'>—</span>"
    if isinstance(value, float):
        return html.escape(f"{value:.4g}")
    if isinstance(value, (list, tuple)):
        return html.escape(", ".join(str(v) for v in value))
    return html.escape(str(value))


def kv_table(title: str, fields: Mapping[str, Any]) -> str:
    """A two-column table with a caption: one row per field."""
    rows = "".join(
        f"<tr><th style='{_CELL}'>{html.escape(k)}</th><td style='{_CELL}'>{_cell(v)}</td></tr>"
        for k, v in fields.items()
    )
    caption = f"<caption style='text-align:left;font-weight:bold'>{html.escape(title)}</caption>"
    return f"<table style='{_STYLE}'>{caption}{rows}</table>"


def grid(columns: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """A plain table with a header row."""
    head = "".join(f"<th style='{_CELL}'>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='{_CELL}'>{_cell(v)}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table style='{_STYLE}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
