"""Fly app addresses (the Machines API's ``ip_assignments``): pure translation, no I/O.

An app made through the Machines API has **no public address**, so ``{app}.fly.dev``
does not resolve until one is allocated (superfly/docs
``networking/services.html.markerb``: "If you create apps with public services in
their Machine config [...] using the Machines API, then you need to run ``fly ips
allocate-v6`` [and] ``fly ips allocate-v4 --shared``"). The same page says what each
address serves:

* a **shared IPv4** routes by the app's domain: HTTP on 80, TLS+HTTP on 443, and
  other TCP ports that use the ``tls`` handler (free);
* an **IPv6** address is dedicated to the app (free); UDP never works over it;
* a **dedicated IPv4** is needed for non-HTTP protocols without TLS, raw TCP and UDP
  ("billed monthly"; flyctl asks "Dedicated IPv4 addresses now cost $2/mo").

The wire: ``GET|POST /apps/{app}/ip_assignments``, ``DELETE
/apps/{app}/ip_assignments/{ip}`` (specs/fly/machines-openapi3.json: ``assignIPRequest``,
``IPAssignment``, ``listIPAssignmentsResponse``). The spec leaves ``type`` a free
string; its values come from superfly/fly-go ``flaps/flaps_ip_assignments.go``
(``v4 v6 shared_v4 private_v6 egress_v4 egress_v6 egress_pair``), and flyctl
(``internal/command/ips/allocate.go``) sends a region only for ``v4``/``v6``: "Shared
v4 and private v6 addresses are not regional and the API rejects a region for them".
An answer's kind is read the way fly-go's ``IPAssignment.Type()`` reads it (egress
flag, ``fdaa:`` prefix, ``shared`` flag, a colon), since the answer carries no type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..base import as_list, as_map, as_str

__all__ = [
    "CREATED_APP_KEY",
    "CREATED_IPS_KEY",
    "DEDICATED_V4",
    "HTTP_KINDS",
    "SHARED_V4",
    "V6",
    "allocate_body",
    "assignments_from_wire",
    "can_serve",
    "created_ips",
    "kind_of",
    "missing_kinds",
    "needed_kinds",
    "public_ip",
    "record",
]

DEDICATED_V4 = "v4"
V6 = "v6"
SHARED_V4 = "shared_v4"
PRIVATE_V6 = "private_v6"

HTTP_KINDS = frozenset({SHARED_V4, DEDICATED_V4, V6})
"""Addresses on which ``https://{app}.fly.dev`` (and TLS-handled ports) answer."""
RAW_KINDS = frozenset({DEDICATED_V4})
"""Addresses a raw TCP/UDP port is reachable on from anywhere: a dedicated IPv4 only
(UDP never works on a shared IPv4 or an IPv6; raw TCP on the name's shared A record fails)."""

CREATED_APP_KEY = "atlas_created_app"
"""Machine ``config.metadata`` key: ``"true"`` when atlas_nb created the machine's app.
Fly apps carry no metadata (the spec's ``App`` has none), so the record lives on each
machine atlas_nb spawns in such an app; a key with ``_`` can never be a user label."""
CREATED_IPS_KEY = "atlas_created_ips"
"""Machine ``config.metadata`` key: the addresses atlas_nb allocated in the app,
comma-separated. Only these are ever released."""


def needed_kinds(protocols: Iterable[str]) -> tuple[str, ...]:
    """The address types a machine with ports of ``protocols`` needs, as flyctl's first
    deploy allocates them: shared IPv4 + IPv6 for HTTP, a dedicated IPv4 for raw TCP/UDP.

    >>> needed_kinds(["http", "tcp"])
    ('shared_v4', 'v6', 'v4')
    """
    protos = set(protocols)
    out: list[str] = []
    if "http" in protos:
        out += [SHARED_V4, V6]
    if protos & {"tcp", "udp"}:
        out.append(DEDICATED_V4)
    return tuple(out)


def allocate_body(kind: str) -> dict[str, Any]:
    """``assignIPRequest`` for one address of ``kind``: only ``type`` (no region, so a
    ``v4``/``v6`` is global like ``fly ips allocate-v4`` without ``--region``)."""
    return {"type": kind}


def kind_of(assignment: Mapping[str, Any]) -> str:
    """An ``IPAssignment``'s type, read as fly-go's ``IPAssignment.Type()`` does."""
    ip = str(assignment.get("ip") or "")
    if assignment.get("egress") is True:
        return "egress_v6" if ":" in ip else "egress_v4"
    if ip.startswith("fdaa:"):
        return PRIVATE_V6
    if assignment.get("shared") is True:
        return SHARED_V4
    return V6 if ":" in ip else DEDICATED_V4


def assignments_from_wire(body: Any) -> list[Mapping[str, Any]]:
    """The ``IPAssignment`` rows of a ``listIPAssignmentsResponse`` (``{"ips": [...]}``)."""
    return [a for a in map(as_map, as_list(as_map(body).get("ips"))) if as_str(a.get("ip"))]


def kinds(assignments: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The address types present among ``assignments``."""
    return frozenset(kind_of(a) for a in assignments)


def missing_kinds(needed: Sequence[str], assignments: Iterable[Mapping[str, Any]]) -> list[str]:
    """The types of ``needed`` the app does not have yet."""
    have = kinds(assignments)
    return [k for k in needed if k not in have]


def can_serve(protocol: str, tls: bool, assignments: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a port of ``protocol`` (``tls``: its handlers terminate TLS or HTTP) is
    reachable at the app's name, given the app's addresses."""
    wanted = HTTP_KINDS if protocol == "http" or tls else RAW_KINDS
    return bool(kinds(assignments) & wanted)


def public_ip(assignments: Iterable[Mapping[str, Any]]) -> str | None:
    """The app's dedicated IPv4, else its first public IPv6 (a shared IPv4 is no one's)."""
    rows = list(assignments)
    for wanted in (DEDICATED_V4, V6):
        for a in rows:
            if kind_of(a) == wanted:
                return str(a["ip"])
    return None


def created_ips(metadata: Mapping[str, Any]) -> frozenset[str]:
    """The addresses a machine's metadata records atlas_nb allocated in its app."""
    value = metadata.get(CREATED_IPS_KEY)
    if not isinstance(value, str):
        return frozenset()
    return frozenset(ip.strip() for ip in value.split(",") if ip.strip())


def record(ips: Iterable[str]) -> str:
    """``created_ips``'s inverse: the metadata value for ``ips``."""
    return ",".join(sorted(set(ips)))

