"""Fly.io Machines: machines in an app, over the Machines API (``api.machines.dev``).

A compute id is ``"{app}/{machine_id}"``, so get/stop/start/terminate find the app.
The app comes, in order, from ``provider_opts={"app": ...}`` (per spawn),
``Fly(app=...)``, or ``providers.fly.default_app`` in the config file;
``provider_opts={"create_app": True}`` creates it when missing, with the public
addresses its ports need, and deletes it again after its last machine (``app_owner``).
Wire translation lives in ``wire`` and ``addresses``, the static price table in ``prices``.

>>> import atlas_nb as atlas
>>> c = atlas.spawn_compute(provider="fly", image="nginx:1", ports=[(80, "http")],
...                         provider_opts={"app": "my-app"})          # doctest: +SKIP
>>> atlas.wait_ready(c.id, provider="fly").url                        # doctest: +SKIP
'https://my-app.fly.dev'
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from ..._http import HttpClient, HttpOption, RetryPolicy
from ...config import provider_setting
from ...errors import (
    AtlasError,
    NotFound,
    ProviderError,
    RateLimited,
    Timeout,
    TransportError,
    ValidationError,
)
from ...fly.auth_header import authorization
from ...gpus import GpuIds
from ...models import Compute, ComputeRequest, GpuType
from ..base import BaseProvider, CreateRetry, Lookup, as_map, filter_computes
from . import prices, wire
from .app_owner import AppOwner, Prepared

__all__ = ["Fly"]

CREATE_ATTEMPTS = 3
"""Creates tried per spawn; each retry only after a lookup proved the last one created nothing."""
WAIT_CAP_S = 60
"""The Machines API holds a ``/wait`` for at most 60 s (fly-go clamps to the same)."""
DEFAULT_ORG = "personal"
STATE_POLL_S = 0.5
"""Pause between two GETs when the user's ``http=`` timeout leaves no room for ``/wait``."""
_ONE_SHOT = RetryPolicy(attempts=1)
_APP_HINT = (
    "pass provider_opts={'app': 'my-app'} (add 'create_app': True to create it), "
    "use atlas_nb.providers.fly.Fly(app='my-app'), or set providers.fly.default_app "
    "in the config file"
)


