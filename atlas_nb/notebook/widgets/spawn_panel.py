"""``SpawnPanel``: pick a provider and GPU (priced from the catalog), spawn, see the URLs."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ... import facade
from ..._html import kv_table
from ...errors import AtlasError
from ...models import Compute, ComputeRequest, GpuType
from .. import tracking
from ..catalog_cache import CACHE
from ._panel import Panel, escape, status_html

__all__ = ["SpawnPanel"]

_MASK = "••••••••••••"


class _Cancelled(Exception):
    """The panel was closed while waiting."""


def gpu_options(catalog: Iterable[GpuType]) -> list[tuple[str, str]]:
    """Dropdown options ``(label, canonical)``: cheapest single-GPU price per GPU."""
    best: dict[str, GpuType] = {}
    for g in catalog:
        if not g.canonical:
            continue
        current = best.get(g.canonical)
        per_gpu = (g.price_per_hour or float("inf")) / max(g.gpu_count, 1)
        if current is None or per_gpu < (current.price_per_hour or float("inf")) / max(
                current.gpu_count, 1):
            best[g.canonical] = g
    options = [("cpu (no GPU)", "cpu")]
    for name, g in sorted(best.items(), key=lambda kv: (kv[1].price_per_hour or 1e9, kv[0])):
        per = (g.price_per_hour or 0.0) / max(g.gpu_count, 1)
        label = f"{name} — ${per:.2f}/h per GPU" if g.price_per_hour is not None else name
        if g.spot_price_per_hour is not None:
            label += f" (spot ${g.spot_price_per_hour / max(g.gpu_count, 1):.2f})"
        options.append((label, name))
    return options


class SpawnPanel(Panel):
    """Provider and GPU dropdowns (with catalog prices), image, ports, auth, idle TTL;
    **Spawn** runs in the background with progress until the compute is ready, then
    shows its URLs. A bearer token (or signing secret) stays masked until **Reveal**.

    Args:
        provider: the preselected provider (default: the first one).
        gpu: the initial GPU field value.
        image: the initial image field value.
        ports: the initial ports field value.
        auth: the initial auth field value.
        name: the initial name field value.
        idle_ttl: minutes (``None``: the orchestrator's default).
        catalog: ``GpuType``s to price the GPU list (default: fetched, cached).
        tracked: spawn through the orchestrator (idle TTL, ended with the kernel).
        background: run the catalog fetch and the spawn in daemon threads.
        timeout_s: how long to wait for the compute to be ready.
    """

    title = "SpawnPanel"

    def __init__(
        self,
        *,
        provider: str | None = None,
        gpu: str | None = None,
        image: str = "",
        ports: str = "8000/http",
        auth: str = "bearer",
        name: str = "",
        idle_ttl: float | None = None,
        catalog: Iterable[GpuType] | None = None,
        tracked: bool = True,
        background: bool = True,
        timeout_s: float = 600.0,
        providers: Iterable[str] | None = None,
    ) -> None:
        super().__init__(background=background)
        import ipywidgets as w

        self.timeout_s = timeout_s
        self.compute: Compute | None = None
        self._secret: str | None = None
        self._signed_url: str | None = None
        if providers is None:
            from ...providers import names as registered

            providers = registered()
        names = list(dict.fromkeys([*([provider] if provider else []), *providers]))
        self.provider = w.Dropdown(options=names, value=names[0], description="provider")
        self.gpu = w.Dropdown(options=[("cpu (no GPU)", "cpu")], value="cpu", description="gpu")
        self.gpu_count = w.BoundedIntText(value=1, min=1, max=16, description="gpu count")
        self.image = w.Text(value=image, placeholder="registry/name:tag", description="image")
        self.ports = w.Text(value=ports, placeholder="8000/http, 22/tcp", description="ports")
        self.auth = w.Dropdown(options=["none", "bearer", "signed_url"], value=auth,
                               description="auth")
        self.idle_ttl = w.FloatText(value=30.0 if idle_ttl is None else idle_ttl,
                                    description="idle TTL (min)")
        self.name = w.Text(value=name, placeholder="(optional)", description="name")
        self.spot = w.Checkbox(value=False, description="spot / interruptible")
        self.tracked = w.Checkbox(value=tracked, description="tracked (ended with the kernel)")
        self.spawn_button = w.Button(description="Spawn", button_style="primary", icon="rocket")
        self.progress = w.IntProgress(value=0, min=0, max=3, description="progress")
        self.status = w.HTML(value=status_html("info", "ready to spawn"))
        self.urls = w.HTML(value="")
        self.secret = w.HTML(value="")
        self.reveal = w.ToggleButton(value=False, description="Reveal", icon="eye",
                                     disabled=True, tooltip="show the token (it is a secret)")
        self.widget = w.VBox([
            w.HTML(value="<b>Spawn a compute</b>"),
            w.HBox([self.provider, self.gpu, self.gpu_count]),
            w.HBox([self.image, self.ports]),
            w.HBox([self.auth, self.idle_ttl, self.name]),
            w.HBox([self.spot, self.tracked]),
            w.HBox([self.spawn_button, self.progress]),
            self.status, self.urls, w.HBox([self.secret, self.reveal]),
        ])
        self.spawn_button.on_click(lambda _b: self.spawn())
        self.reveal.observe(lambda _c: self._show_secret(), names="value")
        self.provider.observe(lambda _c: self.load_catalog(), names="value")
        if catalog is not None:
            self.set_catalog(catalog, keep=gpu)
        else:
            self.load_catalog(keep=gpu)
        if gpu:
            self._select_gpu(gpu)

    # -- catalog ----------------------------------------------------------------------
    def set_catalog(self, catalog: Iterable[GpuType], keep: str | None = None) -> None:
        """Fill the GPU dropdown from ``catalog`` (rows of the selected provider)."""
        rows = [g for g in catalog if g.provider == self.provider.value]
        wanted = keep or self.gpu.value
        options = gpu_options(rows)
        if wanted and wanted not in [v for _, v in options]:
            options.append((wanted, wanted))
        self.gpu.options = options
        self.gpu.value = wanted or "cpu"

    def load_catalog(self, keep: str | None = None) -> None:
        """Fetch (through the shared cache) the selected provider's catalog."""
        provider = self.provider.value

        def work(stop: threading.Event) -> None:
            fetched = CACHE.get([provider])
            if stop.is_set() or self.provider.value != provider:
                return
            if provider in fetched.failures:
                self.status.value = status_html(
                    "warn", f"{provider} prices unavailable: {fetched.failures[provider]}")
            self.set_catalog(fetched.items, keep=keep)

        self.run(work, f"spawn-catalog-{provider}")

    def _select_gpu(self, gpu: str) -> None:
        values = [v for _, v in self.gpu.options]
        if gpu not in values:
            self.gpu.options = [*self.gpu.options, (gpu, gpu)]
        self.gpu.value = gpu

    def prefill(self, row: Mapping[str, Any], *, spot: bool | None = None) -> None:
        """Take provider, GPU and count from a price-table row (``CatalogPanel`` does this)."""
        provider = str(row.get("provider") or self.provider.value)
        if provider not in self.provider.options:
            self.provider.options = [*self.provider.options, provider]
        gpu = row.get("gpu")
        if self.provider.value != provider:
            self.provider.value = provider  # reloads the catalog, keeping the GPU below
        if gpu:
            self._select_gpu(str(gpu))
        count = row.get("gpu_count")
        if count is not None and count == count:  # not NaN/NA
            self.gpu_count.value = int(count)
        if spot is not None:
            self.spot.value = bool(spot)
        self.status.value = status_html("info", f"prefilled from the catalog: {provider} "
                                                f"{gpu} ×{self.gpu_count.value}")

    # -- spawning ---------------------------------------------------------------------
    def request(self) -> dict[str, Any]:
        """The spawn fields the form describes (validated by ``ComputeRequest``)."""
        ports = [p.strip() for p in self.ports.value.replace(";", ",").split(",") if p.strip()]
        fields: dict[str, Any] = {
            "gpu": None if self.gpu.value == "cpu" else self.gpu.value,
            "gpu_count": self.gpu_count.value, "image": self.image.value.strip() or None,
            "ports": ports, "auth": self.auth.value, "spot": self.spot.value,
        }
        if self.name.value.strip():
            fields["name"] = self.name.value.strip()
        ComputeRequest(**fields)  # ValidationError naming the field, before anything is sent
        return fields

    def spawn(self) -> None:
        """Validate the form, then spawn and wait in the background (the Spawn button)."""
        try:
            fields = self.request()
        except AtlasError as exc:
            self.show_error(str(exc))
            return
        self.error = None
        self.spawn_button.disabled = True
        self.reveal.value, self.reveal.disabled = False, True
        self._secret, self._signed_url, self.compute = None, None, None
        self.urls.value = self.secret.value = ""
        self.progress.value, self.progress.bar_style = 1, "info"
        provider = self.provider.value
        self.status.value = status_html("busy", f"spawning on {provider}…")
        tracked = self.tracked.value
        ttl_ms = round(self.idle_ttl.value * 60_000) if self.idle_ttl.value >= 0 else None

        def work(stop: threading.Event) -> None:
            try:
                self._spawn(stop, provider, fields, tracked, ttl_ms)
            finally:
                self.spawn_button.disabled = False

        self.run(work, "spawn")

    def _spawn(self, stop: threading.Event, provider: str, fields: dict[str, Any],
               tracked: bool, ttl_ms: int | None) -> None:
        if tracked:
            compute = tracking.spawn(provider=provider, idle_ttl_ms=ttl_ms, **fields)
        else:
            compute = facade.spawn_compute(provider=provider, **fields)
        self.compute = compute
        self._secret = compute.auth.token if compute.auth is not None else None
        self.progress.value = 2
        self.status.value = status_html("busy", f"{compute.id} is {compute.status}; "
                                                "waiting until it is ready…")

        def progress(c: Compute) -> None:
            if stop.is_set():
                raise _Cancelled
            self.status.value = status_html("busy", f"{c.id} is {c.status}; waiting…")

        def pause(seconds: float) -> None:
            stop.wait(seconds)  # closing the panel cuts the wait short

        try:
            ready = facade.wait_ready(compute, timeout_s=self.timeout_s,
                                      on_progress=progress, sleep=pause)
        except _Cancelled:
            return
        self.compute = ready
        if ready.auth is not None and ready.auth.scheme == "signed_url" and ready.url:
            from ...auth import sign_compute_url

            self._signed_url = sign_compute_url(ready, ready.url)
        self.progress.value, self.progress.bar_style = 3, "success"
        self.status.value = status_html(
            "ok", f"{ready.id} ({ready.name}) is running on {ready.provider} at "
                  f"${ready.cost_per_hour:.2f}/h" + (", tracked" if tracked else ""))
        self.urls.value = self._urls_html(ready)
        if self._secret is not None:
            self.reveal.disabled = False
            self._show_secret()

    @staticmethod
    def _urls_html(c: Compute) -> str:
        items = []
        for p in c.ports:
            if p.url and p.protocol == "http":
                items.append(f"<li>{p.internal}/http: <a href='{escape(p.url)}' "
                             f"target='_blank'>{escape(p.url)}</a></li>")
            else:
                items.append(f"<li>{p.internal}/{p.protocol}: {escape(p.url or 'pending')}</li>")
        return f"<ul style='margin:0'>{''.join(items)}</ul>" if items else ""

    def _show_secret(self) -> None:
        handle = self.compute.auth if self.compute is not None else None
        if handle is None or self._secret is None:
            self.secret.value = ""
            return
        label = "bearer token" if handle.scheme == "bearer" else "signing secret"
        if not self.reveal.value:
            self.secret.value = f"{label}: <code>{_MASK}</code>"
            self.reveal.description = "Reveal"
            return
        extra = ""
        if self._signed_url:
            extra = (f"<br>signed URL: <a href='{escape(self._signed_url)}' target='_blank'>"
                     f"{escape(self._signed_url)}</a>")
        self.secret.value = f"{label}: <code>{escape(self._secret)}</code>{extra}"
        self.reveal.description = "Hide"

    def show_error(self, text: str) -> None:
        self.progress.bar_style = "danger"
        self.status.value = status_html("error", text)

    # -- fallback ---------------------------------------------------------------------
    def _summary(self) -> dict[str, Any]:
        c = self.compute
        return {
            "provider": self.provider.value, "gpu": f"{self.gpu.value} ×{self.gpu_count.value}",
            "image": self.image.value or None, "auth": self.auth.value,
            "compute": f"{c.id} ({c.status})" if c else None,
            "urls": [p.url for p in c.ports if p.url] if c else None,
            "error": self.error,
        }

    def text(self) -> str:
        parts = ", ".join(f"{k}={v}" for k, v in self._summary().items() if v)
        return f"SpawnPanel({parts})"

    def html(self) -> str:
        return kv_table("SpawnPanel", self._summary())
