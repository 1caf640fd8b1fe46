"""The Vast.ai cloud of the sandbox: the offer marketplace and instances (``S/vast/rest``),
and the bucket its instance logs are fetched from (``S/vast/logs``).

``sb.vast`` is this object. Besides serving the API (see ``rest``) it offers
helpers for tests: ``offers`` (the ``OfferBook``), ``vanish_offer(id)`` (the next
rent of it answers ``no_such_ask``), ``vanish_probability`` (settable: each rent
may find its offer gone), ``instances`` (every live instance row, env included in
``extra_env``), ``instance_env(id)``, ``outbid(id)`` (an interruptible goes ``exited``, its
``intended_status`` kept), ``freeze(id)`` (``frozen``: paused, GPU still billed),
``set_offline(id)`` (the host drops: ``offline``), ``destroyed`` and the knobs
``provision_delay_s`` / ``start_delay_s``.

Options (``Sandbox(options={"vast": {...}})``): ``provision_delay_s``,
``start_delay_s``, ``offers_per_row`` (hosts per catalog row, default 6),
``vanish_probability`` (0..1, default 0), ``min_interval_s`` (seconds between two
requests to one endpoint with one key, a float for all or ``{"createInstance": 1.0}``;
default 0 = off), ``page_size`` (instance rows per list page, at most 25) and
``list_lag`` (how many instance lists a new instance is missing from, default 0),
``show_lag`` (how many reads of a new instance answer ``{"instances": null}`` right
after its rent succeeded, default 0) and ``vanish_on_rent`` (offer ids a search still
shows but a rent finds gone); the last four are also settable on ``sb.vast.routes``.
Past a sandbox-wide ``sb.capacity`` override (per canonical GPU) the GPU's offers
disappear from search.

Spec errata. The vendored spec (``vast/vast-openapi.yaml``) is validated as
published except where it contradicts how Vast answers; those places are patched
for validation by ``ERRATA`` below, each with its source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import PlainTextResponse, Response

from .. import sandbox_key
from ..accounts import Accounts
from ..cloud import Api, CloudContext, DelayKnobs, json_response
from .instances import InstanceStore
from .logs import LogBucket
from .offers import OfferBook
from .rest import VastRoutes, build_app, too_frequent

__all__ = ["ERRATA", "SPEC", "VastCloud"]

SPEC = "vast/vast-openapi.yaml"

_BUNDLES = "/paths/~1api~1v0~1bundles/post"
_ASKS = "/paths/~1api~1v0~1asks~1{id}/put"
_LIST = "/paths/~1api~1v1~1instances/get"
_ONE = "/paths/~1api~1v0~1instances~1{id}"
_SEARCH_BODY = f"{_BUNDLES}/requestBody/content/application~1json/schema/properties"
_ERROR = {"$ref": "#/components/schemas/Error"}
_TOO_FREQUENT = {
    "description": "Too Many Requests: plain text (sometimes JSON), no Retry-After",
    "content": {"text/plain": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}}},
}
_DOCKER_PORTS = {  # the v1 list item's own `ports` schema, in the same spec
    "type": ["object", "null"],
    "additionalProperties": {"type": "array", "items": {
        "type": "object",
        "properties": {"HostIp": {"type": "string"}, "HostPort": {"type": "string"}}}},
}
_ENV_PAIRS = {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}
_CREATE_BODY = f"{_ASKS}/requestBody/content/application~1json/schema/properties"
_OWNER_ME = {"name": "owner", "in": "query", "required": False,
             "schema": {"type": "string", "enum": ["me"]}}


def _nullable(kind: str, **limits: float) -> dict[str, Any]:
    return {"type": [kind, "null"], **limits}

ERRATA: tuple[tuple[str, Any], ...] = (
    # `order`'s minItems/maxItems sit on the outer list, so the CLI's default
    # [["score","desc"]] (one directive) is "too short"; the description says each
    # *entry* has two elements (vast-ai/vast-cli vastai/api/offers.py search_offers).
    (f"{_SEARCH_BODY}/order", {"type": "array", "items": {
        "type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}}),
    # `type`: the enum says "ondemand", the spec's own example and the CLI send "on-demand".
    (f"{_SEARCH_BODY}/type/enum", ["ondemand", "on-demand", "bid", "reserved"]),
    # 429 is plain text without Retry-After (docs: api-reference/rate-limits-and-errors);
    # the spec shows JSON only, and not at all for searchOffers.
    (f"{_BUNDLES}/responses/429", _TOO_FREQUENT),
    (f"{_ASKS}/responses/429", _TOO_FREQUENT),
    (f"{_LIST}/responses/429", _TOO_FREQUENT),
    (f"{_ONE}/get/responses/429", _TOO_FREQUENT),
    (f"{_ONE}/put/responses/429", _TOO_FREQUENT),
    (f"{_ONE}/delete/responses/429", _TOO_FREQUENT),
    # A bad key is a 401 with the common Error shape everywhere; two operations omit it.
    (f"{_BUNDLES}/responses/401", {"description": "Unauthorized",
                                   "content": {"application/json": {"schema": _ERROR}}}),
    (f"{_ONE}/delete/responses/401", {"description": "Unauthorized",
                                      "content": {"application/json": {"schema": _ERROR}}}),
    # showInstance returns the same row as the v1 list: Docker's port map and
    # [name, value] env pairs (vast-cli show_instance reads env_var[0], env_var[1]) ...
    ("/components/schemas/Instance/properties/ports", _DOCKER_PORTS),
    ("/components/schemas/Instance/properties/extra_env", _ENV_PAIRS),
    # ... and null for an id that is not there (vast-cli: `if row is None: return None`).
    (f"{_ONE}/get/responses/200/content/application~1json/schema/properties/instances",
     {"anyOf": [{"$ref": "#/components/schemas/Instance"}, {"type": "null"}]}),
    # createInstance as vast-cli sends it (vastai 1.9.1 vastai/api/instances.py
    # build_create_instance_payload): every optional field present, null when unset,
    # and `env` as an object ({"KEY": "value", "-p 8000:8000": "1"}, vastai/utils.py
    # parse_env), where the spec types them as plain strings and numbers.
    *((f"{_CREATE_BODY}/{name}", _nullable(kind)) for name, kind in (
        ("template_hash_id", "string"), ("onstart", "string"), ("jupyter_dir", "string"),
        ("user", "string"), ("image_login", "string"), ("label", "string"),
        ("image", "string"), ("extra", "string"))),
    (f"{_CREATE_BODY}/price", _nullable("number", minimum=0.001, maximum=128.0)),
    (f"{_CREATE_BODY}/env", {"type": ["string", "object", "null"]}),
    # `owner=me` on instance reads: vast-cli sends it on GET /instances/{id}/ (vastai
    # 1.9.1 show_instance) and sent it on the instance list (vast-cli vast.py
    # show__instances, GET /instances?owner=me); vastai 1.9.1's v1 list omits it. The
    # spec declares neither: declared here on the two paths (path-level parameters).
    ("/paths/~1api~1v0~1instances~1{id}/parameters", [_OWNER_ME]),
    ("/paths/~1api~1v1~1instances/parameters", [_OWNER_ME]),
)
"""(JSON pointer, replacement) pairs applied to the spec before validating."""


def _fault(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    # Vast sends no Retry-After, so an injected 429 drops the one the injector offers.
    if status == 429:
        return too_frequent()
    return json_response({"success": False, "error": "server_error", "msg": detail}, status)


def _bucket_fault(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    return PlainTextResponse(detail, status_code=status)


class VastCloud(DelayKnobs):
    """Vast.ai: a marketplace of offers from the real catalog, and rented instances."""

    name = "vast"

    def __init__(self, ctx: CloudContext) -> None:
        self.ctx = ctx
        self.key = sandbox_key(self.name)
        self.accounts = Accounts(self.name, self.key)
        """Its accounts (``accounts.py``): ``self.key`` is the default one's key."""
        self.offers = OfferBook(ctx)
        self.store = InstanceStore(ctx)
        self.bucket = LogBucket()
        draws = ctx.rng("vast-vanish")
        self.routes = VastRoutes(self.offers, self.store, ctx.options, draws.random,
                                 self.bucket)
        self.app = build_app(self.routes, self.accounts, ctx.clock, ctx.options)

    def __repr__(self) -> str:
        return f"VastCloud(offers={len(self.offers.all())}, instances={len(self.store.all())})"

    def apis(self) -> Sequence[Api]:
        """The REST API, validated against the vendored spec plus ``ERRATA``, and the log
        bucket (``logs``: S3 in Vast's case, outside its spec)."""
        return [Api("rest", self.app, _fault, spec=SPEC, errata=ERRATA),
                Api("logs", self.bucket.app(), _bucket_fault)]

    def close(self) -> None:
        """Nothing runs in the background."""

    # ---- knobs --------------------------------------------------------------------------
    @property
    def vanish_probability(self) -> float:
        """The chance that a rent finds its offer gone (``no_such_ask``)."""
        return self.routes.vanish_probability

    @vanish_probability.setter
    def vanish_probability(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError("vanish_probability must be within [0, 1]")
        self.routes.vanish_probability = float(value)

    # ---- helpers for tests --------------------------------------------------------------
    def vanish_offer(self, offer_id: int) -> None:
        """Take an offer off the market: renting it answers ``no_such_ask``."""
        self.offers.vanish(int(offer_id))

    @property
    def instances(self) -> dict[int, dict[str, Any]]:
        """Every live instance, id -> row (``extra_env`` included)."""
        return {r.id: self.store.row(r) for r in self.store.all()}

    @property
    def destroyed(self) -> list[int]:
        """Ids of the instances destroyed so far."""
        return list(self.store.destroyed)

    def instance_env(self, instance_id: int | str) -> dict[str, str]:
        """The env an instance was created with (what ``raw`` must never carry)."""
        iid = int(instance_id)
        rec = self.store.get(iid) or self.store.destroyed.get(iid)
        if rec is None:
            raise KeyError(f"no instance {instance_id}")
        return dict(rec.env)

    def outbid(self, instance_id: int | str) -> None:
        """An interruptible instance loses its bid: ``actual_status`` becomes ``exited``."""
        self.store.interrupt(int(instance_id))

    def freeze(self, instance_id: int | str) -> None:
        """The container is paused with its memory kept: ``actual_status`` ``frozen``,
        GPU still billed (Vast's docs' status table)."""
        self.store.freeze(int(instance_id))

    def set_offline(self, instance_id: int | str) -> None:
        """The instance's host drops off the network: ``actual_status`` ``offline``."""
        self.store.interrupt(int(instance_id), offline=True)
