"""GPU catalogs cached per provider (and per sandbox URL) with a TTL, fetched in parallel.

A failed provider is not cached, so the next call tries it again; its error is
returned alongside the catalogs that did load, never dropped silently.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import AtlasError, UnknownError
from ..models import GpuType

__all__ = ["CACHE", "CatalogCache", "Fetched"]

Fetch = Callable[[str], Sequence[GpuType]]


class Fetched:
    """Catalog rows from several providers, plus ``failures`` (provider -> error)."""

    def __init__(self, items: list[GpuType], failures: dict[str, AtlasError]) -> None:
        self.items = items
        self.failures = failures


def _fetch_one(provider: str) -> Sequence[GpuType]:
    from ..facade import list_gpu_types

    return list_gpu_types(provider=provider)


class CatalogCache:
    """Per-provider catalogs with a TTL. ``fetch`` and ``clock`` are injectable."""

    def __init__(self, fetch: Fetch = _fetch_one,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._data: dict[tuple[str, str | None], tuple[float, list[GpuType]]] = {}

    @staticmethod
    def _scope() -> str | None:
        from .. import sandbox

        return sandbox.active_url()  # sandbox prices must never pass for real ones

    def get(self, providers: Sequence[str], *, ttl: float = 300.0,
            refresh: bool = False) -> Fetched:
        """The catalogs of ``providers``; stale or missing ones are fetched in parallel."""
        scope = self._scope()
        now = self._clock()
        fresh: dict[str, list[GpuType]] = {}
        with self._lock:
            for name in providers:
                hit = self._data.get((name, scope))
                if hit and not refresh and now - hit[0] < ttl:
                    fresh[name] = hit[1]
        missing = [p for p in providers if p not in fresh]
        failures: dict[str, AtlasError] = {}
        if missing:
            with ThreadPoolExecutor(max_workers=len(missing),
                                    thread_name_prefix="atlas-catalog") as pool:
                futures = {name: pool.submit(self._fetch, name) for name in missing}
            for name, future in futures.items():
                try:
                    items = list(future.result())
                except AtlasError as exc:
                    failures[name] = exc
                    continue
                except Exception as exc:  # a provider that cannot even load is a failure too
                    failures[name] = UnknownError(f"{type(exc).__name__}: {exc}", provider=name)
                    continue
                fresh[name] = items
                with self._lock:
                    self._data[(name, scope)] = (self._clock(), items)
        items = [g for name in providers if name in fresh for g in fresh[name]]
        return Fetched(items, failures)

    def clear(self) -> None:
        """Forget every cached catalog."""
        with self._lock:
            self._data.clear()

    def __repr__(self) -> str:
        with self._lock:
            return f"CatalogCache({len(self._data)} catalogs)"


CACHE = CatalogCache()
"""The process-wide cache the magics and panels share."""


def provider_names(value: Any) -> list[str]:
    """``None``/``"all"`` -> every catalog provider; a name or list -> those names."""
    from ..facade import all_providers
    from ..providers import provider_class

    if value is None or value == "all":
        return list(all_providers())
    names = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for name in names:
        for part in str(name).split(","):
            part = part.strip()
            if part == "all":
                out.extend(all_providers())
            elif part:  # a typo fails here, naming the close match, not as an empty frame
                canonical = getattr(provider_class(part), "name", None)  # an alias -> its name
                out.append(canonical if isinstance(canonical, str) else part)
    return list(dict.fromkeys(out))
