"""What atlas_nb creates around a Fly machine, and how it cleans up only that.

With ``provider_opts={"create_app": True}``, a spawn may create the app and allocate its
public addresses (``addresses``): a shared IPv4 and an IPv6 for HTTP ports, a dedicated
IPv4 (billed monthly) for raw TCP/UDP ports. Fly apps carry no metadata, so what atlas_nb
created is recorded on every machine it spawns in such an app (``config.metadata``:
``atlas_created_app`` and ``atlas_created_ips``). When the last machine of that app goes,
``AppOwner.release_if_last`` releases the recorded addresses and deletes the app, unless
the app holds anything atlas_nb did not create (another machine, another address, a
volume): those are never touched.

Sources: app create ``POST /apps`` (201), delete ``DELETE /apps/{app}`` (202), addresses
``/apps/{app}/ip_assignments`` and metadata ``POST /apps/{app}/machines/{id}/metadata/{key}``
(``upsertMetadataKeyRequest``) in specs/fly/machines-openapi3.json; which addresses an app
needs: superfly/docs ``networking/services.html.markerb``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ..._http import HttpClient
from ...errors import AtlasError, NotFound, ProviderError, Timeout, TransportError, ValidationError
from ..base import as_map
from . import addresses

__all__ = ["AppOwner", "Prepared"]

_GONE_STATES = frozenset({"destroying", "destroyed"})


@dataclass
class Prepared:
    """What ``AppOwner.prepare`` did for one spawn.

    ``ownership`` goes into the new machine's metadata (empty when atlas_nb does not own
    the app); ``assignments`` are the app's addresses now; ``created_app`` says the app was
    created by this very spawn; ``new_ips`` were allocated by it; ``siblings`` are the
    app's other atlas_nb machines, whose record must learn about ``new_ips``.
    """

    ownership: dict[str, str] = field(default_factory=dict)
    assignments: list[Mapping[str, Any]] = field(default_factory=list)
    created_app: bool = False
    new_ips: list[str] = field(default_factory=list)
    siblings: list[str] = field(default_factory=list)


def _app_path(app: str) -> str:
    return f"/v1/apps/{quote(app, safe='')}"


class AppOwner:
    """Creates, records and releases the apps and addresses atlas_nb makes on Fly."""

    def __init__(self, client: HttpClient) -> None:
        self._client = client

    # -- reading ------------------------------------------------------------------------
    def assignments(self, app: str) -> list[Mapping[str, Any]]:
        """The app's addresses (``[]`` when the app is gone)."""
        try:
            body = self._client.request("GET", f"{_app_path(app)}/ip_assignments")
        except NotFound:
            return []
        return addresses.assignments_from_wire(body)

    def _machines(self, app: str) -> list[Mapping[str, Any]]:
        body = self._client.request("GET", f"{_app_path(app)}/machines")
        return [as_map(m) for m in body] if isinstance(body, list) else []

    # -- spawning -----------------------------------------------------------------------
    def prepare(self, app: str, org: str, protocols: Iterable[str]) -> Prepared:
        """Make sure ``app`` exists (creating it in ``org``) and, when atlas_nb owns it,
        that it has the addresses ports of ``protocols`` need."""
        created = self._ensure_app(app, org)
        if created:
            plan = Prepared(created_app=True)
            recorded: set[str] = set()
        else:
            mine = [m for m in self._machines(app)
                    if _metadata(m).get(addresses.CREATED_APP_KEY) == "true"
                    and m.get("state") not in _GONE_STATES]
            if not mine:  # not ours (or no longer provably ours): never touched
                return Prepared(assignments=self.assignments(app))
            plan = Prepared(siblings=[str(m.get("id")) for m in mine if m.get("id")])
            recorded = set().union(*(addresses.created_ips(_metadata(m)) for m in mine))
            plan.assignments = self.assignments(app)
        try:
            for kind in addresses.missing_kinds(addresses.needed_kinds(protocols),
                                                plan.assignments):
                row = self._allocate(app, kind, plan.assignments)
                plan.assignments.append(row)
                plan.new_ips.append(str(row["ip"]))
        except AtlasError:
            self.undo(app, plan)
            raise
        plan.ownership = {addresses.CREATED_APP_KEY: "true",
                          addresses.CREATED_IPS_KEY: addresses.record(recorded | set(plan.new_ips))}
        return plan

    def _ensure_app(self, app: str, org: str) -> bool:
        """Create ``app`` unless it exists; True only when this call created it.

        A create whose answer was lost and that is then found counts as not created
        here: nothing proves it was ours, so nothing will ever delete it.
        """
        try:
            self._client.request("GET", _app_path(app))
            return False
        except NotFound:
            pass
        try:
            self._client.request("POST", "/v1/apps", json={"name": app, "org_slug": org},
                                 idempotent=False)
            return True
        except (TransportError, Timeout, ValidationError, ProviderError) as exc:
            # Lost answer, or "name taken" (by us in a lost try, or by someone else).
            try:
                self._client.request("GET", _app_path(app))
            except NotFound:
                raise exc from None
            return False

    def _allocate(self, app: str, kind: str,
                  before: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
        """Allocate one address; a lost answer is looked up (a new address of ``kind``),
        never sent again: a dedicated IPv4 is billed."""
        path = f"{_app_path(app)}/ip_assignments"
        known = {str(a.get("ip")) for a in before}
        try:
            answer = as_map(self._client.request("POST", path, json=addresses.allocate_body(kind),
                                                 idempotent=False))
            if isinstance(answer.get("ip"), str) and answer["ip"]:
                return answer
        except (TransportError, Timeout):
            pass
        fresh = [a for a in self.assignments(app)
                 if addresses.kind_of(a) == kind and str(a.get("ip")) not in known]
        if not fresh:
            raise ProviderError(f"Fly did not allocate a {kind} address to app {app}",
                                provider="fly", hint="try again; nothing was allocated")
        return fresh[0]

    def share_record(self, app: str, plan: Prepared) -> None:
        """Tell the app's other atlas_nb machines about addresses this spawn allocated,
        so whichever machine goes last releases them. Best effort: a failure here only
        means an address may outlive the app's last machine, as it would without atlas_nb."""
        if not plan.new_ips or not plan.siblings:
            return
        value = plan.ownership[addresses.CREATED_IPS_KEY]
        for sibling in plan.siblings:
            path = (f"{_app_path(app)}/machines/{quote(sibling, safe='')}/metadata/"
                    f"{addresses.CREATED_IPS_KEY}")
            try:
                self._client.request("POST", path, json={"value": value}, idempotent=True)
            except AtlasError:
                continue

    def undo(self, app: str, plan: Prepared) -> None:
        """Roll back a spawn that failed: release what it allocated, and delete the app if
        it created it and the app is still empty. Never raises (the spawn's error wins)."""
        try:
            for ip in plan.new_ips:
                self._release(app, ip)
            if plan.created_app:
                self._delete_if_empty(app, recorded=set(plan.new_ips), leaving=None)
        except AtlasError:
            return

    # -- terminating --------------------------------------------------------------------
    def release_if_last(self, app: str, machine: Mapping[str, Any]) -> None:
        """After ``machine`` was destroyed: if atlas_nb created its app and no other machine
        is left, release the addresses atlas_nb allocated there and delete the app."""
        metadata = _metadata(machine)
        if metadata.get(addresses.CREATED_APP_KEY) != "true":
            return
        try:
            self._delete_if_empty(app, recorded=set(addresses.created_ips(metadata)),
                                  leaving=str(machine.get("id") or ""))
        except NotFound:
            return  # the app is already gone

    def _delete_if_empty(self, app: str, *, recorded: set[str], leaving: str | None) -> None:
        others = [m for m in self._machines(app)
                  if m.get("id") != leaving and m.get("state") not in _GONE_STATES]
        if others:
            return
        for row in self.assignments(app):
            if str(row.get("ip")) in recorded:
                self._release(app, str(row["ip"]))
        # Anything left was not allocated by atlas_nb, and deleting the app would drop it.
        if self.assignments(app):
            return
        info = as_map(self._client.request("GET", _app_path(app)))
        if isinstance(info.get("volume_count"), int) and info["volume_count"] > 0:
            return  # a volume atlas_nb never made: deleting the app would destroy it
        try:
            self._client.request("DELETE", _app_path(app))
        except NotFound:
            return

    def _release(self, app: str, ip: str) -> None:
        try:
            self._client.request(
                "DELETE", f"{_app_path(app)}/ip_assignments/{quote(ip, safe='')}")
        except NotFound:
            return  # already released


def _metadata(machine: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_map(as_map(machine.get("config")).get("metadata"))
