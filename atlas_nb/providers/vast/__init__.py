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

from ...errors import AtlasError, NotFound, ProviderError
from ...gpus import GpuIds
from ...models import Compute, ComputeRequest, GpuType
from ..base import BaseProvider, CreateRetry, Lookup, TargetGone, filter_computes, to_float
from . import wire

__all__ = ["Vast"]

OFFER_ATTEMPTS = 4
"""Offers tried per spawn when the chosen one vanishes (``no_such_ask``) before it is rented."""
CREATE_ATTEMPTS = 3
"""Creates sent per offer after failures (lost answers, 5xx); each retry only after a lookup
by label proved nothing was made."""
RATE_LIMITED_ATTEMPTS = 5
"""Creates sent per offer while Vast answers 429 (it refused, so nothing was made)."""
READ_ATTEMPTS = 5
"""Reads of a just-rented instance while Vast answers ``{"instances": null}`` (or fails);
after them the spawn returns what the rent made, ``provisioning``, rather than lose it."""
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
    aliases: ClassVar[tuple[str, ...]] = ("vastai",)
    key_env: ClassVar[tuple[str, ...]] = ("VAST_API_KEY",)
    gpu_ids: ClassVar[GpuIds | None] = wire.GPU_IDS
    error_message = staticmethod(wire.error_message)
    sandbox_cloud: ClassVar[str | None] = "atlas_nb.sandbox.vast:VastCloud"
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
                bid = request.max_price_per_hour or to_float(offer.get("min_bid"))
            body = wire.create_body(request, name=name, marker=marker, bid=bid)
            pending = wire.rented_row(offer, request, name=name, bid=bid)
            created = self._rent(int(offer["id"]), body, name, marker, request.name is None,
                                 pending)
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
        # owner=me: vast-cli's show instance sends it (vastai 1.9.1 vastai/api/instances.py).
        body = self.client("rest").request("GET", f"/api/v0/instances/{iid}/",
                                           params={"owner": "me"})
        row = body.get("instances") if isinstance(body, Mapping) else None
        if not isinstance(row, Mapping):
            raise NotFound(f"no Vast instance {iid}", provider=self.name, raw=body)
        return wire.compute_from_wire(row)

    def list_compute(
        self, *, status: str | None = None, name: str | None = None, gpu: str | None = None,
        region: str | None = None,
    ) -> list[Compute]:
        return filter_computes(lambda: map(wire.compute_from_wire, self._rows()),
                               status=status, name=name, gpu=gpu, region=region,
                               in_region=wire.in_region)

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

    # -- the account ------------------------------------------------------------------
    def account_fingerprint(self) -> str:
        """The key's Vast user id (``GET /api/v0/users/current/``, vast-cli's
        ``show user``), as ``vast:account:{id}@{host}``; cached per key."""

        def user_id() -> str:
            # vast-ai/vast-cli vast.py show__user: GET /users/current (the answer carries
            # the api_key too; only the id is read). idempotent: a plain read.
            body = self.client("rest").request("GET", "/api/v0/users/current/", idempotent=True)
            found = wire.user_id_from_wire(body)
            if found is None:
                raise ProviderError("Vast's users/current answered without an id",
                                    provider=self.name)
            return found

        return self.cached_account_id("rest", user_id)

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
        # owner=me, as vast-cli's instance list sent it (vast-cli vast.py show__instances);
        # vastai 1.9.1's v1 list leaves it out, and the real API scopes to the key either way.
        params: dict[str, Any] = {"owner": "me", "limit": 25}
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
              name_is_ours: bool, pending: Mapping[str, Any]) -> Compute | None:
        """Rent one offer (``create_once``): the new instance, or ``None`` if the offer vanished.

        Before each retry (after a transport error, a 5xx, a 429 or an answer without an
        id) the instance is looked up by label + marker. Gives up after ``CREATE_ATTEMPTS``
        failures or ``RATE_LIMITED_ATTEMPTS`` 429s (Vast sends no Retry-After: back off).
        """

        def ours(row: Mapping[str, Any]) -> Compute | None:
            mine = wire.is_our_create(row, name=name, marker=marker, name_is_ours=name_is_ours)
            return wire.compute_from_wire(row) if mine else None

        try:
            return self.create_once(
                self.client("rest"), "PUT", f"/api/v0/asks/{offer_id}/", body,
                parse=lambda answer: self._contract(answer, pending),
                lookup=Lookup(lambda: self._rows(label=name), ours, name),
                retry=CreateRetry(
                    CREATE_ATTEMPTS,
                    backoff=lambda failures: _backoff(failures, None),
                    rate_wait=lambda err, limited: _backoff(limited, err.retry_after),
                    rate_limited_attempts=RATE_LIMITED_ATTEMPTS, look_after_rate_limit=True,
                ),
                id_name="new_contract", not_made=f"no instance labelled {name!r} was created",
                gone=wire.offer_vanished,
            )
        except TargetGone:
            return None

    def _contract(self, answer: Any, pending: Mapping[str, Any]) -> Compute | None:
        """The instance a rent answer's ``new_contract`` names (``None``: it names none)."""
        new = answer.get("new_contract") if isinstance(answer, Mapping) else None
        if isinstance(new, int) and not isinstance(new, bool):
            return self._read_new(new, pending)
        return None

    def _read_new(self, iid: int, pending: Mapping[str, Any]) -> Compute:
        """The instance a successful rent made: read it, retrying briefly.

        Vast's read can trail its write: right after a rent, ``GET /instances/{id}/`` may
        answer ``{"instances": null}`` (a transport error or 5xx is no better). The rent
        happened, so its id must reach the caller (and the orchestrator's ledger) whatever
        the read says: after ``READ_ATTEMPTS`` reads it is returned as ``provisioning``,
        built from the offer it rented (``wire.rented_row``).
        """
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return self.get_compute(str(iid))
            except AtlasError:
                if attempt == READ_ATTEMPTS:
                    break
                self._sleep(_backoff(attempt, None))
        return wire.compute_from_wire({**pending, "id": iid})

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
