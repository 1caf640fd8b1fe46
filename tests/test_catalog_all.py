"""list_gpu_types over several providers: parallel fan-out, partial failure reported."""

from __future__ import annotations

import threading

import pytest

import atlas_nb
from atlas_nb.facade import Catalog, CatalogWarning
from atlas_nb.models import GpuType


class _Slow:
    """A duck-typed provider whose catalog call waits until every sibling has started."""

    name = "slow"
    barrier = threading.Barrier(2, timeout=5)

    def capabilities(self) -> frozenset[str]:
        return frozenset()

    def spawn_compute(self, request):  # pragma: no cover - not used here
        raise NotImplementedError

    get_compute = list_compute = terminate = spawn_compute

    def list_gpu_types(self) -> list[GpuType]:
        self.barrier.wait()  # deadlocks (BrokenBarrierError) unless calls run in parallel
        return [GpuType(provider=self.name, id="x", canonical="l4", price_per_hour=0.5)]


class _Broken(_Slow):
    name = "broken"

    def list_gpu_types(self) -> list[GpuType]:
        self.barrier.wait()
        raise atlas_nb.ProviderError("catalog down", provider=self.name, status=503)


def test_a_list_of_providers_is_fetched_in_parallel_and_merged() -> None:
    _Slow.barrier = threading.Barrier(2, timeout=5)
    catalog = atlas_nb.list_gpu_types(provider=[_Slow(), _Slow()])
    assert isinstance(catalog, Catalog)
    assert [g.provider for g in catalog] == ["slow", "slow"]
    assert catalog.failures == {}


def test_one_failing_provider_is_reported_and_the_rest_returned() -> None:
    _Slow.barrier = threading.Barrier(2, timeout=5)
    with pytest.warns(CatalogWarning, match="broken: .*catalog down"):
        catalog = atlas_nb.list_gpu_types(provider=[_Slow(), _Broken()])
    assert [g.provider for g in catalog] == ["slow"]
    assert set(catalog.failures) == {"broken"}
    assert isinstance(catalog.failures["broken"], atlas_nb.ProviderError)


def test_single_provider_returns_a_catalog_without_failures() -> None:
    catalog = atlas_nb.list_gpu_types(provider="mock")
    assert isinstance(catalog, Catalog) and catalog.failures == {}
    assert all(g.provider == "mock" and g.canonical for g in catalog)


def test_all_reports_providers_without_keys_instead_of_dropping_them() -> None:
    with pytest.warns(CatalogWarning) as record:
        catalog = atlas_nb.list_gpu_types(provider="all")
    assert set(catalog.failures) == set(atlas_nb.facade.all_providers())
    assert all(isinstance(e, atlas_nb.Unauthorized) for e in catalog.failures.values())
    assert "no API key" in str(record[0].message)
