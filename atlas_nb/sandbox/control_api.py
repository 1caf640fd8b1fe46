"""The control API: drive a sandbox over HTTP, from another process, as ``sb`` does in-process.

Served at ``S/_control/`` beside the clouds (never faulted, never counted in stats).
Each resource answers ``GET`` (read), ``POST`` (set or add) and ``DELETE`` (clear);
every body is JSON and every error is ``{"error": "..."}`` with 400, 404, 405 or 409.

* ``/_control/faults``: the fault rules. ``POST`` takes the keyword arguments of
  ``sb.faults(...)`` as a JSON object (or a list of them): ``{"route": "runpod:POST
  /v2/pods", "error_rate": {"500": 1.0}, "count": 1}``; it answers the rule (201).
  Every parameter ``Faults.__call__`` accepts is accepted here, read off its
  signature, so a new kind of fault needs no code in this module. A rule reads back
  as ``rule.to_dict()`` plus ``id``, ``matched``, ``injected`` and ``exhausted``.
  ``/_control/faults/{id}``: one rule (``GET``, ``DELETE``).
* ``/_control/clock``: ``GET`` -> ``{"time", "manual"}``; ``POST {"advance_s": 30}``
  moves a manual clock (409 unless the sandbox was built with a clock that has
  ``advance``, such as ``cloud.ManualClock``: the wall clock cannot be moved).
* ``/_control/capacity``: the GPU stock overrides (``capacity.py``). ``POST
  {"cloud": "runpod", "gpu": "h100", "available": 0}`` (or a list); ``DELETE``
  clears all, or one cloud's / one GPU's with ``?cloud=runpod&gpu=h100``. Every
  answer is the overrides now: ``{"runpod": {"h100": 0}}``.
* ``/_control/accounts``: the clouds' accounts (``accounts.py``). ``GET`` ->
  ``{"runpod": [{"id": "default", "number": 1, "key": ...}, ...], ...}`` (``?cloud=``
  for one); ``POST {"cloud": "runpod"}`` (optionally ``"key"``) adds one and answers it
  (201); 400 for an unknown cloud or a key in use.
* ``/_control/stats`` and ``/_control/violations``: ``GET`` reads, ``DELETE`` resets.

No key guards it: the sandbox listens on loopback and holds nothing real.
"""

from __future__ import annotations

import inspect
import json
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .accounts import Account
from .app import CONTROL_PREFIX
from .cloud import ASGIApp, json_response
from .faults import FaultRule

if TYPE_CHECKING:
    from .server import Sandbox

__all__ = ["account_json", "build_control_app", "rule_json"]


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def rule_json(rule: FaultRule, rule_id: int) -> dict[str, Any]:
    """A fault rule as JSON: its parameters (``to_dict()``) and what it has done so far."""
    to_dict = getattr(rule, "to_dict", None)
    params: dict[str, Any] = to_dict() if callable(to_dict) else {"route": rule.route}
    return {
        "id": rule_id,
        **params,
        "matched": rule.matched,
        "injected": {str(k): v for k, v in rule.injected.items()},
        "exhausted": rule.exhausted,
    }


def account_json(account: Account) -> dict[str, Any]:
    """An account as JSON (its key is a sandbox key: not a secret, and tests need it)."""
    return {"id": account.id, "number": account.number, "key": account.key}


def _fault_params(faults: Any) -> frozenset[str]:
    """The keyword arguments ``sb.faults(...)`` takes (what a POSTed rule may hold)."""
    sig = inspect.signature(faults.__call__)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in sig.parameters.values() if p.kind in kinds)


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise _Refused(400, "send a JSON body")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _Refused(400, f"the body is not JSON: {exc}") from None


def _items(body: Any, what: str) -> list[Mapping[str, Any]]:
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(i, Mapping) for i in items):
        raise _Refused(400, f"send {what} as a JSON object (or a list of them)")
    return items


