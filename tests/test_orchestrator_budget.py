"""The budget guard (refusals before any provider call), accrued cost, and the config section."""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestrator_support import Clock, FlakyProvider, make_orchestrator

from atlas_nb.errors import AtlasError, ValidationError
from atlas_nb.models import ComputeRequest, GpuType
from atlas_nb.orchestrator import BudgetExceeded, Orchestrator, Settings
from atlas_nb.orchestrator.budget import estimate_price
from atlas_nb.orchestrator.settings import from_config


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider() -> FlakyProvider:
    return FlakyProvider()


def make(tmp_path: Path, clock: Clock, provider: FlakyProvider, **kw: object) -> Orchestrator:
    return make_orchestrator(tmp_path, clock, providers={"mock": provider}, idle_ttl_ms=0, **kw)


def test_budget_exceeded_is_an_atlas_error_of_kind_budget() -> None:
    assert issubclass(BudgetExceeded, AtlasError)
    assert BudgetExceeded.kind == "budget"


def test_hourly_cap_refuses_before_the_provider_is_called(
        tmp_path: Path, clock: Clock, provider: FlakyProvider) -> None:
    o = make(tmp_path, clock, provider, max_hourly_spend=7.0)
    o.spawn(provider="mock", gpu="h100", image="i")  # 2.99/h from the mock catalog
    o.spawn(provider="mock", gpu="h100", image="i")  # 5.98/h
    calls = len(provider.list_compute())
    with pytest.raises(BudgetExceeded, match=r"\$8\.97/h, above max_hourly_spend=7"):
        o.spawn(provider="mock", gpu="h100", image="i")
    assert len(provider.list_compute()) == calls  # refused before any create
    assert len(o.ledger.entries()) == 2  # and before the ledger
    o.spawn(provider="mock", gpu="rtx_4090", image="i")  # 0.69/h still fits
    assert o.cost().rate_per_hour == pytest.approx(2.99 * 2 + 0.69)
    o.shutdown()


def test_spot_and_gpu_count_change_the_estimate(tmp_path: Path, clock: Clock,
                                                provider: FlakyProvider) -> None:
    o = make(tmp_path, clock, provider, max_hourly_spend=4.0)
    o.spawn(provider="mock", gpu="h100", gpu_count=2, spot=True, image="i")  # 2 x 1.99
    with pytest.raises(BudgetExceeded):
        o.spawn(provider="mock", gpu="h100", gpu_count=2, image="i")  # 2 x 2.99
    o.shutdown()


def test_unknown_price_is_refused_under_an_hourly_cap_unless_given(
        tmp_path: Path, clock: Clock, provider: FlakyProvider) -> None:
    o = make(tmp_path, clock, provider, max_hourly_spend=5.0)
    with pytest.raises(BudgetExceeded, match=r"cannot estimate the price.*cost_per_hour="):
        o.spawn(provider="mock", image="cpu:1")  # a CPU machine: no catalog price
    assert provider.list_compute() == []
    c = o.spawn(provider="mock", image="cpu:1", cost_per_hour=0.5)
    assert o.tracked()[0].id == c.id
    o.shutdown()


def test_unknown_price_is_allowed_with_only_a_total_cap(tmp_path: Path, clock: Clock,
                                                       provider: FlakyProvider) -> None:
    o = make(tmp_path, clock, provider, max_total_spend=10.0)
    c = o.spawn(provider="mock", image="cpu:1")
    assert o.tracked()[0].cost_per_hour == 0.2  # what the provider reported
    assert c.cost_per_hour == 0.2
    o.shutdown()


def test_total_cap_counts_the_horizon_and_what_was_spent(tmp_path: Path, clock: Clock,
                                                        provider: FlakyProvider) -> None:
    o = make(tmp_path, clock, provider, max_total_spend=10.0)
    with pytest.raises(BudgetExceeded, match="for 4 h"):
        o.spawn(provider="mock", gpu="h100", image="i", max_lifetime_ms=4 * 3_600_000)
    c = o.spawn(provider="mock", gpu="h100", image="i", max_lifetime_ms=3 * 3_600_000)
    clock.advance(1800)
    assert o.cost().spent_total == pytest.approx(2.99 / 2)
    o.stop_tracked(c.id)
    clock.advance(3600)  # terminated computes stop accruing but stay counted
    assert o.cost().spent_total == pytest.approx(2.99 / 2)
    with pytest.raises(BudgetExceeded, match="above max_total_spend=10"):
        o.spawn(provider="mock", gpu="h100", image="i", max_lifetime_ms=3 * 3_600_000)
    o.shutdown()


def test_reaching_the_total_cap_terminates_running_computes(
        tmp_path: Path, clock: Clock, provider: FlakyProvider) -> None:
    o = make(tmp_path, clock, provider, max_total_spend=3.0)
    c = o.spawn(provider="mock", gpu="h100", image="i")  # 2.99 for the one-hour horizon
    clock.advance(3600)
    assert o.tick(reap=False) == []
    clock.advance(40)  # 2.99 * (3640 / 3600) > 3.0
    assert o.tick(reap=False) == [(c.id, "budget")]
    assert provider.live() == []
    with pytest.raises(BudgetExceeded, match="already spent"):
        o.spawn(provider="mock", gpu="h100", image="i", cost_per_hour=0.01)
    o.shutdown()


