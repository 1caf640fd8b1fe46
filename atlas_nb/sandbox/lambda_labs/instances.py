"""Lambda Cloud state: the instance-type catalog with capacity, and the instances.

Status is computed from the clock, never by timers: an instance launched at
``t`` reads ``booting`` until ``t + boot``, then ``active``; a restart boots it
again; ``terminate`` makes it ``terminating`` for ``terminate_delay_s``, then
``terminated``. A terminated instance leaves the list at once (the list holds
"running instances") and stays readable by id for ``terminated_retention_s``,
then reads 404. ``unhealthy`` and ``preempted`` are set by test helpers.
"""

from __future__ import annotations

import copy
import json
import shlex
import string
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..accounts import DEFAULT, owner, visible
from ..capacity import Capacity
from ..cloud import CloudContext

__all__ = ["DATA", "Catalog", "InstanceError", "InstanceRecord", "InstanceStore", "container_env"]

DATA = Path(__file__).parent / "instance_types.json"
_HEX = string.hexdigits[:16]


class InstanceError(Exception):
    """A request the API refuses: HTTP ``status``, Lambda error ``code``, ``message``."""

    def __init__(self, status: int, code: str, message: str, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.suggestion = suggestion

    def body(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` envelope."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.suggestion:
            err["suggestion"] = self.suggestion
        return {"error": err}


def not_found(what: str) -> InstanceError:
    """404 ``global/object-does-not-exist`` (``ApiErrorInstanceNotFound``)."""
    return InstanceError(404, "global/object-does-not-exist", f"Specified {what} does not exist.",
                         "Check the ID and try again.")


class Catalog:
    """The instance types on offer and, per type, the regions with capacity now."""

    def __init__(self, path: Path = DATA, capacity: Mapping[str, Iterable[str]] | None = None,
                 overrides: Capacity | None = None) -> None:
        self.overrides = overrides or Capacity()  # the sandbox's per-GPU stock overrides
        doc = json.loads(path.read_text(encoding="utf-8"))
        self.source: str = doc["_source"]
        self.regions: dict[str, str] = dict(doc["regions"])
        self._lock = threading.Lock()
        self.types: dict[str, dict[str, Any]] = {}
        self._capacity: dict[str, list[str]] = {}
        for row in doc["instance_types"]:
            row = dict(row)
            self._capacity[row["name"]] = list(row.pop("capacity"))
            self.types[row["name"]] = row
        for name, regions in (capacity or {}).items():
            self.set_capacity(name, regions)

    def set_capacity(self, type_name: str, regions: Iterable[str]) -> None:
        """Set the regions with capacity for one type (``[]``: none anywhere)."""
        wanted = list(regions)
        if type_name not in self.types:
            raise ValueError(f"no instance type {type_name!r}; known: {', '.join(self.types)}")
        unknown = [r for r in wanted if r not in self.regions]
        if unknown:
            raise ValueError(f"unknown regions {unknown}; known: {', '.join(self.regions)}")
        with self._lock:
            self._capacity[type_name] = wanted

    def capacity(self, type_name: str) -> list[str]:
        """The regions with capacity for ``type_name`` now (none past a stock override)."""
        if not self.overrides.allows("lambda_labs", type_name):
            return []
        with self._lock:
            return list(self._capacity.get(type_name, ()))

    def region(self, name: str) -> dict[str, str]:
        """A ``Region`` object."""
        return {"name": name, "description": self.regions.get(name, name)}

    def instance_type(self, name: str) -> dict[str, Any]:
        """An ``InstanceType`` object (a copy)."""
        return copy.deepcopy(self.types[name])

    def wire(self) -> dict[str, Any]:
        """``InstanceTypes``: type name -> ``InstanceTypesItem``."""
        return {
            name: {"instance_type": self.instance_type(name),
                   "regions_with_capacity_available": [self.region(r)
                                                       for r in self.capacity(name)]}
            for name in self.types
        }


@dataclass
class InstanceRecord:
    """Everything the sandbox knows about one instance (``user_data`` included)."""

    id: str
    name: str | None
    type_name: str
    region: str
    ssh_key_names: list[str]
    ip: str
    private_ip: str
    jupyter_token: str
    created_at: float
    boot_s: float
    user_data: str | None = None
    hostname: str | None = None
    image: dict[str, Any] | None = None
    file_system_names: list[str] = field(default_factory=list)
    file_system_mounts: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, str]] = field(default_factory=list)
    firewall_rulesets: list[dict[str, str]] = field(default_factory=list)
    phase: str = "BOOT"  # BOOT (from the clock), UNHEALTHY, PREEMPTED, TERMINATING
    boot_at: float = 0.0
    terminate_at: float = 0.0
    terminate_s: float = 0.0
    launched: bool = False  # has been active once: it has its IP and Jupyter from then on
    account: str = DEFAULT  # the account that launched it (``accounts.py``)

    def status(self, now: float) -> str:
        """The ``InstanceStatus`` at ``now``."""
        if self.phase == "BOOT":
            return "booting" if now < self.boot_at + self.boot_s else "active"
        if self.phase == "TERMINATING":
            return "terminating" if now < self.terminate_at + self.terminate_s else "terminated"
        return self.phase.lower()

    def has_launched(self, now: float) -> bool:
        """Whether it has been active at least once (so it has an IP)."""
        return self.launched or now >= self.created_at + self.boot_s


_UNAVAILABLE = {
    "booting": ("vm-has-not-launched", "The instance has not finished launching."),
    "terminating": ("vm-is-terminating", "The instance is terminating."),
    "terminated": ("vm-is-terminating", "The instance is terminated."),
    "preempted": ("vm-is-terminating", "The instance was preempted."),
}


def _actions(status: str) -> dict[str, Any]:
    blocked = _UNAVAILABLE.get(status)
    out: dict[str, Any] = {}
    for action in ("migrate", "rebuild", "restart", "cold_reboot", "terminate"):
        if blocked is None or (status == "booting" and action == "terminate"):
            out[action] = {"available": True}
        else:
            out[action] = {"available": False, "reason_code": blocked[0],
                           "reason_description": blocked[1]}
    return out


class InstanceStore:
    """All instances of one Lambda cloud (thread-safe)."""

    def __init__(self, ctx: CloudContext, catalog: Catalog) -> None:
        self.ctx = ctx
        self.catalog = catalog
        opts = ctx.options
        self.boot_delay_s = float(opts.get("provision_delay_s", ctx.provision_delay_s))
        self.restart_delay_s = float(opts.get("restart_delay_s", ctx.start_delay_s))
        self.terminate_delay_s = float(opts.get("terminate_delay_s", ctx.start_delay_s))
        self.terminated_retention_s = float(opts.get("terminated_retention_s", 60.0))
        self._rng = ctx.rng("lambda-instances")
        self._lock = threading.RLock()
        self._instances: dict[str, InstanceRecord] = {}
        self._ips: set[str] = set()

    def _new_id(self) -> str:
        while True:
            instance_id = "".join(self._rng.choice(_HEX) for _ in range(32))
            if instance_id not in self._instances:
                return instance_id

    def _new_ip(self) -> str:
        # Documentation ranges (RFC 5737): reproducible, and never a real host.
        for _ in range(1000):
            net = self._rng.choice(("198.51.100", "203.0.113"))
            ip = f"{net}.{self._rng.randint(2, 254)}"
            if ip not in self._ips:
                self._ips.add(ip)
                return ip
        return f"198.51.100.{self._rng.randint(2, 254)}"  # exhausted: reuse one

    def launch(self, body: Mapping[str, Any]) -> InstanceRecord:
        """Make one instance from a validated ``InstanceLaunchRequest``."""
        now = self.ctx.clock.time()
        with self._lock:
            record = InstanceRecord(
                id=self._new_id(),
                name=body.get("name"),
                type_name=body["instance_type_name"],
                region=body["region_name"],
                ssh_key_names=list(body["ssh_key_names"]),
                ip=self._new_ip(),
                private_ip=f"10.{self._rng.randint(0, 255)}.{self._rng.randint(0, 255)}."
                f"{self._rng.randint(2, 254)}",
                jupyter_token="".join(self._rng.choice(_HEX) for _ in range(32)),
                created_at=now,
                boot_s=self.boot_delay_s,
                boot_at=now,
                user_data=body.get("user_data"),
                hostname=body.get("hostname"),
                image=body.get("image"),
                file_system_names=list(body.get("file_system_names") or []),
                file_system_mounts=[dict(m) for m in body.get("file_system_mounts") or []],
                tags=[dict(t) for t in body.get("tags") or []],
                firewall_rulesets=[dict(r) for r in body.get("firewall_rulesets") or []],
                account=owner(),
            )
            self._instances[record.id] = record
            return record

    def get(self, instance_id: str, *, include_gone: bool = False) -> InstanceRecord:
        """An instance the API can see (``include_gone``: any ever made); 404 otherwise."""
        with self._lock:
            record = self._instances.get(instance_id)
        if (record is None or not visible(record.account)  # another account's: unknown
                or (not include_gone and self._gone(record))):
            raise not_found("instance")
        return record

    def _gone(self, record: InstanceRecord) -> bool:
        now = self.ctx.clock.time()
        if record.status(now) != "terminated":
            return False
        return now >= record.terminate_at + record.terminate_s + self.terminated_retention_s

    def all(self, *, include_gone: bool = False) -> list[InstanceRecord]:
        """The acting account's instances, in launch order."""
        with self._lock:
            records = [r for r in self._instances.values() if visible(r.account)]
        return [r for r in records if include_gone or not self._gone(r)]

    def listed(self) -> list[InstanceRecord]:
        """What ``GET /instances`` shows: every instance not terminated."""
        now = self.ctx.clock.time()
        return [r for r in self.all() if r.status(now) != "terminated"]

    def live_count(self) -> int:
        """Instances that count against a quota (not terminating or gone)."""
        now = self.ctx.clock.time()
        return sum(r.status(now) in ("booting", "active", "unhealthy") for r in self.all())

    def terminate(self, instance_id: str) -> InstanceRecord:
        """Start terminating (idempotent while it is terminating or terminated)."""
        with self._lock:
            record = self.get(instance_id)
            now = self.ctx.clock.time()
            if record.phase != "TERMINATING":
                record.launched = record.has_launched(now)
                record.phase = "TERMINATING"
                record.terminate_at = now
                record.terminate_s = self.terminate_delay_s
            return record

    def restart(self, instance_id: str) -> InstanceRecord | None:
        """Boot it again; ``None`` if its status does not allow a restart."""
        with self._lock:
            record = self.get(instance_id)
            now = self.ctx.clock.time()
            if record.status(now) not in ("booting", "active", "unhealthy"):
                return None
            record.launched = record.has_launched(now)
            record.phase = "BOOT"
            record.boot_at = now
            record.boot_s = self.restart_delay_s
            return record

    def set_phase(self, instance_id: str, phase: str) -> None:
        """Force ``UNHEALTHY`` or ``PREEMPTED`` (test helpers)."""
        with self._lock:
            record = self.get(instance_id, include_gone=True)
            record.launched = record.has_launched(self.ctx.clock.time())
            record.phase = phase

    def wire(self, record: InstanceRecord, now: float | None = None) -> dict[str, Any]:
        """The spec's ``Instance`` (never ``user_data``: it is write-only)."""
        now = self.ctx.clock.time() if now is None else now
        status = record.status(now)
        out: dict[str, Any] = {"id": record.id}
        if record.name is not None:
            out["name"] = record.name
        reachable = record.has_launched(now) and status not in ("terminated", "preempted")
        if reachable:
            out["ip"] = record.ip
            out["private_ip"] = record.private_ip
        out["status"] = status
        out["ssh_key_names"] = list(record.ssh_key_names)
        out["file_system_names"] = list(record.file_system_names)
        if record.file_system_mounts:
            out["file_system_mounts"] = [dict(m) for m in record.file_system_mounts]
        out["region"] = self.catalog.region(record.region)
        out["instance_type"] = self.catalog.instance_type(record.type_name)
        if reachable:
            out["hostname"] = record.hostname or record.ip
            out["jupyter_token"] = record.jupyter_token
            out["jupyter_url"] = (f"https://jupyter-{record.id}.lambdaspaces.com/"
                                  f"?token={record.jupyter_token}")
        out["actions"] = _actions(status)
        out["tags"] = [dict(t) for t in record.tags]
        out["firewall_rulesets"] = [dict(r) for r in record.firewall_rulesets]
        return out


def container_env(user_data: str | None) -> dict[str, str]:
    """The env a ``#cloud-config``'s ``docker run`` would hand its container.

    Reads ``--env-file PATH`` (the file's content from ``write_files``) and
    ``-e``/``--env NAME=value`` flags of each ``docker run`` in ``runcmd``;
    anything else (a shell script, no Docker) yields ``{}``.
    """
    if not user_data or not user_data.lstrip().startswith("#cloud-config"):
        return {}
    try:
        doc = yaml.safe_load(user_data)
    except yaml.YAMLError:
        return {}
    if not isinstance(doc, dict):
        return {}
    files = {str(f.get("path")): str(f.get("content", ""))
             for f in doc.get("write_files") or [] if isinstance(f, dict)}
    env: dict[str, str] = {}
    for cmd in doc.get("runcmd") or []:
        argv = [str(a) for a in cmd] if isinstance(cmd, list) else shlex.split(str(cmd))
        if argv[:2] != ["docker", "run"]:
            continue
        args = iter(argv[2:])
        for arg in args:
            flag, eq, inline = arg.partition("=")
            if flag == "--env-file":
                path = inline if eq else next(args, "")
                for line in files.get(path, "").split("\n"):  # Docker splits on \n only
                    name, sep, value = line.partition("=")
                    if sep and name and not name.startswith("#"):
                        env[name] = value
            elif flag in ("-e", "--env"):
                pair = inline if (eq and flag == "--env") else next(args, "")
                name, sep, value = pair.partition("=")
                if sep:
                    env[name] = value
    return env