class _Control:
    """The handlers, over one sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox
        self._ids: weakref.WeakKeyDictionary[FaultRule, int] = weakref.WeakKeyDictionary()
        self._next = 0
        self._lock = threading.Lock()

    # -- faults ---------------------------------------------------------------------------
    def _id(self, rule: FaultRule) -> int:
        with self._lock:
            if rule not in self._ids:  # rules added in-process get an id when first seen
                self._next += 1
                self._ids[rule] = self._next
            return self._ids[rule]

    def _rule(self, request: Request) -> FaultRule:
        wanted = request.path_params["id"]
        for rule in self.sb.faults.rules:
            if str(self._id(rule)) == wanted:
                return rule
        raise _Refused(404, f"no fault rule {wanted}")

    async def list_faults(self, request: Request) -> Response:
        return json_response({"rules": [rule_json(r, self._id(r)) for r in self.sb.faults.rules]})

    async def add_faults(self, request: Request) -> Response:
        body = await _body(request)
        accepted = _fault_params(self.sb.faults)
        items = _items(body, "a fault rule")
        for item in items:  # check all before adding any
            unknown = sorted(set(item) - accepted)
            if unknown:
                raise _Refused(400, f"unknown fault parameter(s) {unknown}; "
                                    f"accepted: {', '.join(sorted(accepted))}")
        made: list[FaultRule] = []
        try:
            for item in items:
                made.append(self.sb.faults(**item))
        except (TypeError, ValueError) as exc:
            for rule in made:
                rule.clear()
            raise _Refused(400, f"bad fault rule: {exc}") from None
        rules = [rule_json(r, self._id(r)) for r in made]
        return json_response(rules if isinstance(body, list) else rules[0], 201)

    async def clear_faults(self, request: Request) -> Response:
        count = len(self.sb.faults.rules)
        self.sb.faults.clear()
        return json_response({"cleared": count})

    async def show_fault(self, request: Request) -> Response:
        rule = self._rule(request)
        return json_response(rule_json(rule, self._id(rule)))

    async def remove_fault(self, request: Request) -> Response:
        rule = self._rule(request)
        rule.clear()
        return json_response(rule_json(rule, self._id(rule)))

    # -- clock ----------------------------------------------------------------------------
    def _clock(self) -> dict[str, Any]:
        clock = self.sb.clock
        return {"time": clock.time(), "manual": callable(getattr(clock, "advance", None))}

    async def show_clock(self, request: Request) -> Response:
        return json_response(self._clock())

    async def move_clock(self, request: Request) -> Response:
        body = await _body(request)
        step = body.get("advance_s") if isinstance(body, Mapping) else None
        if isinstance(step, bool) or not isinstance(step, int | float) or step < 0:
            raise _Refused(400, 'send {"advance_s": seconds} with seconds >= 0')
        advance = getattr(self.sb.clock, "advance", None)
        if not callable(advance):
            raise _Refused(409, "this sandbox runs on the wall clock; start it with a manual "
                                "clock (Sandbox(clock=ManualClock())) to move time")
        advance(float(step))
        return json_response(self._clock())

    # -- capacity -------------------------------------------------------------------------
    def _cloud(self, name: Any) -> str:
        if not isinstance(name, str) or name not in self.sb.clouds:
            raise _Refused(400, f"no cloud {name!r} in this sandbox; "
                                f"it serves: {', '.join(self.sb.clouds)}")
        return name

    async def show_capacity(self, request: Request) -> Response:
        return json_response(self.sb.capacity.snapshot())

    async def set_capacity(self, request: Request) -> Response:
        items = _items(await _body(request), '{"cloud", "gpu", "available"}')
        settings = []
        for item in items:  # check all before setting any
            unknown = sorted(set(item) - {"cloud", "gpu", "available"})
            if unknown or not isinstance(item.get("gpu"), str):
                raise _Refused(400, 'send {"cloud": name, "gpu": canonical GPU, "available": n}')
            available = item.get("available")
            if isinstance(available, bool) or not isinstance(available, int) or available < 0:
                raise _Refused(400, f"available must be a whole number >= 0, not {available!r}")
            try:
                self.sb.capacity.get(self._cloud(item.get("cloud")), item["gpu"])
            except ValueError as exc:  # an unknown GPU name, with close matches
                raise _Refused(400, str(exc)) from None
            settings.append((item["cloud"], item["gpu"], available))
        for cloud, gpu, available in settings:
            self.sb.capacity.set(cloud, gpu, available)
        return json_response(self.sb.capacity.snapshot())

    async def clear_capacity(self, request: Request) -> Response:
        cloud, gpu = request.query_params.get("cloud"), request.query_params.get("gpu")
        if gpu is not None and cloud is None:
            raise _Refused(400, "clearing one GPU needs its cloud too: ?cloud=...&gpu=...")
        try:
            self.sb.capacity.clear(self._cloud(cloud) if cloud is not None else None, gpu)
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None
        return json_response(self.sb.capacity.snapshot())

    # -- accounts -------------------------------------------------------------------------
    async def show_accounts(self, request: Request) -> Response:
        wanted = request.query_params.get("cloud")
        names = [self._cloud(wanted)] if wanted is not None else list(self.sb.clouds)
        out: dict[str, list[dict[str, Any]]] = {}
        for name in names:
            try:
                out[name] = [account_json(a) for a in self.sb.accounts(name)]
            except ValueError:
                continue  # a cloud without accounts
        return json_response(out)

    async def add_account(self, request: Request) -> Response:
        body = await _body(request)
        if not isinstance(body, Mapping) or set(body) - {"cloud", "key"}:
            raise _Refused(400, 'send {"cloud": name} and optionally "key"')
        key = body.get("key")
        if key is not None and not isinstance(key, str):
            raise _Refused(400, "key must be a string")
        try:
            account = self.sb.add_account(self._cloud(body.get("cloud")), key)
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None
        return json_response(account_json(account), 201)

    # -- stats and violations -------------------------------------------------------------
    async def show_stats(self, request: Request) -> Response:
        return json_response(self.sb.stats())

    async def reset_stats(self, request: Request) -> Response:
        self.sb.reset_stats()
        return json_response(self.sb.stats())

    async def show_violations(self, request: Request) -> Response:
        return json_response({"violations": self.sb.violations})

    async def clear_violations(self, request: Request) -> Response:
        self.sb.clear_violations()
        return json_response({"violations": []})

    async def index(self, request: Request) -> Response:
        return json_response({
            name: f"{CONTROL_PREFIX}/{name}"
            for name in ("faults", "clock", "capacity", "accounts", "stats", "violations")
        })


async def _on_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Refused)
    return json_response({"error": str(exc)}, exc.status)


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = (f"no control API at {request.url.path}" if exc.status_code == 404
              else f"{request.method} is not allowed on {request.url.path}"
              if exc.status_code == 405 else str(exc.detail))
    return json_response({"error": detail}, exc.status_code, exc.headers)


def build_control_app(sandbox: Sandbox) -> ASGIApp:
    """The control API of ``sandbox``, to mount at ``CONTROL_PREFIX`` (``root_path`` set)."""
    c = _Control(sandbox)
    return Starlette(
        routes=[
            Route("/", c.index, methods=["GET"]),
            Route("/faults", c.list_faults, methods=["GET"]),
            Route("/faults", c.add_faults, methods=["POST"]),
            Route("/faults", c.clear_faults, methods=["DELETE"]),
            Route("/faults/{id}", c.show_fault, methods=["GET"]),
            Route("/faults/{id}", c.remove_fault, methods=["DELETE"]),
            Route("/clock", c.show_clock, methods=["GET"]),
            Route("/clock", c.move_clock, methods=["POST"]),
            Route("/capacity", c.show_capacity, methods=["GET"]),
            Route("/capacity", c.set_capacity, methods=["POST"]),
            Route("/capacity", c.clear_capacity, methods=["DELETE"]),
            Route("/accounts", c.show_accounts, methods=["GET"]),
            Route("/accounts", c.add_account, methods=["POST"]),
            Route("/stats", c.show_stats, methods=["GET"]),
            Route("/stats", c.reset_stats, methods=["DELETE"]),
            Route("/violations", c.show_violations, methods=["GET"]),
            Route("/violations", c.clear_violations, methods=["DELETE"]),
        ],
        exception_handlers={_Refused: _on_refused, HTTPException: _on_http},
    )
