"""``CatalogPanel``: filter and sort the cross-provider price table; pick a row to spawn."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..._html import grid
from .. import frames
from ..catalog_cache import provider_names
from ._panel import Panel, status_html
from .spawn_panel import SpawnPanel

__all__ = ["CatalogPanel"]

ANY = "any"
SORTS = {
    "price": ("price_per_hour", True),
    "spot price": ("spot_price_per_hour", True),
    "memory": ("memory_gb", False),
    "provider": ("provider", True),
}


def _money(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"${v:.2f}"


class CatalogPanel(Panel):
    """The price table with GPU, provider, max-price, spot and sort controls.

    Selecting a row and pressing **Use in spawn panel** prefills ``spawn_panel`` (and
    calls ``on_pick(row)``).

    Args:
        frame: a ``frames.gpus`` DataFrame to show (default: fetched in the background).
        providers: which catalogs to fetch (``"all"``, a name or a list).
        spawn_panel: the ``SpawnPanel`` a picked row prefills (shown below the table).
        on_pick: called with the picked row as a dict.
        ttl: catalog cache age limit in seconds.
        refresh: refetch now.
        max_rows: rows shown in the table (the rest stay pickable).
    """

    title = "CatalogPanel"

    def __init__(
        self,
        frame: Any = None,
        *,
        providers: str | Sequence[str] | None = "all",
        spawn_panel: SpawnPanel | None = None,
        on_pick: Callable[[dict[str, Any]], None] | None = None,
        ttl: float = 300.0,
        refresh: bool = False,
        background: bool = True,
        max_rows: int = 25,
    ) -> None:
        super().__init__(background=background)
        import ipywidgets as w

        self.providers = provider_names(providers)
        self.spawn_panel = spawn_panel
        self.on_pick = on_pick
        self.ttl = ttl
        self.max_rows = max_rows
        self.frame: Any = None
        self.view: Any = None
        self.failures: dict[str, str] = {}
        self.gpu = w.Dropdown(options=[ANY], value=ANY, description="gpu")
        self.provider = w.Dropdown(options=[ANY], value=ANY, description="provider")
        self.max_price = w.BoundedFloatText(value=0.0, min=0.0, max=1e6, step=0.1,
                                            description="max $/h", tooltip="0: no limit")
        self.spot = w.Checkbox(value=False, description="spot only")
        self.sort = w.Dropdown(options=list(SORTS), value="price", description="sort by")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.status = w.HTML(value=status_html("busy", "loading catalogs…"))
        self.table = w.HTML(value="")
        self.pick = w.Select(options=[], rows=8, description="pick",
                             layout=w.Layout(width="95%"))
        self.use_button = w.Button(description="Use in spawn panel", button_style="primary",
                                   disabled=True, icon="arrow-down")
        children = [
            w.HTML(value="<b>GPU prices</b>"),
            w.HBox([self.gpu, self.provider, self.max_price]),
            w.HBox([self.spot, self.sort, self.refresh_button]),
            self.status, self.table, self.pick, self.use_button,
        ]
        if spawn_panel is not None:
            children.append(spawn_panel.widget)
        self.widget = w.VBox(children)
        for control in (self.gpu, self.provider, self.max_price, self.spot, self.sort):
            control.observe(lambda _c: self.render(), names="value")
        self.pick.observe(lambda _c: self._on_select(), names="value")
        self.use_button.on_click(lambda _b: self.use())
        self.refresh_button.on_click(lambda _b: self.load(refresh=True))
        if frame is not None:
            self.set_frame(frame)
        else:
            self.load(refresh=refresh)

    # -- data -------------------------------------------------------------------------
    def load(self, *, refresh: bool = False) -> None:
        """Fetch the catalogs (through the shared cache) and show them."""
        self.status.value = status_html("busy", "loading catalogs…")

        def work(stop: threading.Event) -> None:
            df = frames.gpus(provider=self.providers, refresh=refresh, ttl=self.ttl)
            if not stop.is_set():
                self.set_frame(df)

        self.run(work, "catalog-load")

    def set_frame(self, frame: Any) -> None:
        """Show ``frame`` (a ``frames.gpus`` DataFrame); keeps the current filters."""
        with self._lock:
            self.frame = frame
            self.failures = dict(frame.attrs.get("failures", {}))
            gpus = sorted({g for g in frame["gpu"].dropna()})
            provs = sorted(set(frame["provider"]))
            self.gpu.options = [ANY, *gpus]
            self.provider.options = [ANY, *provs]
        self.render()

    def filtered(self) -> Any:
        """The table as currently filtered and sorted."""
        df = self.frame
        if df is None:
            return None
        if self.gpu.value != ANY:
            df = df[df["gpu"] == self.gpu.value]
        if self.provider.value != ANY:
            df = df[df["provider"] == self.provider.value]
        price_col = "spot_price_per_hour" if self.spot.value else "price_per_hour"
        if self.spot.value:
            df = df[df["spot_price_per_hour"].notna()]
        if self.max_price.value > 0:
            df = df[df[price_col] <= self.max_price.value]
        column, ascending = SORTS[self.sort.value]
        return df.sort_values([column, "price_per_hour"], ascending=[ascending, True],
                              na_position="last", kind="stable", ignore_index=True)

    def render(self) -> None:
        """Redraw the table and the pick list from the filters (any thread)."""
        with self._lock:
            view = self.filtered()
            self.view = view
            if view is None:
                return
            head = view.head(self.max_rows)
            self.table.value = grid(
                ["provider", "gpu", "count", "memory GB", "$/h", "spot $/h", "stock", "regions"],
                [(r.provider, r.gpu, r.gpu_count, r.memory_gb, _money(r.price_per_hour),
                  _money(r.spot_price_per_hour), r.stock, r.regions)
                 for r in head.itertuples(index=False)])
            self.pick.options = [
                (f"{r.provider:<12} {r.gpu!s:<14} ×{r.gpu_count}  {_money(r.price_per_hour)}/h"
                 f"  spot {_money(r.spot_price_per_hour)}", i)
                for i, r in enumerate(view.itertuples(index=False))
            ]
            note = f"{len(view)} of {len(self.frame)} offers"
            if self.failures:
                note += "; not loaded: " + "; ".join(f"{k}: {v}" for k, v in
                                                    self.failures.items())
            self.status.value = status_html("warn" if self.failures else "info", note)
            self.use_button.disabled = self.pick.value is None

    def _on_select(self) -> None:
        self.use_button.disabled = self.pick.value is None

    def row(self, index: int | None = None) -> dict[str, Any] | None:
        """A row of the filtered table (default: the picked one) as a dict."""
        index = self.pick.value if index is None else index
        if index is None or self.view is None or not 0 <= index < len(self.view):
            return None
        return dict(self.view.iloc[index].to_dict())

    def use(self, index: int | None = None) -> dict[str, Any] | None:
        """Prefill the spawn panel from the picked (or ``index``) row; returns the row."""
        row = self.row(index)
        if row is None:
            return None
        if self.spawn_panel is not None:
            self.spawn_panel.prefill(row, spot=self.spot.value)
        if self.on_pick is not None:
            self.on_pick(row)
        return row

    def show_error(self, text: str) -> None:
        self.status.value = status_html("error", text)

    def _on_close(self) -> None:
        if self.spawn_panel is not None:
            self.spawn_panel.close()

    # -- fallback ---------------------------------------------------------------------
    def text(self) -> str:
        if self.view is None:
            return "CatalogPanel(loading)"
        head = self.view.head(10)
        return f"CatalogPanel: {len(self.view)} offers\n{head.to_string(index=False)}"

    def html(self) -> str:
        if self.view is None:
            return "<b>CatalogPanel</b> (loading)"
        table: str = self.view.head(self.max_rows).to_html(index=False)
        return f"<b>CatalogPanel</b>: {len(self.view)} offers{table}"
