"""The Vast provider against the sandbox's Vast cloud over loopback sockets: offer choice,
vanishing offers, lost answers, 429s, paging, spot, the status map over a real lifecycle.
Contract validation is on and every module's sandbox must end with no violation."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from typing import Any

import pytest

import atlas_nb as atlas
from atlas_nb import sandbox
from atlas_nb.providers.vast import OFFER_ATTEMPTS, Vast
from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.server import Sandbox

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

IMAGE = "atlas/test:1"
ASKS = "vast/rest PUT /api/v0/asks/{id}"


def _no_sleep(_: float) -> None:
    pass


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with sandbox.start(clouds=["vast"], validate=True, provision_delay_s=0.02,
                       start_delay_s=0.02, options={"vast": {"offers_per_row": 10}}) as box:
        assert box.url.startswith("http://127.0.0.1:")
        yield box
        assert box.violations == [], "\n".join(box.violations)


@pytest.fixture(autouse=True)
def _clean(sb: Sandbox) -> Iterator[None]:
    sandbox.attach(sb.url)
    yield
    sb.faults.clear()
    sb.vast.vanish_probability = 0.0
    for iid in list(sb.vast.instances):
        atlas.terminate(str(iid), provider="vast")


def spawn(**fields: Any) -> atlas.Compute:
    return Vast(sleep=_no_sleep).spawn_compute(
        atlas.ComputeRequest(**{"gpu": "rtx_4090", "image": IMAGE, **fields}))


def best_offer(sb: Sandbox, *, spot: bool = False, cap: float | None = None,
               countries: tuple[str, ...] = ()) -> dict[str, Any]:
    """What the provider should rent, computed from the sandbox's own book."""
    price = "min_bid" if spot else "dph_total"
    offers = [o for o in sb.vast.offers.search({
        "gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"eq": 1}, "type": "bid" if spot else
        "on-demand", "limit": 0, "allocated_storage": 16, "external": {"eq": False}})
        if o["reliability"] >= 0.95 and (cap is None or o["dph_total"] <= cap)
        and (not countries or o["geolocation"][-2:] in countries)]
    return min(offers, key=lambda o: (o[price], -o["reliability"]))


def test_spawn_rents_the_cheapest_reliable_offer_and_reaches_running(sb: Sandbox) -> None:
    expected = best_offer(sb)
    c = spawn(ports=[(8000, "http"), (22, "tcp")], name="atlas-int-1")
    row = sb.vast.instances[int(c.id)]
    assert row["machine_id"] == expected["machine_id"]
    assert row["label"] == "atlas-int-1" and c.name == "atlas-int-1"
    ready = atlas.wait_ready(c.id, provider="vast", timeout_s=10, poll_s=0.05)
    http, tcp = ready.ports
    assert http.url == f"http://{row['public_ipaddr']}:{http.external}"
    assert tcp.url == f"tcp://{row['public_ipaddr']}:{tcp.external}"
    assert ready.cost_per_hour == pytest.approx(row["dph_total"])


def test_price_cap_and_region_hints_narrow_the_choice(sb: Sandbox) -> None:
    expected = best_offer(sb, cap=0.45, countries=("DE",))
    c = spawn(max_price_per_hour=0.45, region_hints=["DE"])
    assert sb.vast.instances[int(c.id)]["machine_id"] == expected["machine_id"]
    assert c.region is not None and c.region.endswith("DE")
    with pytest.raises(atlas.ProviderError, match="no rentable Vast offer"):
        spawn(max_price_per_hour=0.01)


def test_a_vanished_best_offer_makes_it_rent_the_next(sb: Sandbox) -> None:
    first = best_offer(sb)
    sb.vast.vanish_offer(first["id"])
    second = best_offer(sb)
    c = spawn()
    assert sb.vast.instances[int(c.id)]["machine_id"] == second["machine_id"]


def test_a_market_where_every_offer_vanishes_fails_clearly_and_boundedly(sb: Sandbox) -> None:
    sb.vast.vanish_probability = 1.0
    sb.reset_stats()
    with pytest.raises(atlas.ProviderError, match="vanished before it could be rented"):
        spawn()
    assert sb.stats()["routes"][ASKS] == OFFER_ATTEMPTS
    assert sb.vast.instances == {}


def test_lost_create_answers_make_no_duplicates() -> None:
    with sandbox.start(clouds=["vast"], validate=True, seed=3, provision_delay_s=0,
                       options={"vast": {"offers_per_row": 16}}) as box:
        rule = box.faults("vast/rest:PUT /api/v0/asks/*", lost_response_rate=0.4)
        vast = Vast(sleep=_no_sleep)
        returned = [vast.spawn_compute(atlas.ComputeRequest(gpu="rtx_5090", image=IMAGE)).id
                    for _ in range(20)]
        assert len(set(returned)) == 20
        assert {str(i) for i in box.vast.instances} == set(returned)
        assert rule.injected["lost"] >= 4, rule
        assert box.stats()["routes"][ASKS] == 20  # found by label, never re-sent
        assert box.violations == []


