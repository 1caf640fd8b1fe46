"""Vast.ai's REST API (``S/vast/rest``), at the vast-cli's trailing-slash paths.

* ``POST /api/v0/bundles/`` — offer search -> ``{"offers": [...]}``.
* ``PUT /api/v0/asks/{offer_id}/`` — rent -> ``{"success": true, "new_contract": id}``;
  a gone offer -> 404 (410 with ``cancel_unavail``) ``no_such_ask``; a bid below
  ``min_bid`` -> 400 ``invalid_price``; a bad body -> 400 ``invalid_args``.
* ``GET /api/v1/instances/?limit=&after_token=&order_by=&select_filters=&select_cols=``
  — keyset pages of at most 25 with ``next_token``.
* ``GET /api/v0/instances/{id}/`` -> ``{"instances": {...}}`` (a single object under
  the plural key; ``null`` for an id that is not, or no longer, there, and for a new
  instance while the ``show_lag`` knob holds it back).
* ``PUT /api/v0/instances/{id}/`` ``{"state": "running"|"stopped"}`` and/or ``{"label"}``.
* ``PUT /api/v0/instances/request_logs/{id}/`` ``{"tail", "filter", "daemon_logs"}`` ->
  ``{"success": true, "result_url": ...}``, the logs then served by ``S/vast/logs``.
* ``DELETE /api/v0/instances/{id}/`` -> ``{"success": true, "msg": ...}``; 404 ``not_found``.
* ``GET /api/v0/users/current/`` -> the key's user (``id``, ``email``, ``balance``...;
  never the key), as ``vastai show user`` reads it.

Errors are ``{"success": false, "error": code, "msg": text}``; a bad key is 401
``auth_error``. Rate limits are per endpoint and key, as a minimum interval
(``min_interval_s`` option, off by default), answered with a plain-text 429
``API requests too frequent: endpoint threshold=...`` and no ``Retry-After``.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..accounts import Accounts, acting_as, current
from ..cloud import BadBody, Clock, json_response, read_json
from .instances import InstanceStore, StoreError, parse_env
from .logs import LogBucket, log_lines
from .offers import OfferBook, SearchError

__all__ = ["MAX_PAGE", "VastRoutes", "build_app", "error_body", "too_frequent"]

MAX_PAGE = 25
_FILTERABLE = frozenset({"id", "actual_status", "intended_status", "cur_state", "next_state",
                         "gpu_name", "verification", "label", "image_uuid", "machine_id",
                         "host_id", "template_hash_id", "is_bid", "start_date", "public_ipaddr"})
_RUNTYPES = frozenset({"ssh", "jupyter", "args", "ssh_proxy", "ssh_direct", "jupyter_proxy",
                       "jupyter_direct"})
_FILTER_OPS = frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "in", "notin"})

Handler = Callable[[Request], Awaitable[Response]]


def error_body(status: int, error: str, msg: str, **extra: Any) -> Response:
    """Vast's common error shape."""
    return json_response({"success": False, "error": error, "msg": msg, **extra}, status)


def too_frequent(threshold: float | None = None) -> Response:
    """Vast's 429: plain text, no ``Retry-After``."""
    text = "API requests too frequent"
    if threshold is not None:
        text += f": endpoint threshold={threshold:g}"
    return PlainTextResponse(text, status_code=429)


class _Invalid(Exception):
    def __init__(self, status: int, error: str, msg: str, **extra: Any) -> None:
        super().__init__(msg)
        self.response = error_body(status, error, msg, **extra)


def _int_id(text: str, what: str) -> int:
    if not text.isdigit():
        raise _Invalid(400, "invalid_args", f"{what} {text!r} is not a valid integer id")
    return int(text)


def _json_param(request: Request, name: str, default: Any) -> Any:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        raise _Invalid(400, "invalid_request", f"{name} is not valid JSON") from None


