"""The Vast provider against the in-process sandbox: what it sends, how it retries, how it maps
Vast's answers and errors. Scripted failures are sandbox faults (``sb.faults``) and cloud knobs
(vanished offers, list lag, page size); every exchange is checked against the vendored spec.
No sockets, no sleeping (``sleep=`` records)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb.providers.vast import CREATE_ATTEMPTS, OFFER_ATTEMPTS, RATE_LIMITED_ATTEMPTS, Vast
from atlas_nb.sandbox import sandbox_key, start
from atlas_nb.sandbox.server import Sandbox

pytest.importorskip("openapi_core", reason="contract validation needs openapi-core")

KEY = sandbox_key("vast")
ASKS = "vast/rest:PUT /api/v0/asks/*"


class Recorder(list[httpx.Request]):
    """Every request the provider sent, in order (an httpx event hook)."""

    def puts(self) -> list[httpx.Request]:
        return [r for r in self if r.method == "PUT" and "/asks/" in r.url.path]

    def to(self, path: str) -> list[httpx.Request]:
        return [r for r in self if r.url.path.endswith(path)]


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with start(clouds=["vast"], start_server=False, validate=True, provision_delay_s=30,
               start_delay_s=30) as box:
        yield box
        assert box.violations == [], "\n".join(box.violations)


@pytest.fixture
def sent(sb: Sandbox) -> Iterator[Recorder]:
    record = Recorder()
    yield record
    for request in record:  # the key travels in the header only, never in a URL
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert KEY not in str(request.url)


@pytest.fixture
def http(sb: Sandbox, sent: Recorder) -> Iterator[httpx.Client]:
    with sb.client(event_hooks={"request": [sent.append]}) as client:
        yield client


@pytest.fixture
def vast(http: httpx.Client, sleeps: list[float]) -> Vast:
    return Vast(http=http, sleep=sleeps.append)


def spawn(vast: Vast, **fields: Any) -> atlas.Compute:
    return vast.spawn_compute(atlas.ComputeRequest(**{"gpu": "rtx_4090", "image": "me/srv:1",
                                                      **fields}))


def ranked(sb: Sandbox, *, spot: bool = False, cap: float | None = None) -> list[dict[str, Any]]:
    """The reliable RTX 4090 offers, best first, from the sandbox's own book."""
    price = "min_bid" if spot else "dph_total"
    offers = [o for o in sb.vast.offers.search({
        "gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"eq": 1}, "type": "bid" if spot else
        "on-demand", "limit": 0, "allocated_storage": 16, "external": {"eq": False}})
        if o["reliability"] >= 0.95 and (cap is None or o["dph_total"] <= cap)]
    return sorted(offers, key=lambda o: (o[price], -o["reliability"]))


def rented_asks(sent: Recorder) -> list[int]:
    return [int(r.url.path.rstrip("/").rsplit("/", 1)[1]) for r in sent.puts()]


def make(sb: Sandbox, *, label: str) -> int:
    """Rent an instance straight from the sandbox (not through the provider, not recorded)."""
    with sb.client(headers={"Authorization": f"Bearer {KEY}"}) as http:
        r = http.put(f"{sb.url}/vast/rest/api/v0/asks/{ranked(sb)[0]['id']}/",
                     json={"image": "x:1", "label": label})
    assert r.status_code == 200, r.text
    return int(r.json()["new_contract"])


# -- spawn ------------------------------------------------------------------------------------
def test_spawn_rents_the_cheapest_reliable_offer(sb: Sandbox, vast: Vast, sent: Recorder) -> None:
    everything = sb.vast.offers.search({"gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"eq": 1},
                                        "limit": 0, "reliability": {"gte": 0}})
    best = ranked(sb, cap=0.5)[0]
    assert min(o["dph_total"] for o in everything) < best["dph_total"]  # a cheaper, flaky host
    c = spawn(vast, name="atlas-one", max_price_per_hour=0.5)
    assert rented_asks(sent) == [best["id"]]
    search = json.loads(sent.to("/api/v0/bundles/")[0].content)
    assert search["gpu_name"] == {"eq": "RTX 4090"} and search["dph_total"] == {"lte": 0.5}
    assert search["type"] == "on-demand" and "price" not in json.loads(sent.puts()[0].content)
    assert list(sb.vast.instances) == [int(c.id)]
    assert (c.name, c.status) == ("atlas-one", "provisioning")