class Fly(BaseProvider):
    """The Fly.io Machines provider (``provider="fly"``). Key: ``FLY_API_TOKEN``.

    * Machines are spawned in an app (see the module docstring); the org for a new
      app is ``provider_opts["org"]``, ``providers.fly.org_slug`` or ``personal``.
    * ``gpu=None`` gives a CPU machine (``shared-cpu-1x``, 256 MB by default; ``cpus``
      and ``memory_gb`` size it, memory rounded up to 256 MB). GPUs map to Fly's
      ``gpu_kind`` (a10, l40s, a100-pcie-40gb, a100-sxm4-80gb).
    * The first HTTP port is served at ``https://{app}.fly.dev``, further HTTP ports at
      ``https://{app}.fly.dev:{port}``; TCP/UDP ports at ``tcp://{app}.fly.dev:{port}``.
      A URL is reported only once the app has an address serving it: an app made
      through the Machines API has none. With ``create_app`` atlas_nb allocates a shared
      IPv4 + IPv6 (free) for HTTP ports and a dedicated IPv4 (billed monthly) for raw
      TCP/UDP ports, records them on the machine, and when the app's last machine is
      terminated releases them and deletes the app; apps and addresses it did not create
      are never touched.
    * ``wait_ready`` long-polls ``/wait`` (60 s per call) until the caller's deadline;
      a running machine whose app has no address for a port raises ``ProviderError``
      saying which ``fly ips allocate-*`` to run.
    * Prices are a static table (``atlas_nb.providers.fly.prices``): Fly has no price API;
      ``list_gpu_types`` adds live regions from Fly's placements API (the org's limits
      per region: never shown as stock).
    * Tokens are sent as fly-go does: ``FlyV1 `` and the macaroons of the chain only, else
      ``Bearer ``.
    """

    name: ClassVar[str] = "fly"
    aliases: ClassVar[tuple[str, ...]] = ("fly.io",)
    key_env: ClassVar[tuple[str, ...]] = ("FLY_API_TOKEN", "FLY_ACCESS_TOKEN")
    gpu_ids: ClassVar[GpuIds | None] = wire.GPU_IDS
    error_message = staticmethod(wire.error_message)
    sandbox_cloud: ClassVar[str | None] = "atlas_nb.sandbox.fly:FlyCloud"
    apis: ClassVar[dict[str, str]] = {"machines": "https://api.machines.dev"}
    CAPABILITIES: ClassVar[frozenset[str]] = frozenset({"http_proxy", "raw_tcp", "stop_start"})
    key_hint: ClassVar[str] = (
        "pass api_key=, set FLY_API_TOKEN (e.g. from `fly tokens create deploy`), or add it "
        "to the config file"
    )

    def __init__(
        self,
        app: str | None = None,
        *,
        org: str | None = None,
        api_key: str | None = None,
        base_url: str | Mapping[str, str] | None = None,
        http: HttpOption = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(api_key=api_key, base_url=base_url, http=http, retry=retry, sleep=sleep)
        self._app = wire.check_app(app) if app is not None else None
        self._org = org
        self._monotonic = monotonic

    def __repr__(self) -> str:
        return f"Fly(app={self._app!r})" if self._app else "Fly()"

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": authorization(key)}

    def api_key(self) -> str:
        """``api_key=`` or the sandbox's key, else the Fly token chain (``atlas_nb.fly.tokens``:
        manual, atlas_nb config, env, store, flyctl config) for a token that can drive
        machines; a read-only minted token never serves here."""
        from ... import sandbox
        from ...errors import Unauthorized
        from ...fly import tokens

        if self._api_key or sandbox.active_url():
            return super().api_key()
        try:
            return tokens.default_chain().get(self._default_app(), purpose="compute")
        except Unauthorized:
            raise Unauthorized(f"no API key for {self.name}", provider=self.name,
                               hint=f"{self.key_hint}; or {tokens.HOW_TO}") from None

    # -- computes ---------------------------------------------------------------------
    def spawn_compute(self, request: ComputeRequest) -> Compute:
        """Create a machine. With ``create_app``, also the app and the addresses its ports
        need (``app_owner``), recorded on the machine so terminate can release them."""
        opts = request.provider_opts
        app = self._require_app(opts.get("app"))
        name = request.name or f"atlas-{secrets.token_hex(6)}"
        marker = secrets.token_hex(12)
        wire.create_body(request, name=name, marker=marker)  # refuse bad input before any I/O
        owner = self._owner()
        if opts.get("create_app"):
            plan = owner.prepare(app, str(opts.get("org") or self._org_slug()),
                                 (p.protocol for p in request.ports))
        else:
            plan = Prepared(assignments=owner.assignments(app) if request.ports else [])
        body = wire.create_body(request, name=name, marker=marker, ownership=plan.ownership)
        try:
            compute = self._create(app, body, name, marker, plan.assignments)
        except AtlasError:
            owner.undo(app, plan)
            raise
        owner.share_record(app, plan)
        return compute

    def get_compute(self, compute_id: str) -> Compute:
        app, machine = wire.split_id(compute_id, self._default_app())
        body = self._machines().request("GET", _machine_path(app, machine))
        return wire.compute_from_wire(body, app, self._assignments_for(app, [body]))

    def list_compute(
        self, *, status: str | None = None, name: str | None = None, gpu: str | None = None,
        region: str | None = None,
    ) -> list[Compute]:
        """Machines in the default app, or in every app of the org when none is set."""

        def machines() -> Iterator[Compute]:
            app = self._default_app()
            # Destroyed machines leave Fly's list unless asked for; region is a server filter too.
            params = {"region": region,
                      "include_deleted": "true" if status == "terminated" else None}
            for each in [app] if app else self._app_names():
                body = self._machines().request("GET", _machines_path(each), params=params)
                found = wire.machines_from_wire(body)
                rows = self._assignments_for(each, found)
                yield from (wire.compute_from_wire(m, each, rows) for m in found)

        return filter_computes(machines, status=status, name=name, gpu=gpu, region=region)

    def stop(self, compute_id: str) -> Compute:
        app, machine = wire.split_id(compute_id, self._default_app())
        self._machines().request(
            "POST", f"{_machine_path(app, machine)}/stop", json={}, idempotent=True
        )
        return self.get_compute(wire.compute_id(app, machine))

    def start(self, compute_id: str) -> Compute:
        app, machine = wire.split_id(compute_id, self._default_app())
        path = f"{_machine_path(app, machine)}/start"
        try:
            self._machines().request("POST", path, idempotent=True)
        except ProviderError as exc:
            if exc.status not in (409, 412):
                raise
            # Still stopping: Fly refuses to start until it is down. Wait for it, once.
            current = self._machines().request("GET", _machine_path(app, machine))
            self._wait_state(app, machine, "stopped", WAIT_CAP_S,
                             version=str(current.get("instance_id") or ""))
            self._machines().request("POST", path, idempotent=True)
        return self.get_compute(wire.compute_id(app, machine))

    def terminate(self, compute_id: str) -> None:
        """Destroy the machine (forced); if it was the last one in an app atlas_nb created,
        release the addresses atlas_nb allocated there and delete the app (``app_owner``).

        The machine is read first for its ownership record; a destroyed machine stays
        readable by id on Fly, so a terminate repeated after a failed cleanup finishes it.
        """
        app, machine = wire.split_id(compute_id, self._default_app())
        try:
            body = self._machines().request("GET", _machine_path(app, machine))
        except NotFound:
            return None  # already gone (or its app is): terminate is idempotent
        if isinstance(body, dict) and body.get("state") != "destroyed":
            try:
                self._machines().request(
                    "DELETE", _machine_path(app, machine), params={"force": "true"}
                )
            except NotFound:
                return None
        if isinstance(body, dict):
            self._owner().release_if_last(app, body)
        return None

    def wait_ready(self, compute_id: str, *, timeout_s: float = 600.0) -> Compute:
        """Long-poll ``/wait?state=started`` (60 s per call) until the machine runs.

        A 408 only means that one wait ran out: keep waiting until ``timeout_s``,
        then raise ``Timeout``. ``ProviderError`` if the machine fails or is destroyed.
        """
        app, machine = wire.split_id(compute_id, self._default_app())
        cid = wire.compute_id(app, machine)
        deadline = self._monotonic() + timeout_s
        while True:
            body = self._machines().request("GET", _machine_path(app, machine))
            compute = wire.compute_from_wire(body, app)
            if compute.status == "running":
                compute = wire.compute_from_wire(body, app, self._owner().assignments(app))
                if compute.ready:
                    return compute
                raise _no_address(compute, app)
            if compute.status in ("failed", "terminated"):
                raise ProviderError(
                    f"machine {cid} is {body.get('state')}; it will not become ready",
                    provider=self.name, raw=compute.raw,
                )
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                raise Timeout(
                    f"machine {cid} not started after {timeout_s:g}s "
                    f"(state {body.get('state')})",
                    provider=self.name,
                    hint=f"raise timeout_s, or check the image starts (fly logs -a {app})",
                )
            try:
                self._wait_state(app, machine, "started", remaining)
            except (Timeout, TransportError):
                continue  # that wait ran out (408) or the long poll broke: look again
            except RateLimited as exc:
                self._sleep(min(exc.retry_after or 1.0, max(0.0, deadline - self._monotonic())))
                continue
            except (ProviderError, ValidationError) as exc:
                if exc.status is not None and (exc.status >= 500 or exc.status == 400):
                    self._sleep(min(1.0, max(0.0, deadline - self._monotonic())))
                    continue  # e.g. 400: not waitable from its state; the GET tells why
                raise

    # -- catalog ----------------------------------------------------------------------
    def list_gpu_types(self) -> list[GpuType]:
        """Fly's GPUs: prices from the static table (``raw["static"] is True``: Fly has no
        price API), regions live from ``POST /v1/platform/placements`` with ``count=0``.

        That answer holds the org's limit per region (spec), not free capacity, so
        ``stock`` is ``None`` where a region allows the GPU; ``stock="none"`` with no
        regions means Fly cannot place that GPU for this org now (Fly has deprecated GPU
        Machines; see ``prices.GPU_SERVICE_NOTE``).
        """
        client, org = self._machines(), self._org_slug()

        def where(row: prices.GpuPrice) -> Any:
            return client.request("POST", "/v1/platform/placements",
                                  json=wire.placements_body(row, org), idempotent=True)

        # One question per GPU kind; asked together, so the catalog costs one round trip.
        with ThreadPoolExecutor(len(prices.GPU_PRICES), "atlas-fly-placements") as pool:
            answers = list(pool.map(where, prices.GPU_PRICES))
        return wire.gpu_types(prices.GPU_PRICES, answers)

    # -- internals --------------------------------------------------------------------
    def _machines(self) -> HttpClient:
        return self.client("machines")

    def _default_app(self) -> str | None:
        app = self._app or provider_setting(self.name, "default_app")
        return wire.check_app(app) if app else None

    def _require_app(self, app: Any) -> str:
        app = app or self._default_app()
        if not app:
            raise ValidationError(f"no Fly app to spawn the machine in; {_APP_HINT}")
        return wire.check_app(app)

    def _org_slug(self) -> str:
        return str(self._org or provider_setting(self.name, "org_slug") or DEFAULT_ORG)

    def _app_names(self) -> list[str]:
        body = self._machines().request("GET", "/v1/apps", params={"org_slug": self._org_slug()})
        return wire.app_names(body)

    def _owner(self) -> AppOwner:
        return AppOwner(self._machines())

    def _assignments_for(self, app: str, machines: Sequence[Any]) -> list[Mapping[str, Any]]:
        """The app's addresses, fetched only when a machine in ``machines`` has services."""
        if any(as_map(as_map(m).get("config")).get("services") for m in machines):
            return self._owner().assignments(app)
        return []

    def _wait_state(self, app: str, machine: str, state: str, budget_s: float,
                    *, version: str = "") -> Any:
        """One ``/wait`` call of at most 60 s (never retried: a 408 is the caller's to handle).

        The window asked for also ends inside the user's ``http=`` timeout. When not even
        the 1 s minimum fits, the machine is polled with plain GETs instead (same result:
        return once it is in ``state``; ``Timeout`` when ``budget_s`` runs out).
        """
        client = self._machines()
        # GET /apps/{app}/machines/{id}/wait?timeout= takes whole seconds, default 60
        # (specs/fly/machines-openapi3.json, parameter "timeout"; fly-go clamps to 60).
        room = math.floor(client.poll_window(WAIT_CAP_S))
        if room < 1:
            return self._poll_state(app, machine, state, budget_s)
        seconds = max(1, min(room, math.ceil(budget_s)))
        params = {"state": state, "timeout": seconds, "version": version or None}
        return client.request(
            "GET", f"{_machine_path(app, machine)}/wait", params=params, retry=_ONE_SHOT,
            timeout=httpx.Timeout(seconds + 15.0, connect=10.0),
        )

    def _poll_state(self, app: str, machine: str, state: str, budget_s: float) -> Any:
        """``_wait_state`` without a long poll: GET the machine until it is in ``state``."""
        deadline = self._monotonic() + max(budget_s, 0.0)
        while True:
            body = self._machines().request("GET", _machine_path(app, machine))
            if isinstance(body, dict) and body.get("state") == state:
                return body
            left = deadline - self._monotonic()
            if left <= 0:
                raise Timeout(f"machine {wire.compute_id(app, machine)} not {state} after "
                              f"{budget_s:g}s", provider=self.name)
            self._sleep(min(STATE_POLL_S, left))

    def _create(self, app: str, body: dict[str, Any], name: str, marker: str,
                assignments: Sequence[Mapping[str, Any]] = ()) -> Compute:
        """``create_once``: before a retry the machine is looked up by name + metadata marker."""

        def created(answer: Any) -> Compute | None:
            named = isinstance(answer, dict) and answer.get("id")
            return wire.compute_from_wire(answer, app, assignments) if named else None

        def ours(found: Mapping[str, Any]) -> Compute | None:
            mine = wire.is_our_create(found, name=name, marker=marker)
            return wire.compute_from_wire(found, app, assignments) if mine else None

        return self.create_once(
            self._machines(), "POST", _machines_path(app), body,
            parse=created,
            lookup=Lookup(lambda: wire.machines_from_wire(
                self._machines().request("GET", _machines_path(app))), ours, name),
            retry=CreateRetry(CREATE_ATTEMPTS), id_name="a machine id",
            not_made=f"no machine named {name!r} was created in {app}",
            error=lambda exc: self._create_error(exc, body),
        )

    def _create_error(self, exc: AtlasError, body: Mapping[str, Any]) -> AtlasError:
        """Name the regions that do offer a GPU when Fly reports no capacity."""
        if wire.error_kind(exc.raw) != "insufficient_capacity":
            return exc
        guest = body.get("config", {}).get("guest", {})
        row = prices.gpu_price(str(guest.get("gpu_kind") or ""))
        where = body.get("region") or "the nearest region"
        hint = (f"try region_hints={list(row.regions)} (where Fly lists {row.kind})"
                if row else "try another region with region_hints=[...]")
        return ProviderError(f"Fly has no capacity for this machine in {where}: {exc.message}",
                             provider=self.name, status=exc.status, raw=exc.raw, hint=hint)


def _no_address(compute: Compute, app: str) -> ProviderError:
    """Why a running machine is not ready: its app has no address serving some port."""
    dark = [p for p in compute.ports if not p.url]
    raw_ports = [p for p in dark if p.protocol != "http"]
    fixes = []
    if any(p.protocol == "http" for p in dark):
        fixes.append(f"fly ips allocate-v4 --shared -a {app} && fly ips allocate-v6 -a {app} "
                     "(both free)")
    if raw_ports:
        fixes.append(f"fly ips allocate-v4 -a {app} (a dedicated IPv4, billed monthly)")
    ports = ", ".join(f"{p.internal}/{p.protocol}" for p in dark)
    return ProviderError(
        f"machine {compute.id} is running, but app {app} has no public address for port(s) "
        f"{ports}, so {app}.fly.dev does not reach them",
        provider="fly", raw=compute.raw,
        hint="run " + "; ".join(fixes) + ", or spawn with provider_opts={'create_app': True} "
             "in an app atlas_nb creates (it allocates and later releases them)",
    )


def _machines_path(app: str) -> str:
    return f"/v1/apps/{quote(app, safe='')}/machines"


def _machine_path(app: str, machine: str) -> str:
    return f"{_machines_path(app)}/{quote(machine, safe='')}"
