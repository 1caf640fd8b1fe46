"""The Vast provider over an injected ``httpx.MockTransport``: what it sends, how it retries,
how it maps Vast's answers and errors. No sockets, no sleeping (``sleep=`` records)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

import atlas_nb as atlas
from atlas_nb.providers.vast import CREATE_ATTEMPTS, OFFER_ATTEMPTS, RATE_LIMITED_ATTEMPTS, Vast
from atlas_nb.sandbox.vast_instances import parse_env

KEY = "vast-test-key-0123456789"

Step = Callable[[httpx.Request], httpx.Response | None]


class FakeVast:
    """Just enough of Vast's API: offers, rent, instance rows, paging; scripted rent answers."""

    def __init__(self, offers: list[dict[str, Any]] | None = None) -> None:
        self.offers = offers if offers is not None else [
            offer(101, 0.30, reliability=0.80), offer(102, 0.35), offer(103, 0.40)]
        self.rows: dict[int, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.rent_script: list[str] = []  # per PUT /asks: "vanish", "lost", "429", "500", "ok"
        self.get_script: list[int] = []  # statuses to answer GETs with first
        self.next_id = 9000
        self.page_size = 25
        self.lagging: set[int] = set()  # rows the next list does not show yet
        self.taken: set[int] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert KEY not in str(request.url)
        path, method = request.url.path, request.method
        if method == "GET" and self.get_script:
            status = self.get_script.pop(0)
            return httpx.Response(status, text="API requests too frequent")
        if method == "POST" and path == "/api/v0/bundles/":
            return httpx.Response(200, json={"offers": self.offers})
        if method == "PUT" and path.startswith("/api/v0/asks/"):
            return self._rent(int(path.split("/")[4]), json.loads(request.content))
        if method == "GET" and path == "/api/v1/instances/":
            return self._list(request)
        if path.startswith("/api/v0/instances/"):
            iid = int(path.split("/")[4])
            if method == "GET":
                return httpx.Response(200, json={"instances": self.rows.get(iid)})
            if method == "PUT":
                if iid not in self.rows:
                    return httpx.Response(404, json={"success": False, "error": "not_found",
                                                     "msg": "Instance not found"})
                state = json.loads(request.content)["state"]
                self.rows[iid]["actual_status"] = "exited" if state == "stopped" else "loading"
                return httpx.Response(200, json={"success": True})
            if method == "DELETE":
                if self.rows.pop(iid, None) is None:
                    return httpx.Response(404, json={"success": False, "error": "not_found",
                                                     "msg": "Instance not found"})
                return httpx.Response(200, json={"success": True, "msg": "destroyed"})
        raise AssertionError(f"unexpected {method} {path}")

    def _rent(self, ask: int, body: dict[str, Any]) -> httpx.Response:
        step = self.rent_script.pop(0) if self.rent_script else "ok"
        if step == "vanish" or ask in self.taken:
            return httpx.Response(404, json={
                "success": False, "error": "invalid_args", "ask_id": ask,
                "msg": f"error 404/3603: no_such_ask Instance type by id {ask} is not available."})
        if step == "gone410":
            return httpx.Response(410, json={"success": False, "error": "no_such_ask",
                                             "msg": "gone", "ask_id": ask})
        if step == "429":
            return httpx.Response(429, text="API requests too frequent")
        if step == "500":
            return httpx.Response(500, json={"success": False, "error": "server_error",
                                             "msg": "boom"})
        if step == "invalid_price":
            return httpx.Response(400, json={"success": False, "error": "invalid_price",
                                             "msg": "bid below min_bid", "ask_id": ask})
        self.next_id += 1
        env, _ = parse_env(body.get("env"))
        self.rows[self.next_id] = row(self.next_id, label=body.get("label"), env=env, ask=ask,
                                      bid=body.get("price"))
        self.taken.add(ask)
        if step == "lost_lagging":
            self.lagging.add(self.next_id)
            raise httpx.RemoteProtocolError("connection closed mid-answer")
        if step == "lost":
            raise httpx.RemoteProtocolError("connection closed mid-answer")
        return httpx.Response(200, json={"success": True, "new_contract": self.next_id})

    def _list(self, request: httpx.Request) -> httpx.Response:
        q = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        rows = sorted((r for r in self.rows.values() if r["id"] not in self.lagging),
                      key=lambda r: r["id"])
        self.lagging.clear()
        if "select_filters" in q:
            label = json.loads(q["select_filters"])["label"]["eq"]
            rows = [r for r in rows if r["label"] == label]
        if "after_token" in q:
            after = json.loads(base64.b64decode(q["after_token"]))["values"]["id"]
            rows = [r for r in rows if r["id"] > after]
        page = rows[: self.page_size]
        token = None
        if len(rows) > self.page_size:
            token = base64.b64encode(json.dumps({"values": {"id": page[-1]["id"]}}).encode())
        return httpx.Response(200, json={
            "success": True, "instances_found": len(page), "total_instances": len(rows),
            "next_token": token.decode() if token else None, "instances": page})

    def puts(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "PUT" and "/asks/" in r.url.path]


def offer(ask: int, price: float, *, reliability: float = 0.99, min_bid: float = 0.1,
          gpu: str = "RTX 4090") -> dict[str, Any]:
    return {"id": ask, "gpu_name": gpu, "num_gpus": 1, "dph_total": price, "min_bid": min_bid,
            "reliability": reliability, "gpu_ram": 24564, "geolocation": "Texas, US"}


def row(iid: int, *, label: Any, env: dict[str, str], ask: int = 0,
        bid: float | None = None) -> dict[str, Any]:
    return {"id": iid, "label": label, "actual_status": None, "intended_status": "running",
            "gpu_name": "RTX 4090", "num_gpus": 1, "public_ipaddr": "192.0.2.9", "ports": None,
            "extra_env": [[k, v] for k, v in env.items()], "dph_total": 0.3, "ask": ask,
            "is_bid": bid is not None, "jupyter_token": "jt-secret", "start_date": 1.7e9}


@pytest.fixture
def fake() -> FakeVast:
    return FakeVast()


@pytest.fixture
def vast(fake: FakeVast, sleeps: list[float]) -> Vast:
    return Vast(api_key=KEY, http=httpx.MockTransport(fake), sleep=sleeps.append)


def spawn(vast: Vast, **fields: Any) -> atlas.Compute:
    return vast.spawn_compute(atlas.ComputeRequest(**{"gpu": "rtx_4090", "image": "me/srv:1",
                                                      **fields}))


# -- spawn ------------------------------------------------------------------------------------
def test_spawn_rents_the_cheapest_reliable_offer(vast: Vast, fake: FakeVast) -> None:
    c = spawn(vast, name="atlas-one", max_price_per_hour=0.5)
    assert [r.url.path for r in fake.puts()] == ["/api/v0/asks/102/"]  # 101 is unreliable
    search = json.loads(fake.requests[0].content)
    assert search["gpu_name"] == {"eq": "RTX 4090"} and search["dph_total"] == {"lte": 0.5}
    assert search["type"] == "on-demand" and "price" not in json.loads(fake.puts()[0].content)
    assert (c.id, c.name, c.status) == ("9001", "atlas-one", "provisioning")


def test_a_vanished_offer_makes_it_rent_the_next(vast: Vast, fake: FakeVast) -> None:
    fake.offers.append(offer(104, 0.45))
    fake.rent_script = ["vanish", "gone410"]
    c = spawn(vast)
    assert [r.url.path for r in fake.puts()] == [
        "/api/v0/asks/102/", "/api/v0/asks/103/", "/api/v0/asks/104/"]
    assert list(fake.rows) == [9001] and fake.rows[9001]["ask"] == 104 and c.id == "9001"


def test_vanishing_offers_are_tried_a_bounded_number_of_times(fake: FakeVast,
                                                              vast: Vast) -> None:
    fake.offers = [offer(200 + i, 0.2 + i / 100) for i in range(10)]
    fake.rent_script = ["vanish"] * 10
    with pytest.raises(atlas.ProviderError, match="vanished before it could be rented") as err:
        spawn(vast)
    assert len(fake.puts()) == OFFER_ATTEMPTS
    assert "try again" in (err.value.hint or "")
    assert fake.rows == {}


def test_no_offer_is_a_clear_error(fake: FakeVast, vast: Vast) -> None:
    fake.offers = []
    with pytest.raises(atlas.ProviderError, match=r"no rentable Vast offer for 1x rtx_4090 "
                                                  r"under \$0.2/h in US") as err:
        spawn(vast, max_price_per_hour=0.2, region_hints=["US"])
    assert "max_price_per_hour" in (err.value.hint or "")
    assert fake.puts() == []


def test_a_lost_create_answer_is_found_by_label_not_replayed(fake: FakeVast,
                                                             vast: Vast) -> None:
    fake.rent_script = ["lost"]
    c = spawn(vast, name="atlas-lost")
    assert len(fake.puts()) == 1 and len(fake.rows) == 1
    assert c.id == "9001" and c.name == "atlas-lost"
    lookup = [r for r in fake.requests if r.url.path == "/api/v1/instances/"]
    assert json.loads(lookup[0].url.params["select_filters"]) == {"label": {"eq": "atlas-lost"}}


def test_a_lost_create_the_list_lags_behind_is_still_not_duplicated(fake: FakeVast,
                                                                      vast: Vast) -> None:
    fake.offers.append(offer(104, 0.45))
    fake.rent_script = ["lost_lagging"]  # made, answer lost, first lookup misses it
    c = spawn(vast, name="atlas-lag")
    assert [r.url.path for r in fake.puts()] == ["/api/v0/asks/102/"] * 2
    assert list(fake.rows) == [9001] and c.id == "9001"  # the retry's no_such_ask: look again


def test_a_5xx_create_with_nothing_made_is_retried_on_the_same_offer(
        fake: FakeVast, vast: Vast, sleeps: list[float]) -> None:
    fake.rent_script = ["500", "ok"]
    c = spawn(vast)
    assert [r.url.path for r in fake.puts()] == ["/api/v0/asks/102/"] * 2
    assert len(fake.rows) == 1 and c.id == "9001"
    assert len(sleeps) == 1 and sleeps[0] > 0


def test_a_429_create_backs_off_rechecks_by_label_then_retries(
        fake: FakeVast, vast: Vast, sleeps: list[float]) -> None:
    fake.rent_script = ["429", "429", "ok"]
    c = spawn(vast)
    assert len(fake.puts()) == 3 and len(fake.rows) == 1 and c.id == "9001"
    assert len(sleeps) == 2 and 0 < sleeps[0] < 0.5 <= sleeps[1]  # exponential, jittered
    lookups = [r for r in fake.requests if r.url.path == "/api/v1/instances/"]
    assert len(lookups) == 2


def test_repeated_429s_on_create_end_in_rate_limited_with_a_hint(fake: FakeVast,
                                                                 vast: Vast) -> None:
    fake.rent_script = ["429"] * RATE_LIMITED_ATTEMPTS
    with pytest.raises(atlas.RateLimited) as err:
        spawn(vast, name="atlas-busy")
    assert err.value.retry_after is None and "API requests too frequent" in str(err.value)
    assert "safe to try again" in (err.value.hint or "")
    assert len(fake.puts()) == RATE_LIMITED_ATTEMPTS and fake.rows == {}


def test_repeated_failures_on_create_give_up_after_create_attempts(fake: FakeVast,
                                                                   vast: Vast) -> None:
    fake.rent_script = ["500"] * CREATE_ATTEMPTS
    with pytest.raises(atlas.ProviderError, match="boom") as err:
        spawn(vast)
    assert "safe to try again" in (err.value.hint or "")
    assert len(fake.puts()) == CREATE_ATTEMPTS and fake.rows == {}


def test_a_refused_create_is_final(fake: FakeVast, vast: Vast) -> None:
    fake.rent_script = ["invalid_price"]
    with pytest.raises(atlas.ValidationError, match="bid below min_bid"):
        spawn(vast, spot=True)
    assert len(fake.puts()) == 1


def test_spot_bids_min_bid_or_the_cap(fake: FakeVast, vast: Vast) -> None:
    fake.offers = [offer(1, 0.5, min_bid=0.21), offer(2, 0.4, min_bid=0.25)]
    spawn(vast, spot=True)
    assert json.loads(fake.requests[0].content)["type"] == "bid"
    assert fake.puts()[-1].url.path == "/api/v0/asks/1/"  # cheapest bid, not cheapest price
    assert json.loads(fake.puts()[-1].content)["price"] == 0.21
    spawn(vast, spot=True, max_price_per_hour=0.3)
    assert json.loads(fake.puts()[-1].content)["price"] == 0.3


def test_bearer_token_goes_in_env_and_never_in_raw(fake: FakeVast) -> None:
    c = atlas.spawn_compute(provider=Vast(api_key=KEY, http=httpx.MockTransport(fake)),
                            gpu="rtx_4090", image="me/srv:1", auth="bearer",
                            ports=[(8000, "http")])
    assert c.auth is not None
    env, ports = parse_env(json.loads(fake.puts()[0].content)["env"])
    assert env["ATLAS_PRESHARED_KEY"] == c.auth.token and ports == ["8000:8000"]
    for text in (json.dumps(c.raw), repr(c)):
        assert c.auth.token not in text and "jt-secret" not in text


# -- get / list / lifecycle ---------------------------------------------------------------
def test_get_of_a_missing_or_non_integer_id_is_not_found(vast: Vast, fake: FakeVast) -> None:
    with pytest.raises(atlas.NotFound, match="no Vast instance 123"):
        vast.get_compute("123")
    sent = len(fake.requests)
    with pytest.raises(atlas.NotFound, match="integers"):
        vast.get_compute("atlas-nope")
    assert len(fake.requests) == sent  # nothing to ask Vast about


def test_list_follows_next_token_across_pages(vast: Vast, fake: FakeVast) -> None:
    fake.page_size = 4
    for i in range(11):
        fake.rows[100 + i] = row(100 + i, label=f"job-{i % 2}", env={})
    everything = vast.list_compute()
    assert [c.id for c in everything] == [str(100 + i) for i in range(11)]
    pages = [r for r in fake.requests if r.url.path == "/api/v1/instances/"]
    assert len(pages) == 3 and "after_token" in pages[1].url.params
    assert {c.id for c in vast.list_compute(name="job-1")} == {"101", "103", "105", "107",
                                                               "109"}
    with pytest.raises(atlas.ValidationError, match="unknown status"):
        vast.list_compute(status="booting")


def test_stop_and_start_put_the_state(vast: Vast, fake: FakeVast) -> None:
    fake.rows[7] = row(7, label="x", env={})
    assert vast.stop("7").status == "stopped"
    assert vast.start("7").status == "provisioning"
    bodies = [json.loads(r.content) for r in fake.requests if r.method == "PUT"]
    assert bodies == [{"state": "stopped"}, {"state": "running"}]
    with pytest.raises(atlas.NotFound):
        vast.stop("8")


def test_terminate_is_idempotent(vast: Vast, fake: FakeVast) -> None:
    fake.rows[7] = row(7, label="x", env={})
    assert vast.terminate("7") is None
    assert vast.terminate("7") is None  # 404 not_found: already gone
    sent = len(fake.requests)
    assert vast.terminate("not-a-vast-id") is None
    assert len(fake.requests) == sent


def test_a_429_on_reads_backs_off_without_retry_after(vast: Vast, fake: FakeVast,
                                                      sleeps: list[float]) -> None:
    fake.rows[7] = row(7, label="x", env={})
    fake.get_script = [429, 429]
    assert vast.get_compute("7").id == "7"
    assert len(sleeps) == 2 and all(s > 0 for s in sleeps)


def test_catalog_from_one_search(vast: Vast, fake: FakeVast) -> None:
    types = vast.list_gpu_types()
    assert len([r for r in fake.requests if r.url.path == "/api/v0/bundles/"]) == 1
    (g,) = types
    assert (g.provider, g.id, g.canonical, g.price_per_hour) == ("vast", "RTX 4090", "rtx_4090",
                                                                 0.30)
    assert g.raw["median_price_per_hour"] == 0.35


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "body", "kind", "needle"), [
    (401, {"success": False, "error": "auth_error", "msg": "Invalid user key"},
     atlas.Unauthorized, "Invalid user key"),
    (403, {"success": False, "error": "invalid_args", "msg": "not your own"},
     atlas.Forbidden, "not your own"),
    (400, {"success": False, "error": "invalid_args", "msg": "bad filter"},
     atlas.ValidationError, "bad filter"),
    (400, {"error": "invalid_request", "msg": "dph_total is not a valid search key"},
     atlas.ValidationError, "not a valid search key"),
    (404, {"success": False, "error": "not_found", "msg": "Instance not found"},
     atlas.NotFound, "Instance not found"),
    (429, "API requests too frequent: endpoint threshold=1.0", atlas.RateLimited,
     "too frequent"),
    (429, {"detail": "API requests too frequent endpoint threshold=4.5"}, atlas.RateLimited,
     "threshold=4.5"),
    (500, {"success": False, "error": "server_error", "msg": "boom"}, atlas.ProviderError,
     "boom"),
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


def test_transport_failures_become_transport_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    vast = Vast(api_key=KEY, http=httpx.MockTransport(refuse), sleep=lambda _: None)
    with pytest.raises(atlas.TransportError):
        vast.list_gpu_types()


def test_missing_key_says_how_to_set_one() -> None:
    with pytest.raises(atlas.Unauthorized) as err:
        Vast(http=httpx.MockTransport(FakeVast())).list_compute()
    assert "VAST_API_KEY" in (err.value.hint or "")


def test_capabilities() -> None:
    assert atlas.capabilities(Vast) == frozenset({"spot", "stop_start", "raw_tcp"})