@pytest.mark.parametrize("cancel_unavail", [False, True], ids=["404", "410"])
def test_a_vanished_offer_makes_it_rent_the_next(sb: Sandbox, vast: Vast, sent: Recorder,
                                                 cancel_unavail: bool) -> None:
    first, second, third = ranked(sb)[:3]
    sb.vast.routes.vanish_on_rent = {first["id"], second["id"]}  # gone between search and rent
    opts = {"cancel_unavail": True} if cancel_unavail else {}
    c = spawn(vast, provider_opts=opts)
    assert rented_asks(sent) == [first["id"], second["id"], third["id"]]
    (row,) = sb.vast.instances.values()
    assert row["id"] == int(c.id) and row["machine_id"] == third["machine_id"]


def test_vanishing_offers_are_tried_a_bounded_number_of_times(sb: Sandbox, vast: Vast,
                                                              sent: Recorder) -> None:
    sb.vast.vanish_probability = 1.0
    with pytest.raises(atlas.ProviderError, match="vanished before it could be rented") as err:
        spawn(vast)
    assert len(sent.puts()) == OFFER_ATTEMPTS
    assert "try again" in (err.value.hint or "")
    assert sb.vast.instances == {}


def test_no_offer_is_a_clear_error(vast: Vast, sent: Recorder) -> None:
    with pytest.raises(atlas.ProviderError, match=r"no rentable Vast offer for 1x rtx_4090 "
                                                  r"under \$0.01/h in US") as err:
        spawn(vast, max_price_per_hour=0.01, region_hints=["US"])
    assert "max_price_per_hour" in (err.value.hint or "")
    assert sent.puts() == []


def test_a_lost_create_answer_is_found_by_label_not_replayed(sb: Sandbox, vast: Vast,
                                                             sent: Recorder) -> None:
    sb.faults(ASKS, sequence=["lost"])
    c = spawn(vast, name="atlas-lost")
    assert len(sent.puts()) == 1 and list(sb.vast.instances) == [int(c.id)]
    assert c.name == "atlas-lost"
    lookup = sent.to("/api/v1/instances/")
    assert json.loads(lookup[0].url.params["select_filters"]) == {"label": {"eq": "atlas-lost"}}


def test_a_lost_create_the_list_lags_behind_is_still_not_duplicated(sb: Sandbox, vast: Vast,
                                                                      sent: Recorder) -> None:
    best = ranked(sb)[0]
    sb.vast.routes.list_lag = 1  # made, answer lost, the first lookup misses it
    sb.faults(ASKS, sequence=["lost"])
    c = spawn(vast, name="atlas-lag")
    assert rented_asks(sent) == [best["id"]] * 2  # the retry's no_such_ask: look again
    assert list(sb.vast.instances) == [int(c.id)]


@pytest.mark.parametrize("status", [500, 502])
def test_a_5xx_after_the_instance_was_made_is_found_not_replayed(sb: Sandbox, vast: Vast,
                                                                 sent: Recorder,
                                                                 status: int) -> None:
    sb.faults(ASKS, sequence=[f"applied:{status}"])
    c = spawn(vast, name="mine")
    assert len(sent.puts()) == 1 and list(sb.vast.instances) == [int(c.id)]


def test_a_5xx_create_with_nothing_made_is_retried_on_the_same_offer(
        sb: Sandbox, vast: Vast, sent: Recorder, sleeps: list[float]) -> None:
    best = ranked(sb)[0]
    sb.faults(ASKS, sequence=[500])
    c = spawn(vast)
    assert rented_asks(sent) == [best["id"]] * 2
    assert list(sb.vast.instances) == [int(c.id)]
    assert len(sleeps) == 1 and sleeps[0] > 0


def test_a_429_create_backs_off_rechecks_by_label_then_retries(
        sb: Sandbox, vast: Vast, sent: Recorder, sleeps: list[float]) -> None:
    sb.faults(ASKS, sequence=[429, 429])
    c = spawn(vast)
    assert len(sent.puts()) == 3 and list(sb.vast.instances) == [int(c.id)]
    assert len(sleeps) == 2 and 0 < sleeps[0] < 0.5 <= sleeps[1]  # exponential, jittered
    assert len(sent.to("/api/v1/instances/")) == 2


def test_repeated_429s_on_create_end_in_rate_limited_with_a_hint(sb: Sandbox, vast: Vast,
                                                                 sent: Recorder) -> None:
    sb.faults(ASKS, sequence=[429] * RATE_LIMITED_ATTEMPTS)
    with pytest.raises(atlas.RateLimited) as err:
        spawn(vast, name="atlas-busy")
    assert err.value.retry_after is None and "API requests too frequent" in str(err.value)
    assert "safe to try again" in (err.value.hint or "")
    assert len(sent.puts()) == RATE_LIMITED_ATTEMPTS and sb.vast.instances == {}