class VastRoutes:
    """The handlers, over one offer book and one instance store."""

    def __init__(self, offers: OfferBook, store: InstanceStore, options: Mapping[str, Any],
                 rng_draw: Callable[[], float], bucket: LogBucket | None = None) -> None:
        self.offers = offers
        self.store = store
        self.bucket = bucket or LogBucket()
        self.vanish_probability = float(options.get("vanish_probability", 0.0))
        # Knobs for tests (settable here too): rows per list page, how many instance lists
        # a new instance is missing from (Vast's list can lag behind a rent), and offers
        # that are found by a search but gone when rented (another renter was faster).
        self.page_size = int(options.get("page_size", MAX_PAGE))
        self.list_lag = int(options.get("list_lag", 0))
        self.vanish_on_rent: set[int] = set(options.get("vanish_on_rent", ()))
        # How many reads (GET /instances/{id}/) of a new instance answer
        # {"instances": null} right after its rent succeeded: Vast's read can trail its
        # write, so a client must not take that null for "no such instance".
        self.show_lag = int(options.get("show_lag", 0))
        self._hidden: dict[int, int] = {}
        self._unshown: dict[int, int] = {}
        self._draw = rng_draw
        self._lock = threading.Lock()

    # -- offers ---------------------------------------------------------------------------
    async def search(self, request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise _Invalid(400, "invalid_args", "the search body must be a JSON object")
        try:
            return json_response({"offers": self.offers.search(body)})
        except SearchError as exc:
            raise _Invalid(400, "invalid_args", str(exc)) from None

    async def rent(self, request: Request) -> Response:
        ask_id = _int_id(request.path_params["id"], "offer id")
        body = await read_json(request)
        env, port_specs = self._validate_create(ask_id, body)
        gone_status = 410 if body.get("cancel_unavail") else 404
        with self._lock:
            offer = self.offers.get(ask_id)
            if offer is not None and offer["rentable"] and (
                    ask_id in self.vanish_on_rent
                    or (self.vanish_probability > 0 and self._draw() < self.vanish_probability)):
                self.offers.vanish(ask_id)  # another renter got there first
                offer = None
            msg = (f"error 410/3907: no_such_ask Instance type {ask_id} is no longer "
                   "available." if gone_status == 410 else
                   f"error 404/3603: no_such_ask Instance type by id {ask_id} is not "
                   "available.")
            if offer is None or not offer["rentable"] or not self.offers.in_stock(offer):
                raise _Invalid(gone_status, "no_such_ask", msg, ask_id=ask_id)
            price = body.get("price")
            if price is not None and float(price) < float(offer["min_bid"]):
                raise _Invalid(400, "invalid_price",
                               f"error 400/3482: invalid_price bid {price} is below the offer's "
                               f"min_bid {offer['min_bid']}", ask_id=ask_id)
            if not self.offers.take_stock(offer):  # the override was lowered meanwhile
                raise _Invalid(gone_status, "no_such_ask", msg, ask_id=ask_id)
            taken = self.offers.take(ask_id)
            assert taken is not None
            rec = self.store.create(taken, body, env, port_specs)
            if self.list_lag > 0:
                self._hidden[rec.id] = self.list_lag
            if self.show_lag > 0:
                self._unshown[rec.id] = self.show_lag
        return json_response({"success": True, "new_contract": rec.id})

    @staticmethod
    def _validate_create(ask_id: int, body: Any) -> tuple[dict[str, str], list[str]]:
        def bad(msg: str) -> _Invalid:
            return _Invalid(400, "invalid_args", f"error 400/3467: Invalid args: {msg}",
                            ask_id=ask_id)

        if not isinstance(body, dict):
            raise bad("the body must be a JSON object")
        # vast-cli and the SDK send client_id "me" on every create (vastai 1.9.1
        # vastai/api/instances.py build_create_instance_payload): the caller's account.
        if body.get("client_id") not in (None, "me"):
            raise bad("client_id must be 'me' (the key's own account)")
        if not body.get("image") and not body.get("template_hash_id"):
            raise bad("'image' is required (or 'template_hash_id')")
        for key in ("image", "label", "onstart", "template_hash_id"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise bad(f"{key!r} must be a string")
        for key in ("disk", "price"):
            value = body.get(key)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
                raise bad(f"{key!r} must be a number")
        price = body.get("price")
        if price is not None and not 0.001 <= float(price) <= 128.0:
            raise _Invalid(400, "invalid_price", f"price {price} must be within [0.001, 128]",
                           ask_id=ask_id)
        if body.get("runtype") is not None and body["runtype"] not in _RUNTYPES:
            raise bad(f"runtype {body['runtype']!r} is not one of {sorted(_RUNTYPES)}")
        if body.get("target_state") not in (None, "running", "stopped"):
            raise bad("target_state must be 'running' or 'stopped'")
        args = body.get("args")
        if args is not None and not (isinstance(args, list)
                                     and all(isinstance(a, str) for a in args)):
            raise bad("'args' must be a list of strings")
        try:
            return parse_env(body.get("env"))
        except ValueError as exc:
            raise bad(str(exc)) from None

    # -- instances ------------------------------------------------------------------------
    async def list_instances(self, request: Request) -> Response:
        _check_owner(request)
        limit_text = request.query_params.get("limit", str(MAX_PAGE))
        try:
            limit = int(limit_text)
        except ValueError:
            raise _Invalid(400, "invalid_request", f"limit {limit_text!r} is not an integer") \
                from None
        limit = 5 if limit <= 0 else min(limit, self.page_size)
        filters = _check_filters(_json_param(request, "select_filters", {}))
        order = _json_param(request, "order_by", [{"col": "id", "dir": "asc"}])
        cols = _json_param(request, "select_cols", ["*"])
        keys = _order_keys(order)
        now = self.store.ctx.clock.time()
        with self._lock:
            hidden = {i for i, n in self._hidden.items() if n > 0}
            self._hidden = {i: n - 1 for i, n in self._hidden.items() if n > 1}
        rows = [self.store.row(r, now) for r in self.store.all() if r.id not in hidden]
        rows = [r for r in rows if _row_matches(r, filters)]
        rows.sort(key=lambda r: _row_key(r, keys))
        token = request.query_params.get("after_token")
        if token:
            after = _token_key(token, keys)
            rows_after = [r for r in rows if _row_key(r, keys) > after]
        else:
            rows_after = rows
        page = rows_after[:limit]
        next_token = None
        if len(rows_after) > limit:
            last = page[-1]
            values = {col: last.get(col) for col, _ in keys}
            next_token = base64.b64encode(json.dumps({"values": values}).encode()).decode()
        counts = Counter(r.get("label") or "" for r in rows)
        return json_response({
            "success": True,
            "instances_found": len(page),
            "total_instances": len(rows),
            "label_counts": dict(counts),
            "next_token": next_token,
            "instances": [_select(r, cols) for r in page],
        })

    async def show_instance(self, request: Request) -> Response:
        _check_owner(request)
        rec = self.store.get(_int_id(request.path_params["id"], "instance id"))
        if rec is not None:
            with self._lock:
                left = self._unshown.pop(rec.id, 0)
                if left > 1:
                    self._unshown[rec.id] = left - 1
            if left > 0:
                rec = None  # the read trails the rent
        return json_response({"instances": self.store.row(rec) if rec is not None else None})

    async def show_logs(self, request: Request) -> Response:
        # Spec operation showLogs; vastai 1.9.1 vastai/api/instances.py ``logs`` sends
        # {"tail": "1000", "filter": ..., "daemon_logs": "true"} (each only when set).
        instance_id = _int_id(request.path_params["id"], "instance id")
        body = await read_json(request) if (await request.body()).strip() else {}
        if not isinstance(body, dict):
            raise _Invalid(400, "invalid_args", "the body must be a JSON object")
        tail, grep, daemon = body.get("tail"), body.get("filter"), body.get("daemon_logs")
        if tail is not None and not (isinstance(tail, str) and tail.isdigit()):
            raise _Invalid(400, "invalid_args", "tail must be a number of lines, as text")
        if grep is not None and not isinstance(grep, str):
            raise _Invalid(400, "invalid_args", "filter must be a string")
        if daemon not in (None, "true"):
            raise _Invalid(400, "invalid_args", "daemon_logs must be 'true' when sent")
        rec = self.store.get(instance_id)
        if rec is None:
            return json_response({"error": "invalid_id", "msg": "Invalid instance id."}, 404)
        lines = log_lines(rec, rec.actual_status(self.store.ctx.clock.time()),
                          daemon=daemon == "true")
        if grep:
            lines = [line for line in lines if grep in line]
        if tail is not None:
            lines = lines[-int(tail):] if int(tail) else []
        key = self.bucket.put("".join(f"{line}\n" for line in lines))
        root = request.scope.get("root_path", "").rstrip("/")
        bucket_root = root.rsplit("/", 1)[0] + "/logs"  # S/vast/rest -> S/vast/logs
        url = f"{request.url.scheme}://{request.url.netloc}{bucket_root}/{key}"
        return json_response({"success": True, "result_url": url,
                              "msg": "logs uploaded; fetch them from result_url"})

    async def manage_instance(self, request: Request) -> Response:
        instance_id = _int_id(request.path_params["id"], "instance id")
        body = await read_json(request)
        if not isinstance(body, dict) or not ({"state", "label"} & set(body)):
            raise _Invalid(400, "invalid_args", "send 'state' and/or 'label'")
        state, label = body.get("state"), body.get("label")
        if state is not None and state not in {"running", "stopped"}:
            raise _Invalid(400, "invalid_args", f"state {state!r} is not 'running' or 'stopped'")
        if label is not None and not isinstance(label, str):
            raise _Invalid(400, "invalid_args", "label must be a string")
        rec = self.store.require(instance_id)
        if state is not None:
            self.store.set_state(instance_id, state)
        if label is not None:
            rec.label = label
        return json_response({"success": True})

    async def destroy_instance(self, request: Request) -> Response:
        rec = self.store.destroy(_int_id(request.path_params["id"], "instance id"))
        self.offers.release(int(rec.offer["id"]))
        return json_response({"success": True, "msg": f"Instance {rec.id} destroyed."})

    # -- the account ----------------------------------------------------------------------
    async def show_user(self, request: Request) -> Response:
        # The spec's showUser (specs/vast/vast-openapi.yaml, GET /api/v0/users/current):
        # id (integer), key_id, email, balance, ssh_key, sid. The live answer also carries
        # the caller's ``api_key``: vast-ai/vast-cli vast.py ``show__user`` GETs
        # /users/current?owner=me and pops "api_key" before printing. So does this one,
        # so a client that keeps the body is caught leaking the key.
        account = current()
        if account is None:  # served only behind the auth check, which sets it
            raise _Invalid(401, "auth_error", "Invalid user key")
        return json_response({"id": account.number, "key_id": 1000 + account.number,
                              "email": f"{account.id}@sandbox.invalid", "balance": 100.0,
                              "ssh_key": "", "sid": f"sandbox-{account.number}",
                              "api_key": account.key})


def _check_owner(request: Request) -> None:
    # ``owner=me`` scopes a read to the key's own account (vast-cli sends it on
    # GET /instances/{id}/, vastai 1.9.1 vastai/api/instances.py show_instance, and on
    # the instance list, vast-cli vast.py show__instances); no other owner is readable.
    owner = request.query_params.get("owner")
    if owner is not None and owner != "me":
        raise _Invalid(400, "invalid_request", f"owner {owner!r}: only 'me' can be read")


def _order_keys(order: Any) -> list[tuple[str, str]]:
    if not isinstance(order, list):
        raise _Invalid(400, "invalid_request", "order_by must be a JSON array")
    keys: list[tuple[str, str]] = []
    for entry in order:
        col = entry.get("col") if isinstance(entry, dict) else None
        if col not in _FILTERABLE:
            raise _Invalid(400, "invalid_request", f"order_by: {col!r} is not a valid column")
        keys.append((col, "desc" if entry.get("dir") == "desc" else "asc"))
    if not any(col == "id" for col, _ in keys):
        keys.append(("id", "asc"))  # always the tiebreaker, so pages are stable
    return keys


class _Desc:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Desc) -> bool:
        return bool(other.value < self.value)

    def __gt__(self, other: _Desc) -> bool:
        return bool(other.value > self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)


def _sortable(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    return (1, value) if isinstance(value, (int, float)) else (2, str(value))


def _row_key(row: Mapping[str, Any], keys: list[tuple[str, str]]) -> tuple[Any, ...]:
    return tuple(_sortable(row.get(c)) if d == "asc" else _Desc(_sortable(row.get(c)))
                 for c, d in keys)


def _token_key(token: str, keys: list[tuple[str, str]]) -> tuple[Any, ...]:
    try:
        values = json.loads(base64.b64decode(token, validate=True))["values"]
        if not isinstance(values, dict) or "id" not in values:
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _Invalid(400, "invalid_token", "after_token is not a token this API issued") \
            from None
    return _row_key(values, keys)


def _check_filters(filters: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(filters, dict):
        raise _Invalid(400, "invalid_request", "select_filters must be a JSON object")
    for col, ops in filters.items():
        if col not in _FILTERABLE:
            raise _Invalid(400, "invalid_request",
                           f"Error in query parameters: {col} is not a valid search key")
        if not isinstance(ops, dict) or not set(ops) <= _FILTER_OPS:
            raise _Invalid(400, "invalid_request",
                           f"select_filters.{col}: use {sorted(_FILTER_OPS)}")
    return filters


def _row_matches(row: Mapping[str, Any], filters: dict[str, dict[str, Any]]) -> bool:
    for col, ops in filters.items():
        have = row.get(col)
        for op, want in ops.items():
            if op in {"eq", "neq"}:
                if (have == want) != (op == "eq"):
                    return False
            elif op in {"in", "notin"}:
                if (isinstance(want, list) and have in want) != (op == "in"):
                    return False
            elif have is None or want is None or not _ordered(have, op, want):
                return False
    return True


def _ordered(have: Any, op: str, want: Any) -> bool:
    try:
        return bool({"gt": have > want, "gte": have >= want, "lt": have < want,
                     "lte": have <= want}[op])
    except TypeError:
        return False


def _select(row: dict[str, Any], cols: Any) -> dict[str, Any]:
    if not isinstance(cols, list) or "*" in cols:
        return row
    return {str(c): row.get(str(c)) for c in cols}


class _RateGate:
    """Per endpoint and key, a minimum interval between requests (Vast's rule)."""

    def __init__(self, clock: Clock, intervals: Mapping[str, float], default: float) -> None:
        self.clock = clock
        self.intervals = dict(intervals)
        self.default = default
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def allow(self, endpoint: str, identity: str) -> float | None:
        """``None`` if allowed (and counted), else the endpoint's threshold (seconds)."""
        interval = self.intervals.get(endpoint, self.default)
        if interval <= 0:
            return None
        now = self.clock.time()
        with self._lock:
            last = self._last.get((endpoint, identity))
            if last is not None and now - last < interval:
                return interval
            self._last[(endpoint, identity)] = now
        return None


def build_app(routes: VastRoutes, accounts: Accounts, clock: Clock,
              options: Mapping[str, Any]) -> Starlette:
    """The REST app: bearer auth (or ``?api_key=``) as one of ``accounts``, rate gate, routes,
    Vast error shapes."""
    spacing = options.get("min_interval_s", 0.0)
    gate = _RateGate(clock, spacing if isinstance(spacing, Mapping) else {},
                     0.0 if isinstance(spacing, Mapping) else float(spacing))

    def guarded(endpoint: str, handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            presented = token.strip() if scheme.lower() == "bearer" else ""
            presented = presented or request.query_params.get("api_key", "")
            account = accounts.by_key(presented)
            if account is None:
                return error_body(401, "auth_error", "Invalid user key")
            threshold = gate.allow(endpoint, presented)
            if threshold is not None:
                return too_frequent(threshold)
            with acting_as(account):  # it sees and rents its own instances only
                return await handler(request)

        return run

    table = [
        ("/api/v0/bundles", "searchOffers", routes.search, "POST"),
        ("/api/v0/asks/{id}", "createInstance", routes.rent, "PUT"),
        ("/api/v1/instances", "showInstances", routes.list_instances, "GET"),
        ("/api/v0/instances/{id}", "showInstance", routes.show_instance, "GET"),
        ("/api/v0/instances/{id}", "manageInstance", routes.manage_instance, "PUT"),
        ("/api/v0/instances/{id}", "destroyInstance", routes.destroy_instance, "DELETE"),
        ("/api/v0/instances/request_logs/{id}", "showLogs", routes.show_logs, "PUT"),
        ("/api/v0/users/current", "showUser", routes.show_user, "GET"),
    ]
    starlette_routes = []
    for path, endpoint, handler, method in table:
        wrapped = guarded(endpoint, handler)
        for variant in (path + "/", path):  # the CLI's trailing slash, and the spec's form
            starlette_routes.append(Route(variant, wrapped, methods=[method]))

    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _Invalid)
        return exc.response

    async def on_store(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StoreError)
        return json_response(exc.body, exc.status)

    async def on_bad_body(request: Request, exc: Exception) -> Response:
        return error_body(400, "invalid_args", str(exc))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return error_body(404, "not_found", f"no route {request.method} {request.url.path}")
        return error_body(exc.status_code, "invalid_request", str(exc.detail))

    return Starlette(
        routes=starlette_routes,
        exception_handlers={_Invalid: on_invalid, StoreError: on_store, BadBody: on_bad_body,
                            HTTPException: on_http},
    )
