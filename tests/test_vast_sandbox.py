"""The sandbox's Vast cloud on its own: offers from the real catalog, search, rent, vanishing
offers, the lifecycle on a manual clock, paging, errors and rate limits, every exchange
checked against the vendored spec (plus the cloud's documented errata)."""

from __future__ import annotations

import base64
import json
import statistics
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from atlas_nb.sandbox.cloud import ManualClock
from atlas_nb.sandbox.contract import Contract, HttpExchange
from atlas_nb.sandbox.server import Sandbox
from atlas_nb.sandbox.vast import ERRATA, SPEC

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

KEY = "sandbox-vast-key"
IMAGE = "atlas/test:1"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sb(clock: ManualClock) -> Iterator[Sandbox]:
    box = Sandbox(clouds=["vast"], start_server=False, attach=False, validate=True, clock=clock,
                  provision_delay_s=10, start_delay_s=20)
    with box:
        yield box


@pytest.fixture
def api(sb: Sandbox) -> Iterator[httpx.Client]:
    with sb.client(base_url=f"{sb.url}/vast/rest",
                   headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


def search(api: httpx.Client, **query: Any) -> list[dict[str, Any]]:
    r = api.post("/api/v0/bundles/", json=query)
    assert r.status_code == 200, r.text
    offers: list[dict[str, Any]] = r.json()["offers"]
    return offers


def cheapest(api: httpx.Client, gpu: str = "RTX 4090", n: int = 1) -> dict[str, Any]:
    return search(api, gpu_name={"eq": gpu}, num_gpus={"eq": n}, order=[["dph_total", "asc"]],
                  type="on-demand", limit=1)[0]


def rent(api: httpx.Client, ask: int, **body: Any) -> httpx.Response:
    return api.put(f"/api/v0/asks/{ask}/", json={"image": IMAGE, **body})


def instance(api: httpx.Client, iid: int) -> dict[str, Any] | None:
    r = api.get(f"/api/v0/instances/{iid}/")
    assert r.status_code == 200, r.text
    found: dict[str, Any] | None = r.json()["instances"]
    return found


# -- offers ----------------------------------------------------------------------------------
def test_offers_come_from_the_catalog_many_per_gpu_with_spread(sb: Sandbox,
                                                               api: httpx.Client) -> None:
    catalog = [r for r in sb.vast.offers.catalog
               if (r["gpu_name"], r["num_gpus"]) == ("RTX 4090", 1)]
    offers = search(api, gpu_name={"eq": "RTX 4090"}, num_gpus={"eq": 1}, verified={"eq": True},
                    limit=100)
    assert len(offers) >= 8
    prices = [o["dph_total"] for o in offers]
    assert max(prices) / min(prices) > 1.3  # hosts price the same machine differently
    median = statistics.median(r["price"] for r in catalog)
    assert abs(statistics.median(prices) - median) / median < 0.1
    assert {o["geolocation"] for o in offers} == {r["geolocation"] for r in catalog}
    assert len({o["reliability"] for o in offers}) > len(offers) // 2
    for o in offers:
        assert 0 < o["min_bid"] < o["dph_base"] < o["dph_total"]
        assert o["gpu_ram"] in {r["gpu_ram_mb"] for r in catalog} and o["rentable"] is True
    assert sb.violations == []


def test_search_filters_order_limit_and_bid_pricing(sb: Sandbox, api: httpx.Client) -> None:
    q = {"gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"eq": 1}, "dph_total": {"lte": 0.5},
         "rentable": {"eq": True}, "geolocation": {"in": ["US", "DE"]},
         "order": [["dph_total", "asc"]], "type": "on-demand", "limit": 3}
    offers = search(api, **q)
    assert 1 <= len(offers) <= 3
    assert [o["dph_total"] for o in offers] == sorted(o["dph_total"] for o in offers)
    assert all(o["dph_total"] <= 0.5 and o["geolocation"].endswith(("US", "DE")) for o in offers)
    bids = search(api, **{**q, "type": "bid", "dph_total": {"lte": 5}})
    for o in bids:
        assert o["dph_total"] == pytest.approx(o["min_bid"] + o["storage_total_cost"], abs=1e-6)
    spec_spelling = search(api, gpu_name={"in": ["RTX_4090", "RTX_3090"]}, limit=500)
    assert {o["gpu_name"] for o in spec_spelling} == {"RTX 4090", "RTX 3090"}
    assert sb.violations == []


def test_a_bad_search_is_a_400(api: httpx.Client) -> None:
    r = api.post("/api/v0/bundles/", json={"num_gpus": {"about": 2}})
    assert r.status_code == 400 and r.json()["error"] == "invalid_args"
    assert "unknown operator" in r.json()["msg"]


# -- rent and vanish --------------------------------------------------------------------------
def test_rent_answers_new_contract_and_takes_the_offer(sb: Sandbox, api: httpx.Client) -> None:
    best = cheapest(api)
    r = rent(api, best["id"], label="atlas-1", env="-e A=1 -p 8000:8000", disk=20)
    assert r.status_code == 200 and r.json()["success"] is True
    iid = r.json()["new_contract"]
    assert isinstance(iid, int)
    assert cheapest(api)["id"] != best["id"]  # rented: no longer on the market
    again = rent(api, best["id"])
    assert again.status_code == 404 and "no_such_ask" in again.json()["msg"]
    assert api.delete(f"/api/v0/instances/{iid}/").json()["success"] is True
    assert cheapest(api)["id"] == best["id"]  # back once the instance is gone
    assert sb.violations == []


def test_a_vanished_offer_answers_no_such_ask(sb: Sandbox, api: httpx.Client) -> None:
    best = cheapest(api)
    sb.vast.vanish_offer(best["id"])
    r = rent(api, best["id"])
    assert r.status_code == 404
    assert r.json()["success"] is False and r.json()["ask_id"] == best["id"]
    assert "no_such_ask" in r.json()["msg"]
    gone = rent(api, best["id"], cancel_unavail=True)
    assert gone.status_code == 410 and gone.json()["error"] == "no_such_ask"
    assert sb.vast.instances == {}
    assert sb.violations == []


def test_vanish_probability_makes_rents_fail_like_a_busy_market(sb: Sandbox,
                                                                api: httpx.Client) -> None:
    sb.vast.vanish_probability = 1.0
    best = cheapest(api)
    assert rent(api, best["id"]).status_code == 404
    assert best["id"] in sb.vast.offers.vanished
    sb.vast.vanish_probability = 0.0
    assert rent(api, cheapest(api)["id"]).status_code == 200
    with pytest.raises(ValueError):
        sb.vast.vanish_probability = 2.0


@pytest.mark.parametrize(("body", "error"), [
    ({"image": None}, "invalid_args"),
    ({"price": 500}, "invalid_price"),
    ({"price": 0.001}, "invalid_price"),  # below the offer's min_bid
    ({"env": "-e NOVALUE"}, "invalid_args"),
    ({"runtype": "telnet"}, "invalid_args"),
])
def test_bad_rents_are_400_with_vast_codes(api: httpx.Client, body: dict[str, Any],
                                           error: str) -> None:
    r = rent(api, cheapest(api)["id"], **body)
    assert r.status_code == 400 and r.json()["error"] == error


def test_a_bid_makes_an_interruptible_instance(sb: Sandbox, api: httpx.Client) -> None:
    best = cheapest(api)
    iid = rent(api, best["id"], price=best["min_bid"]).json()["new_contract"]
    row = instance(api, iid)
    assert row is not None and row["is_bid"] is True and row["dph_base"] == best["min_bid"]
    sb.vast.outbid(iid)
    row = instance(api, iid)
    assert row is not None and row["actual_status"] == "exited"
    assert sb.violations == []


# -- lifecycle --------------------------------------------------------------------------------
def test_lifecycle_null_loading_running_stopped_and_back(sb: Sandbox, api: httpx.Client,
                                                        clock: ManualClock) -> None:
    iid = rent(api, cheapest(api)["id"], env="-e A=1 -p 8000:8000").json()["new_contract"]
    seen = []
    for step in (0, 10, 20):
        clock.advance(step)
        row = instance(api, iid)
        assert row is not None
        seen.append((row["actual_status"], row["ports"] is not None))
    assert seen == [(None, False), ("loading", False), ("running", True)]
    row = instance(api, iid)
    assert row is not None
    assert row["ports"]["8000/tcp"][0]["HostIp"] == "0.0.0.0"
    assert ["A", "1"] in row["extra_env"] and ["-p 8000:8000", "1"] in row["extra_env"]
    assert api.put(f"/api/v0/instances/{iid}/", json={"state": "stopped"}).json() == {
        "success": True}
    row = instance(api, iid)
    assert row is not None and (row["actual_status"], row["intended_status"],
                                row["cur_state"]) == ("stopped", "stopped", "stopped")
    assert row["instance"]["gpuCostPerHour"] == 0  # a stopped instance pays for its disk only
    api.put(f"/api/v0/instances/{iid}/", json={"state": "running"})
    assert (instance(api, iid) or {})["actual_status"] == "loading"
    clock.advance(20)
    assert (instance(api, iid) or {})["actual_status"] == "running"
    sb.vast.set_offline(iid)
    assert (instance(api, iid) or {})["actual_status"] == "offline"
    assert sb.violations == []


def test_target_state_stopped_leaves_it_created(api: httpx.Client, clock: ManualClock) -> None:
    iid = rent(api, cheapest(api)["id"], target_state="stopped").json()["new_contract"]
    clock.advance(100)
    row = instance(api, iid)
    assert row is not None and (row["actual_status"], row["intended_status"]) == ("created",
                                                                                  "stopped")


def test_get_of_an_unknown_or_destroyed_id_is_null_and_destroy_twice_is_404(
        sb: Sandbox, api: httpx.Client) -> None:
    assert instance(api, 12345) is None
    iid = rent(api, cheapest(api)["id"]).json()["new_contract"]
    assert api.delete(f"/api/v0/instances/{iid}/").status_code == 200
    assert instance(api, iid) is None
    again = api.delete(f"/api/v0/instances/{iid}/")
    assert again.status_code == 404 and again.json()["error"] == "not_found"
    missing = api.put(f"/api/v0/instances/{iid}/", json={"state": "running"})
    assert missing.status_code == 404
    assert iid in sb.vast.destroyed
    assert sb.violations == []


# -- the list ---------------------------------------------------------------------------------
def test_list_pages_of_25_with_next_token(sb: Sandbox, api: httpx.Client) -> None:
    made = []
    for i in range(30):
        ask = search(api, order=[["dph_total", "asc"]], limit=1)[0]["id"]
        made.append(rent(api, ask, label=f"job-{i % 3}").json()["new_contract"])
    first = api.get("/api/v1/instances/", params={"limit": 25}).json()
    assert (first["instances_found"], first["total_instances"]) == (25, 30)
    assert first["label_counts"] == {"job-0": 10, "job-1": 10, "job-2": 10}
    second = api.get("/api/v1/instances/", params={"limit": 25,
                                                   "after_token": first["next_token"]}).json()
    assert second["next_token"] is None and second["instances_found"] == 5
    assert [r["id"] for r in first["instances"] + second["instances"]] == sorted(made)
    small = api.get("/api/v1/instances/", params={"limit": 0}).json()
    assert small["instances_found"] == 5  # <= 0 reads as 5
    labelled = api.get("/api/v1/instances/", params={
        "select_filters": json.dumps({"label": {"eq": "job-1"}}),
        "order_by": json.dumps([{"col": "id", "dir": "desc"}]),
        "select_cols": json.dumps(["id", "label", "actual_status"])}).json()
    assert [r["id"] for r in labelled["instances"]] == sorted(made[1::3], reverse=True)
    assert set(labelled["instances"][0]) == {"id", "label", "actual_status"}
    assert sb.violations == []


@pytest.mark.parametrize(("params", "error"), [
    ({"after_token": "not-a-token"}, "invalid_token"),
    ({"after_token": base64.b64encode(b'{"nope": 1}').decode()}, "invalid_token"),
    ({"select_filters": json.dumps({"dph_total": {"lte": 1}})}, "invalid_request"),
    ({"order_by": json.dumps([{"col": "num_gpus"}])}, "invalid_request"),
])
def test_bad_list_queries_are_400(api: httpx.Client, params: dict[str, str], error: str) -> None:
    r = api.get("/api/v1/instances/", params=params)
    assert r.status_code == 400 and r.json()["error"] == error


# -- auth, rate limits, faults ------------------------------------------------------------------
def test_a_bad_key_is_401_auth_error(sb: Sandbox) -> None:
    with sb.client(base_url=f"{sb.url}/vast/rest",
                   headers={"Authorization": "Bearer wrong"}) as client:
        for method, path in [("GET", "/api/v1/instances/"), ("GET", "/api/v0/instances/1/"),
                             ("DELETE", "/api/v0/instances/1/")]:
            r = client.request(method, path)
            assert r.status_code == 401 and r.json() == {
                "success": False, "error": "auth_error", "msg": "Invalid user key"}
    assert sb.violations == []


def test_rate_limit_is_plain_text_without_retry_after(clock: ManualClock) -> None:
    with Sandbox(clouds=["vast"], start_server=False, attach=False, clock=clock, validate=True,
                 options={"vast": {"min_interval_s": {"showInstances": 2.0}}}) as box, \
            box.client(base_url=f"{box.url}/vast/rest",
                       headers={"Authorization": f"Bearer {KEY}"}) as client:
        assert client.get("/api/v1/instances/").status_code == 200
        r = client.get("/api/v1/instances/")
        assert r.status_code == 429 and r.text == (
            "API requests too frequent: endpoint threshold=2")
        assert r.headers["content-type"].startswith("text/plain")
        assert "retry-after" not in r.headers
        assert client.get("/api/v0/instances/1/").status_code == 200  # per endpoint
        clock.advance(2.0)
        assert client.get("/api/v1/instances/").status_code == 200
        assert box.violations == []


def test_an_injected_429_looks_like_vasts(sb: Sandbox, api: httpx.Client) -> None:
    sb.faults("vast:PUT /api/v0/asks/*", rate_limit_429=1.0, count=1)
    r = rent(api, cheapest(api)["id"])
    assert r.status_code == 429 and r.text == "API requests too frequent"
    assert "retry-after" not in r.headers


# -- the spec and its errata ------------------------------------------------------------------
def _exchange(method: str, path: str, status: int, body: Any, ctype: str = "application/json"
              ) -> HttpExchange:
    ex = HttpExchange(method=method, path=path, headers={"authorization": f"Bearer {KEY}"})
    ex.status, ex.response_headers = status, {"content-type": ctype}
    ex.response_body = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ex


@pytest.mark.parametrize(("exchange", "flagged_by_the_spec_as_published"), [
    (_exchange("PUT", "/api/v0/asks/1/", 429, b"API requests too frequent", "text/plain"),
     "mimetype not found"),
    (_exchange("POST", "/api/v0/bundles/", 429, b"API requests too frequent", "text/plain"),
     "Unknown response http status: 429"),
    (_exchange("GET", "/api/v0/instances/1/", 200, {"instances": None}), "instances"),
    (_exchange("GET", "/api/v0/instances/1/", 200, {"instances": {
        "id": 1, "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "4000"}]},
        "extra_env": [["A", "1"]]}}), "ports"),
])
def test_each_erratum_is_needed_and_applied(exchange: HttpExchange,
                                            flagged_by_the_spec_as_published: str) -> None:
    as_published = Contract(SPEC).check_response(exchange)
    assert any(flagged_by_the_spec_as_published in line for line in as_published), as_published
    assert Contract(SPEC, ERRATA).check_response(exchange) == []


def test_the_clis_search_body_is_valid_with_the_errata_only() -> None:
    body = {"verified": {"eq": True}, "order": [["score", "desc"]], "type": "on-demand",
            "limit": 5}
    ex = HttpExchange(method="POST", path="/api/v0/bundles/", body=json.dumps(body).encode(),
                      headers={"authorization": f"Bearer {KEY}",
                               "content-type": "application/json"})
    assert Contract(SPEC).check_request(ex)  # "too short", and "on-demand" not in the enum
    assert Contract(SPEC, ERRATA).check_request(ex) == []


# -- issue 14: what vast-cli sends and what the real cloud answers ---------------------------
def test_outbid_exits_with_intended_status_kept_and_its_gpu_released(
        sb: Sandbox, api: httpx.Client) -> None:
    best = cheapest(api)
    iid = rent(api, best["id"], price=best["min_bid"]).json()["new_contract"]
    sb.vast.outbid(iid)
    row = instance(api, iid)
    assert row is not None
    assert (row["actual_status"], row["intended_status"], row["cur_state"]) == (
        "exited", "running", "stopped")
    assert row["instance"]["gpuCostPerHour"] == 0
    sb.vast.freeze(iid)
    row = instance(api, iid)
    assert row is not None and row["actual_status"] == "frozen"
    assert row["instance"]["gpuCostPerHour"] > 0  # frozen: "GPU charges apply"
    assert sb.violations == []


def test_search_reads_vast_clis_text_values_as_numbers(sb: Sandbox, api: httpx.Client) -> None:
    # vast-cli sends `num_gpus=1` as {"eq": "1"} and gpu_ram>=20 as 20000.0 (offers_mult).
    found = search(api, num_gpus={"eq": "1"}, gpu_ram={"gte": 20000.0}, limit=0)
    assert found and all(o["num_gpus"] == 1 and o["gpu_ram"] >= 20000 for o in found)
    assert sb.violations == []


def test_owner_me_and_client_id_me_are_accepted_and_others_refused(
        sb: Sandbox, api: httpx.Client) -> None:
    iid = rent(api, cheapest(api)["id"], client_id="me").json()["new_contract"]
    assert api.get(f"/api/v0/instances/{iid}/", params={"owner": "me"}).json()["instances"]
    assert api.get("/api/v1/instances/", params={"owner": "me"}).json()["instances"]
    assert api.get(f"/api/v0/instances/{iid}/", params={"owner": "7"}).status_code == 400
    assert rent(api, cheapest(api)["id"], client_id="someone").status_code == 400
    assert not [v for v in sb.violations if "owner" in v and "not declared" in v]


def test_show_lag_answers_null_right_after_a_rent(sb: Sandbox, api: httpx.Client) -> None:
    sb.vast.routes.show_lag = 2
    iid = rent(api, cheapest(api)["id"]).json()["new_contract"]
    assert [instance(api, iid) is None for _ in range(3)] == [True, True, False]
    assert sb.violations == []


def test_logs_are_requested_then_fetched_from_the_result_url(
        sb: Sandbox, api: httpx.Client, clock: ManualClock) -> None:
    iid = rent(api, cheapest(api)["id"], env="-e SECRET=hunter2").json()["new_contract"]
    clock.advance(40)
    r = api.put(f"/api/v0/instances/request_logs/{iid}/", json={"tail": "1"})
    assert r.status_code == 200 and r.json()["success"] is True
    url = r.json()["result_url"]
    assert url.startswith(f"{sb.url}/vast/logs/")
    with sb.client() as bucket:  # S3: no key
        text = bucket.get(url).text
    assert len(text.splitlines()) == 1 and "hunter2" not in text
    daemon = api.put(f"/api/v0/instances/request_logs/{iid}/",
                     json={"daemon_logs": "true", "filter": "pulling"})
    with sb.client() as bucket:
        assert "pulling atlas/test:1" in bucket.get(daemon.json()["result_url"]).text
    gone = api.put(f"/api/v0/instances/request_logs/{iid + 1}/", json={})
    assert gone.status_code == 404 and gone.json()["error"] == "invalid_id"
    assert sb.violations == []