def test_repeated_failures_on_create_give_up_after_create_attempts(sb: Sandbox, vast: Vast,
                                                                   sent: Recorder) -> None:
    sb.faults(ASKS, sequence=[500] * CREATE_ATTEMPTS)
    with pytest.raises(atlas.ProviderError, match="injected fault") as err:
        spawn(vast)
    assert "safe to try again" in (err.value.hint or "")
    assert len(sent.puts()) == CREATE_ATTEMPTS and sb.vast.instances == {}


def test_a_refused_create_is_final(sb: Sandbox, vast: Vast, sent: Recorder) -> None:
    best = ranked(sb, spot=True)[0]
    # a search override finds offers above the cap, so the bid (the cap) is below min_bid
    with pytest.raises(atlas.ValidationError, match="below the offer's min_bid"):
        spawn(vast, spot=True, max_price_per_hour=round(best["min_bid"] / 2, 4),
              provider_opts={"search": {"dph_total": {"lte": 100}}})
    assert len(sent.puts()) == 1 and sb.vast.instances == {}


def test_spot_bids_min_bid_or_the_cap(sb: Sandbox, vast: Vast, sent: Recorder) -> None:
    best = ranked(sb, spot=True)[0]
    assert best["id"] != ranked(sb)[0]["id"]  # cheapest bid, not cheapest price
    spawn(vast, spot=True)
    assert json.loads(sent.to("/api/v0/bundles/")[0].content)["type"] == "bid"
    assert rented_asks(sent) == [best["id"]]
    assert json.loads(sent.puts()[-1].content)["price"] == best["min_bid"]
    cap = round(ranked(sb, spot=True)[0]["dph_total"] + 0.05, 2)
    spawn(vast, spot=True, max_price_per_hour=cap)
    assert json.loads(sent.puts()[-1].content)["price"] == cap


def test_bearer_token_goes_in_env_and_never_in_raw(sb: Sandbox, http: httpx.Client,
                                                   sent: Recorder) -> None:
    c = atlas.spawn_compute(provider=Vast(http=http), gpu="rtx_4090", image="me/srv:1",
                            auth="bearer", ports=[(8000, "http")])
    assert c.auth is not None
    assert sb.vast.instance_env(c.id)["ATLAS_PRESHARED_KEY"] == c.auth.token
    assert "-p 8000:8000" in json.loads(sent.puts()[0].content)["env"]
    assert c.raw.get("jupyter_token") is None
    for text in (json.dumps(c.raw), repr(c)):
        assert c.auth.token not in text and "jupyter_token" not in text


# -- get / list / lifecycle ---------------------------------------------------------------
def test_get_of_a_missing_or_non_integer_id_is_not_found(vast: Vast, sent: Recorder) -> None:
    with pytest.raises(atlas.NotFound, match="no Vast instance 123"):
        vast.get_compute("123")
    count = len(sent)
    with pytest.raises(atlas.NotFound, match="integers"):
        vast.get_compute("atlas-nope")
    assert len(sent) == count  # nothing to ask Vast about


def test_list_follows_next_token_across_pages(sb: Sandbox, vast: Vast, http: httpx.Client,
                                              sent: Recorder) -> None:
    sb.vast.routes.page_size = 4
    ids = [make(sb, label=f"job-{k % 2}") for k in range(11)]
    everything = vast.list_compute()
    assert [c.id for c in everything] == [str(i) for i in sorted(ids)]
    pages = sent.to("/api/v1/instances/")
    assert len(pages) == 3 and "after_token" in pages[1].url.params
    odd = {str(i) for i in ids if sb.vast.instances[i]["label"] == "job-1"}
    assert len(odd) == 5 and {c.id for c in vast.list_compute(name="job-1")} == odd
    with pytest.raises(atlas.ValidationError, match="unknown status"):
        vast.list_compute(status="booting")


def test_stop_and_start_put_the_state(sb: Sandbox, vast: Vast, http: httpx.Client,
                                      sent: Recorder) -> None:
    iid = make(sb, label="x")
    assert vast.stop(str(iid)).status == "stopped"
    assert vast.start(str(iid)).status == "provisioning"
    bodies = [json.loads(r.content) for r in sent if r.method == "PUT"]
    assert bodies == [{"state": "stopped"}, {"state": "running"}]
    with pytest.raises(atlas.NotFound):
        vast.stop(str(iid + 1))


def test_terminate_is_idempotent(sb: Sandbox, vast: Vast, http: httpx.Client,
                                 sent: Recorder) -> None:
    iid = make(sb, label="x")
    assert vast.terminate(str(iid)) is None
    assert vast.terminate(str(iid)) is None  # 404 not_found: already gone
    count = len(sent)
    assert vast.terminate("not-a-vast-id") is None
    assert len(sent) == count and sb.vast.instances == {}


