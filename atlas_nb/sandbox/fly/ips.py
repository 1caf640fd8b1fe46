"""Fly app addresses in the sandbox: ``/v1/apps/{app}/ip_assignments`` and who they reach.

As on Fly, an app starts with **no** public address (one made through the Machines API
has none until ``fly ips allocate-*``: superfly/docs ``networking/services.html.markerb``),
so ``{app}.fly.dev`` reaches nothing. ``FlyCloud.reachable(url)`` applies that page's
rules: an HTTP (or TLS-handled) port answers on a shared IPv4, a dedicated IPv4 or an
IPv6; a raw TCP/UDP port only on a dedicated IPv4 (UDP is never served over a shared
IPv4 or an IPv6, and raw TCP cannot be routed by name on a shared IPv4).

Wire (specs/fly/machines-openapi3.json): ``GET`` -> ``listIPAssignmentsResponse``, ``POST``
``assignIPRequest`` -> ``IPAssignment``, ``DELETE .../{ip}`` -> 204. The spec leaves
``type`` free; the values are superfly/fly-go ``flaps/flaps_ip_assignments.go``'s, and a
``region`` is refused for ``shared_v4``/``private_v6`` (superfly/flyctl
``internal/command/ips``: "the API rejects a region for them"). One shared IPv4 per
app (a second is refused: "App already has a shared IPv4 address", quoted by third-party
callers; its HTTP status is **unverified**, 400 here). Egress addresses are not emulated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..cloud import iso
from .machines import REGIONS, FlyError, FlyState

__all__ = ["TYPES", "assign", "reachable", "release"]

TYPES = ("v4", "v6", "shared_v4", "private_v6")
"""Address types the sandbox allocates (fly-go's ``IPAssignmentType`` minus egress)."""
_EGRESS = ("egress_v4", "egress_v6", "egress_pair")
_NOT_REGIONAL = ("shared_v4", "private_v6")
_SERVES_HTTP = frozenset({"v4", "v6", "shared_v4"})
_SERVES_RAW = frozenset({"v4"})


def _kind(row: Mapping[str, Any]) -> str:
    return str(row["_type"])


def assign(state: FlyState, app_name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Allocate an address to an app; its ``IPAssignment``."""
    kind = str(body.get("type") or "")
    region = str(body.get("region") or "")
    if kind in _EGRESS:
        raise FlyError(400, f"type {kind!r}: egress addresses are not emulated by the sandbox")
    if kind not in TYPES:
        raise FlyError(400, f"invalid type {kind!r}; use one of {', '.join(TYPES)}")
    if region and kind in _NOT_REGIONAL:
        raise FlyError(400, f"{kind} addresses are not regional: drop region")
    if region and region not in REGIONS:
        raise FlyError(400, f"invalid region {region!r}; see GET /v1/platform/regions")
    with state.lock:
        app = state.app(app_name)
        if kind == "shared_v4" and any(_kind(r) == "shared_v4" for r in app.ips):
            raise FlyError(400, "App already has a shared IPv4 address")
        rng = state.ctx.rng(f"fly-ips-{app_name}-{len(app.ips)}")
        if kind == "shared_v4":  # one address many apps share, routed by the app's name
            ip = f"66.241.124.{rng.randint(1, 254)}"
        elif kind == "v4":
            ip = f"137.66.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        elif kind == "v6":
            ip = f"2a09:8280:1::{rng.randint(1, 0xffff):x}:{rng.randint(1, 0xffff):x}"
        else:
            ip = f"fdaa:0:{rng.randint(1, 0xffff):x}:0:1::{rng.randint(2, 0xff):x}"
        if any(r["ip"] == ip for r in app.ips):
            ip = f"{ip}{len(app.ips)}" if ":" in ip else ip  # vanishingly rare
        row = {"ip": ip, "region": region or "global", "service_name": "",
               "shared": kind == "shared_v4", "created_at": iso(state.ctx.clock.time()),
               "_type": kind}
        app.ips.append(row)
        return wire(row)


def release(state: FlyState, app_name: str, ip: str) -> None:
    """Remove an address from an app; 404 when it has no such address."""
    with state.lock:
        app = state.app(app_name)
        kept = [r for r in app.ips if r["ip"] != ip]
        if len(kept) == len(app.ips):
            raise FlyError(404, f"ip address {ip} not found for app {app_name}")
        app.ips[:] = kept


def listing(state: FlyState, app_name: str) -> dict[str, Any]:
    """``listIPAssignmentsResponse``."""
    with state.lock:
        return {"ips": [wire(r) for r in state.app(app_name).ips]}


def wire(row: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's ``IPAssignment`` (the sandbox's own bookkeeping dropped)."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def reachable(state: FlyState, url: str) -> bool:
    """Whether ``url`` (``https://{app}.fly.dev[:port]``, ``tcp://{app}.fly.dev:{port}``)
    would reach a started machine: the app has an address serving the port, and a
    started machine publishes that port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host.endswith(".fly.dev"):
        return False
    app_name = host.removesuffix(".fly.dev")
    scheme = parts.scheme
    port = parts.port or {"https": 443, "http": 80}.get(scheme)
    with state.lock:
        app = state.apps.get(app_name)
        if app is None or port is None:
            return False
        have = {_kind(r) for r in app.ips}
        now = state.ctx.clock.time()
        for (owner, _mid), machine in state.machines.items():
            if owner != app_name or machine.state(now) != "started":
                continue
            for service in machine.config.get("services") or ():
                proto = str(service.get("protocol") or "tcp")
                for published in service.get("ports") or ():
                    if published.get("port") != port:
                        continue
                    handlers = set(published.get("handlers") or ())
                    named = bool(handlers & {"http", "tls"}) and proto == "tcp"
                    if scheme in ("http", "https") and not handlers & {"http", "tls"}:
                        continue
                    if scheme in ("tcp", "udp") and scheme != proto:
                        continue
                    if have & (_SERVES_HTTP if named else _SERVES_RAW):
                        return True
        return False