def test_429s_and_drops_on_create_back_off_and_make_no_duplicates(sb: Sandbox) -> None:
    rule = sb.faults("vast/rest:PUT /api/v0/asks/*", rate_limit_429=0.3, drop_rate=0.15,
                     seed=4)
    returned = [spawn(gpu="rtx_5090").id for _ in range(8)]
    assert len(set(returned)) == 8 and set(returned) <= {str(i) for i in sb.vast.instances}
    assert rule.injected[429] >= 1 and rule.injected["drop"] >= 1, rule


def test_list_follows_next_token_past_one_page(sb: Sandbox) -> None:
    vast = Vast(sleep=_no_sleep)
    made = {spawn(gpu="rtx_5090" if i % 2 else "rtx_4090", name=f"atlas-page-{i}").id
            for i in range(14)}
    made |= {spawn(gpu="h100", name=f"atlas-page-h{i}").id for i in range(14)}
    sb.reset_stats()
    listed = vast.list_compute(name="atlas-page-")
    assert {c.id for c in listed} == made and len(made) == 28
    assert sb.stats()["routes"]["vast/rest GET /api/v1/instances"] == 2
    assert {c.id for c in vast.list_compute(gpu="h100")} >= {
        c.id for c in listed if (c.name or "").startswith("atlas-page-h")}


def test_spot_bids_the_min_bid_and_an_outbid_instance_reads_stopped(sb: Sandbox) -> None:
    expected = best_offer(sb, spot=True)
    c = spawn(spot=True)
    row = sb.vast.instances[int(c.id)]
    assert row["is_bid"] is True and row["machine_id"] == expected["machine_id"]
    assert row["dph_base"] == expected["min_bid"]
    sb.vast.outbid(c.id)
    assert atlas.get_compute(c.id, provider="vast").status == "stopped"


def test_catalog_prices_are_the_cheapest_and_median_offers(sb: Sandbox) -> None:
    types = {(g.id, g.gpu_count): g for g in atlas.list_gpu_types(provider="vast")}
    offers = [o for o in sb.vast.offers.search({"limit": 0, "external": {"eq": False}})
              if (o["gpu_name"], o["num_gpus"]) == ("RTX 4090", 1)]
    g = types[("RTX 4090", 1)]
    assert g.canonical == "rtx_4090"
    assert g.price_per_hour == min(o["dph_total"] for o in offers)
    assert g.raw["median_price_per_hour"] == statistics.median(o["dph_total"] for o in offers)
    assert g.spot_price_per_hour == min(o["min_bid"] for o in offers)
    assert ("H200", 8) in types and types[("H200", 8)].regions == ("FR",)


def test_bearer_auth_reaches_the_instance_env_and_stays_out_of_raw(sb: Sandbox) -> None:
    c = atlas.spawn_compute(provider="vast", gpu="rtx_4090", image=IMAGE, auth="bearer",
                            ports=[(8000, "http")], env={"MODEL": "llama 3"})
    assert c.auth is not None
    env = sb.vast.instance_env(c.id)
    assert env["ATLAS_PRESHARED_KEY"] == c.auth.token and env["MODEL"] == "llama 3"
    for seen in (c, atlas.get_compute(c.id, provider="vast"),
                 *atlas.list_compute(provider="vast")):
        text = json.dumps(seen.raw)
        assert c.auth.token not in text and "jupyter_token" not in text


def test_status_map_over_a_real_lifecycle() -> None:
    clock = ManualClock()
    with sandbox.start(clouds=["vast"], validate=True, clock=clock, provision_delay_s=5,
                       start_delay_s=5) as box:
        vast = Vast(sleep=_no_sleep)
        c = vast.spawn_compute(atlas.ComputeRequest(gpu="rtx_4090", image=IMAGE,
                                                    ports=[(8000, "http")]))
        seen = [c.status, c.raw["actual_status"]]
        clock.advance(5)
        loading = vast.get_compute(c.id)
        clock.advance(5)
        running = vast.get_compute(c.id)
        stopped = vast.stop(c.id)
        started = vast.start(c.id)
        box.vast.set_offline(c.id)
        offline = vast.get_compute(c.id)
        assert seen == ["provisioning", None]
        assert [(x.status, x.raw["actual_status"]) for x in
                (loading, running, stopped, started, offline)] == [
            ("provisioning", "loading"), ("running", "running"), ("stopped", "stopped"),
            ("provisioning", "loading"), ("unknown", "offline")]
        assert running.ready and not loading.ready
        assert box.violations == []