def test_a_429_on_reads_backs_off_without_retry_after(sb: Sandbox, vast: Vast,
                                                      http: httpx.Client,
                                                      sleeps: list[float]) -> None:
    iid = make(sb, label="x")
    sb.faults("vast/rest:GET *", sequence=[429, 429])
    assert vast.get_compute(str(iid)).id == str(iid)
    assert len(sleeps) == 2 and all(s > 0 for s in sleeps)


def test_catalog_from_one_search(sb: Sandbox, vast: Vast, sent: Recorder) -> None:
    types = {(g.id, g.gpu_count): g for g in vast.list_gpu_types()}
    assert len(sent.to("/api/v0/bundles/")) == 1
    g = types[("RTX 4090", 1)]
    offers = [o for o in sb.vast.offers.search({"limit": 0, "external": {"eq": False}})
              if (o["gpu_name"], o["num_gpus"]) == ("RTX 4090", 1)]
    assert (g.provider, g.canonical) == ("vast", "rtx_4090")
    assert g.price_per_hour == min(o["dph_total"] for o in offers)
    assert g.raw["median_price_per_hour"] > g.price_per_hour


# -- errors -----------------------------------------------------------------------------------
# Bodies Vast really sends that the sandbox does not (it answers its own documented shapes):
# each is parsed by the provider's error mapping, so these stay one scripted answer each.
@pytest.mark.parametrize(("status", "body", "kind", "needle"), [
    (403, {"success": False, "error": "invalid_args", "msg": "not your own"},
     atlas.Forbidden, "not your own"),
    (400, {"success": False, "error": "invalid_args", "msg": "bad filter"},
     atlas.ValidationError, "bad filter"),
    (400, {"error": "invalid_request", "msg": "dph_total is not a valid search key"},
     atlas.ValidationError, "not a valid search key"),
    (429, "API requests too frequent: endpoint threshold=1.0", atlas.RateLimited,
     "too frequent"),
    (429, {"detail": "API requests too frequent endpoint threshold=4.5"}, atlas.RateLimited,
     "threshold=4.5"),
    (502, "<html>Bad Gateway</html>", atlas.ProviderError, "Bad Gateway"),
])
def test_error_envelopes_map_to_atlas_errors(status: int, body: Any, kind: type,
                                             needle: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    vast = Vast(api_key=KEY, http=httpx.MockTransport(answer), sleep=lambda _: None)
    with pytest.raises(kind, match=needle) as err:
        vast.list_compute()
    assert err.value.provider == "vast" and err.value.status == status
    if kind is atlas.RateLimited:
        assert err.value.retry_after is None  # Vast sends no Retry-After


@pytest.mark.parametrize(("status", "kind", "needle"), [
    (401, atlas.Unauthorized, "Invalid user key"), (404, atlas.NotFound, "not found"),
    (429, atlas.RateLimited, "too frequent"), (500, atlas.ProviderError, "injected fault"),
])
def test_the_sandboxs_error_answers_map_to_atlas_errors(sb: Sandbox, http: httpx.Client,
                                                        status: int, kind: type,
                                                        needle: str) -> None:
    if status == 401:
        http = sb.client()  # not recorded: this key is meant to be wrong
    vast = Vast(api_key="wrong-key" if status == 401 else None, http=http, sleep=lambda _: None)
    if status == 404:
        with pytest.raises(kind, match=needle) as err:
            vast.stop("424242")
    else:
        if status != 401:
            sb.faults("vast/rest:GET /api/v1/instances/", error_rate={status: 1.0})
        with pytest.raises(kind, match=needle) as err:
            vast.list_compute()
    assert err.value.provider == "vast" and err.value.status == status
    if kind is atlas.RateLimited:
        assert err.value.retry_after is None  # Vast sends no Retry-After


def test_transport_failures_become_transport_errors(sb: Sandbox, http: httpx.Client) -> None:
    sb.faults("vast/rest:*", drop_rate=1.0)
    with pytest.raises(atlas.TransportError):
        Vast(http=http, sleep=lambda _: None).list_gpu_types()


def test_missing_key_says_how_to_set_one() -> None:
    sent = Recorder()
    with start(clouds=["vast"], start_server=False, attach=False) as box, \
            box.client(event_hooks={"request": [sent.append]}) as http, \
            pytest.raises(atlas.Unauthorized) as err:
        Vast(http=http).list_compute()
    assert "VAST_API_KEY" in (err.value.hint or "")
    assert list(sent) == []


def test_capabilities() -> None:
    assert atlas.capabilities(Vast) == frozenset({"spot", "stop_start", "raw_tcp"})
