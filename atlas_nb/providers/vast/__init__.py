"""Vast.ai: rent the best offer of the marketplace, manage it as an instance.

Wire translation lives in ``wire``; this module does the calls.

>>> import atlas_nb as atlas
>>> c = atlas.spawn_compute(provider="vast", gpu="rtx_4090", image="me/srv:1",
...                         ports=[(8000, "http")], max_price_per_hour=0.6)  # doctest: +SKIP
>>> atlas.wait_ready(c.id, provider="vast").url                          # doctest: +SKIP
'http://<public ip>:<mapped port>'
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar

from ..._http import decode
from ...errors import (
    AtlasError,
    NotFound,
    ProviderError,
    RateLimited,
    Timeout,
    TransportError,
    ValidationError,
)
from ...gpus import canonical
from ...models import COMPUTE_STATUSES, Compute, ComputeRequest, GpuType
from ..base import BaseProvider
from . import wire

__all__ = ["Vast"]

OFFER_ATTEMPTS = 4
"""Offers tried per spawn when the chosen one vanishes (``no_such_ask``) before it is rented."""
CREATE_ATTEMPTS = 3
"""Creates sent per offer after failures (lost answers, 5xx); each retry only after a lookup
by label proved nothing was made."""
RATE_LIMITED_ATTEMPTS = 5
"""Creates sent per offer while Vast answers 429 (it refused, so nothing was made)."""
_BACKOFF_S = 0.5
_BACKOFF_MAX_S = 8.0
_MAX_PAGES = 400


class Vast(BaseProvider):
    """The Vast.ai provider (``provider="vast"``). Key: ``VAST_API_KEY``.

    * ``spawn_compute`` searches offers (``POST /api/v0/bundles/``) for the GPU,
      ``gpu_count``, ``max_price_per_hour``, ``region_hints`` (country codes),
      ``cloud_type`` (``secure`` = datacenter hosts) and reliability >= 0.95, then
      rents the cheapest (``PUT /api/v0/asks/{id}/``). An offer that vanished
      (404/410 ``no_such_ask``) makes it try the next one, up to ``OFFER_ATTEMPTS``.
    * ``spot=True`` searches interruptible offers and bids ``max_price_per_hour``,
      or the offer's ``min_bid`` without a cap.
    * A create is never replayed blindly: after a lost answer, a 5xx or a 429 (Vast
      sends no ``Retry-After``: back off) the instance is looked up by its label
      and the ``ATLAS_REQUEST_ID`` env marker before another try.
    * Ports: ``http://ip:port`` / ``tcp://ip:port`` from the instance's port map.
    * ``provider_opts["search"]`` is merged into the search; the rest of
      ``provider_opts`` into the create body (``{"runtype": "ssh"}``, ``{"onstart": ...}``).
    """

    name: ClassVar[str] = "vast"
    apis: ClassVar[dict[str, str]] = {"rest": "https://console.vast.ai"}
    CAPABILITIES: ClassVar[frozenset[str]] = frozenset({"spot", "stop_start", "raw_tcp"})
    key_hint: ClassVar[str] = "pass api_key=, set VAST_API_KEY, or add it to the config file"

    # -- computes ---------------------------------------------------------------------
    def spawn_compute(self, request: ComputeRequest) -> Compute:
        query = wire.search_query(request, spot=request.spot)
        name = request.name or f"atlas-{secrets.token_hex(6)}"
        marker = secrets.token_hex(12)
        wire.create_body(request, name=name, marker=marker, bid=None)  # bad input fails first
        offers = wire.rank_offers(self._search(query), spot=request.spot)
        if not offers:
            raise ProviderError(
                f"no rentable Vast offer for {request.gpu_count}x {request.gpu}"
                + _constraints(request), provider=self.name,
                hint="raise max_price_per_hour, drop region_hints, or pick another GPU",
            )
        tried = []
        for offer in offers[:OFFER_ATTEMPTS]:
            bid = None
            if request.spot:
                bid = request.max_price_per_hour or wire.to_float(offer.get("min_bid"))
            body = wire.create_body(request, name=name, marker=marker, bid=bid)
            created = self._rent(int(offer["id"]), body, name, marker, request.name is None)
            if created is not None:
                return created
            tried.append(str(offer["id"]))
        raise ProviderError(
            f"every Vast offer tried for {request.gpu_count}x {request.gpu} vanished before it "
            f"could be rented (offers {', '.join(tried)})", provider=self.name,
            hint="Vast's marketplace moves by the second: try again",
        )

    def get_compute(self, compute_id: str) -> Compute:
        iid = _instance_id(compute_id)
        if iid is None:
            raise NotFound(f"no Vast instance {compute_id!r} (Vast ids are integers)",
                           provider=self.name)
        body = self.client("rest").request("GET", f"/api/v0/instances/{iid}/")
        row = body.get("instances") if isinstance(body, Mapping) else None
        if not isinstance(row, Mapping):
            raise NotFound(f"no Vast instance {iid}", provider=self.name, raw=body)
        return wire.compute_from_wire(row)

    def list_compute(
        self, *, status: str | None = None, name: str | None = None, gpu: str | None = None,
        region: str | None = None,
    ) -> list[Compute]:
        if status is not None and status not in COMPUTE_STATUSES:
            raise ValidationError(
                f"unknown status {status!r}; use one of {', '.join(COMPUTE_STATUSES)}"
            )
        gpu = canonical(gpu) if gpu is not None else None
        computes = (wire.compute_from_wire(r) for r in self._rows())
        return [c for c in computes
                if wire.matches(c, status=status, name=name, gpu=gpu, region=region)]

    def stop(self, compute_id: str) -> Compute:
        return self._set_state(compute_id, "stopped")

    def start(self, compute_id: str) -> Compute:
        return self._set_state(compute_id, "running")

    def terminate(self, compute_id: str) -> None:
        iid = _instance_id(compute_id)
        if iid is None:
            return None  # no Vast instance has such an id, so it is already gone
        try:
            self.client("rest").request("DELETE", f"/api/v0/instances/{iid}/")
        except NotFound:
            return None  # already gone: terminate is idempotent
        return None

    # -- catalog ----------------------------------------------------------------------
    def list_gpu_types(self) -> list[GpuType]:
        return wire.gpu_types_from_offers(self._search(wire.catalog_query()))

    # -- internals --------------------------------------------------------------------
    def _search(self, query: Mapping[str, Any]) -> list[Any]:
        # A search changes nothing, so it may be retried like a GET (429 and 5xx back off).
        body = self.client("rest").request("POST", "/api/v0/bundles/", json=query,
                                           idempotent=True)
        offers = body.get("offers") if isinstance(body, Mapping) else None
        return offers if isinstance(offers, list) else []

    def _rows(self, label: str | None = None) -> list[Mapping[str, Any]]:
        """Every instance row, following ``next_token`` (optionally one label only)."""
        params: dict[str, Any] = {"limit": 25}
        if label is not None:
            params["select_filters"] = json.dumps({"label": {"eq": label}})
        rows: list[Mapping[str, Any]] = []
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            page, token = wire.instance_page(
                self.client("rest").request("GET", "/api/v1/instances/", params=params))
            rows.extend(page)
            if token is None or token in seen:
                return rows
            seen.add(token)
            params["after_token"] = token
        raise ProviderError(f"Vast's instance list did not end after {_MAX_PAGES} pages",
                            provider=self.name)

    def _rent(self, offer_id: int, body: dict[str, Any], name: str, marker: str,
              name_is_ours: bool) -> Compute | None:
        """Rent one offer: the new instance, or ``None`` if the offer vanished.

        Never sent twice for one instance: before each retry (after a transport error, a
        5xx, a 429 or an answer without an id) the instance is looked up by label + marker.
        Gives up after ``CREATE_ATTEMPTS`` failures or ``RATE_LIMITED_ATTEMPTS`` 429s.
        """
        client = self.client("rest")
        last: AtlasError | None = None
        failures = limited = 0
        while failures < CREATE_ATTEMPTS and limited < RATE_LIMITED_ATTEMPTS:
            try:
                response = client.send("PUT", f"/api/v0/asks/{offer_id}/", json=body,
                                       idempotent=False)
            except (TransportError, Timeout) as exc:
                last = exc
            else:
                answer = decode(response)
                if response.is_success:
                    new = answer.get("new_contract") if isinstance(answer, Mapping) else None
                    if isinstance(new, int) and not isinstance(new, bool):
                        return self.get_compute(str(new))
                    last = ProviderError("create answered without new_contract",
                                         provider=self.name, raw=answer)
                else:
                    last = client.error(response.status_code, answer, response.headers)
                    if wire.offer_vanished(last):
                        # Our own earlier, lost create may be what took the offer, and
                        # Vast's list may have lagged behind it: look once more first.
                        if failures:
                            return self._find_created(name, marker, name_is_ours)
                        return None
                    if not isinstance(last, RateLimited) and response.status_code < 500:
                        raise last
            if isinstance(last, RateLimited):  # no Retry-After from Vast: back off
                limited += 1
                self._sleep(_backoff(limited, last.retry_after))
            else:
                failures += 1
            found = self._find_created(name, marker, name_is_ours)
            if found is not None:
                return found
            if failures < CREATE_ATTEMPTS and not isinstance(last, RateLimited):
                self._sleep(_backoff(failures, None))
        assert last is not None
        last.hint = f"no instance labelled {name!r} was created; it is safe to try again"
        raise last

    def _find_created(self, name: str, marker: str, name_is_ours: bool) -> Compute | None:
        try:
            rows = self._rows(label=name)
        except AtlasError as exc:
            exc.hint = (f"a create's answer was lost and the lookup failed: check "
                        f"list_compute(name={name!r}) before spawning again")
            raise
        for row in rows:
            if wire.is_our_create(row, name=name, marker=marker, name_is_ours=name_is_ours):
                return wire.compute_from_wire(row)
        return None

    def _set_state(self, compute_id: str, state: str) -> Compute:
        iid = _instance_id(compute_id)
        if iid is None:
            raise NotFound(f"no Vast instance {compute_id!r} (Vast ids are integers)",
                           provider=self.name)
        # Setting a state twice is harmless, so the PUT may be retried like a GET.
        self.client("rest").request("PUT", f"/api/v0/instances/{iid}/", json={"state": state},
                                    idempotent=True)
        return self.get_compute(str(iid))


def _instance_id(compute_id: Any) -> int | None:
    text = str(compute_id).strip() if isinstance(compute_id, (str, int)) else ""
    return int(text) if text.isdigit() else None


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, _BACKOFF_MAX_S)
    base: float = min(_BACKOFF_MAX_S, _BACKOFF_S * 2.0 ** (attempt - 1))
    return base * (0.5 + random.random() / 2)


def _constraints(request: ComputeRequest) -> str:
    parts = []
    if request.max_price_per_hour is not None:
        parts.append(f"under ${request.max_price_per_hour:g}/h")
    if request.region_hints:
        parts.append(f"in {', '.join(request.region_hints)}")
    if request.spot:
        parts.append("as an interruptible bid")
    return (" " + " ".join(parts)) if parts else ""