def test_cost_summary_accrues_per_second(tmp_path: Path, clock: Clock,
                                         provider: FlakyProvider) -> None:
    o = make(tmp_path, clock, provider, max_hourly_spend=100.0)
    a = o.spawn(provider="mock", gpu="h100", image="i")
    clock.advance(360)
    b = o.spawn(provider="mock", gpu="a10", image="i")
    clock.advance(360)
    summary = o.cost()
    assert summary.rate_per_hour == pytest.approx(2.99 + 0.6)
    assert summary.per_compute == pytest.approx({a.id: 2.99 * 0.2, b.id: 0.6 * 0.1})
    assert summary.accrued_live == pytest.approx(2.99 * 0.2 + 0.6 * 0.1)
    assert summary.max_hourly_spend == 100.0 and summary.max_total_spend is None
    o.shutdown()


def _gpu(canonical: str, price: float, cloud: str = "secure", count: int = 1,
         spot: float | None = None) -> GpuType:
    return GpuType(provider="x", id=canonical, canonical=canonical, price_per_hour=price,
                   spot_price_per_hour=spot, cloud_type=cloud, gpu_count=count)


def test_estimate_price_rules() -> None:
    catalog = [_gpu("h100_sxm", 3.0, "secure", spot=2.0), _gpu("h100_sxm", 2.5, "community"),
               _gpu("rtx_4090", 0.4), _gpu("rtx_4090", 3.0, count=8)]
    req = ComputeRequest(gpu="h100_sxm", image="i")
    assert estimate_price(req, catalog) == 3.0  # the highest matching cloud: conservative
    assert estimate_price(ComputeRequest(gpu="h100_sxm", image="i", cloud_type="community"),
                          catalog) == 2.5
    assert estimate_price(ComputeRequest(gpu="h100_sxm", image="i", spot=True), catalog) == 2.5
    assert estimate_price(ComputeRequest(gpu="h100", image="i"), catalog) == 3.0  # family
    assert estimate_price(ComputeRequest(gpu="rtx_4090", gpu_count=8, image="i"),
                          catalog) == 3.2  # max(8 x 0.4, the 8x entry's 3.0)
    assert estimate_price(ComputeRequest(gpu="h100_sxm", image="i", max_price_per_hour=1.5),
                          catalog) == 1.5
    assert estimate_price(ComputeRequest(gpu="l4", image="i"), catalog) is None
    assert estimate_price(ComputeRequest(image="i"), catalog) is None
    assert estimate_price(ComputeRequest(image="i"), catalog, cost_per_hour=0.3) == 0.3


def test_config_section_is_read_and_validated(config_file: Path, tmp_path: Path) -> None:
    config_file.write_text(
        "orchestrator:\n  name_prefix: alice-\n  idle_ttl_ms: null\n  grace_period_s: 30\n"
        "  reap_providers: [runpod]\n  max_hourly_spend: 5\n  max_total_spend: 50.5\n"
        "  heartbeat_interval_s: 2\n"
    )
    o = Orchestrator(ledger_path=tmp_path / "l.sqlite3", background=False, kernel_hooks=False)
    s = o.settings
    assert (s.name_prefix, s.idle_ttl_ms, s.grace_period_s, s.reap_providers) == (
        "alice-", None, 30.0, ("runpod",))
    assert (s.max_hourly_spend, s.max_total_spend, s.heartbeat_interval_s) == (5.0, 50.5, 2.0)
    c = o.spawn(provider="mock", gpu="h100", image="i")
    assert c.name is not None and c.name.startswith(f"alice-{o.ledger.ledger_id}-{o.session_id}-")
    o.shutdown()
    # constructor arguments win over the file
    o2 = Orchestrator(ledger_path=tmp_path / "l.sqlite3", background=False, kernel_hooks=False,
                      name_prefix="bob-", max_hourly_spend=1)
    assert (o2.settings.name_prefix, o2.settings.max_hourly_spend) == ("bob-", 1.0)


def test_defaults_without_a_config_file() -> None:
    s = from_config(None)
    assert s == Settings()
    assert (s.name_prefix, s.idle_ttl_ms, s.reap_interval_s, s.grace_period_s) == (
        "atlas-", 1_800_000, 60.0, 900.0)


@pytest.mark.parametrize(("section", "message"), [
    ({"name_prefix": "Atlas_"}, "name_prefix 'Atlas_' is invalid"),
    ({"idle_ttl_ms": -5}, "orchestrator.idle_ttl_ms=-5: must be an integer >= 0"),
    ({"reap_interval_s": 0}, "orchestrator.reap_interval_s=0: must be a number > 0"),
    ({"max_hourly_spend": "lots"}, "orchestrator.max_hourly_spend='lots'"),
    ({"terminate_attempts": 0}, "orchestrator.terminate_attempts=0"),
    ({"reap_providers": [1]}, "orchestrator.reap_providers"),
    ({"idle_ttl": 5}, "unknown orchestrator setting(s) idle_ttl"),
    ("yes", "must be a mapping"),
])
def test_bad_settings_name_the_key(section: object, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        from_config(section)
    assert message in str(err.value)


def test_unknown_constructor_option(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"unknown Orchestrator option.*idle_tll_ms"):
        Orchestrator(ledger_path=tmp_path / "l", idle_tll_ms=5)
