"""Fly Machines state: orgs, apps, machines, the lifecycle and the ``Machine`` shape.

A machine's state is read from a timeline of ``(when, state)`` steps computed at
each action, never from timers: a machine created at ``t`` is ``created`` until
``t + provision``, ``starting`` until ``t + provision + start``, then ``started``.
Stop appends ``stopping`` then ``stopped``, destroy ``destroying`` then
``destroyed``. A manual clock therefore steps machines deterministically, and
nothing runs in the background. Destroyed machines stay readable by id (state
``destroyed``) and leave the list unless ``include_deleted=true``, as on Fly.

Regions and which GPUs they host follow Fly's docs (ord: a10, l40s, a100-pcie-40gb;
iad/sjc/syd: a100-sxm4-80gb; superfly/docs@245f646b:gpus/getting-started-gpus). A
create that finds no free GPU slot answers ``ErrorResponse.status =
"insufficient_capacity"`` (the spec's ``main.statusCode``); its HTTP status is not
documented, so the sandbox uses 412 like Fly's other refusals ("failed_precondition").
"""

from __future__ import annotations

import string
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..accounts import DEFAULT, owner, visible
from ..cloud import CloudContext, iso

__all__ = ["CPU_SLOTS", "REGIONS", "AppRecord", "FlyError", "FlyState", "MachineRecord"]

REGIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ams": ("Amsterdam, Netherlands", ()),
    "arn": ("Stockholm, Sweden", ()),
    "bom": ("Mumbai, India", ()),
    "cdg": ("Paris, France", ()),
    "dfw": ("Dallas, Texas (US)", ()),
    "ewr": ("Secaucus, NJ (US)", ()),
    "fra": ("Frankfurt, Germany", ()),
    "gru": ("Sao Paulo, Brazil", ()),
    "iad": ("Ashburn, Virginia (US)", ("a100-sxm4-80gb",)),
    "jnb": ("Johannesburg, South Africa", ()),
    "lax": ("Los Angeles, California (US)", ()),
    "lhr": ("London, United Kingdom", ()),
    "nrt": ("Tokyo, Japan", ()),
    "ord": ("Chicago, Illinois (US)", ("a10", "l40s", "a100-pcie-40gb")),
    "sin": ("Singapore, Singapore", ()),
    "sjc": ("San Jose, California (US)", ("a100-sxm4-80gb",)),
    "syd": ("Sydney, Australia", ("a100-sxm4-80gb",)),
    "yyz": ("Toronto, Canada", ()),
}
"""Region code -> (name, GPU kinds hosted there)."""

CPU_KINDS: dict[str, tuple[tuple[int, ...], int, int]] = {
    "shared": ((1, 2, 4, 8), 256, 2048),
    "performance": ((1, 2, 4, 8, 16), 2048, 8192),
}
"""cpu_kind -> (allowed vCPU counts, min MB per vCPU, max MB per vCPU)."""
GPU_COUNTS = (1, 2, 4, 8)
CPU_SLOTS = 100
"""What a region reports for CPU-only machines: the sandbox never runs out of those."""
PERSISTENT = frozenset({"created", "started", "stopped", "suspended", "failed", "destroyed"})
"""What ``settled`` waits for: any state that stays until something acts."""

_HEX = "0123456789abcdef"
_ULID = string.digits + "ABCDEFGHJKMNPQRSTVWXYZ"
_ADJECTIVES = ("ancient", "bitter", "quiet", "rough", "shy", "snowy", "summer", "withered")
_NOUNS = ("bird", "dawn", "field", "frost", "moon", "river", "snow", "wave")


class FlyError(Exception):
    """A request the Machines API refuses: HTTP ``status``, ``ErrorResponse`` fields."""

    def __init__(self, status: int, error: str, code: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.code = code  # ErrorResponse.status: "insufficient_capacity", "unknown"

    def body(self) -> dict[str, Any]:
        """The ``ErrorResponse`` document."""
        out: dict[str, Any] = {"error": self.error}
        if self.code:
            out["status"] = self.code
        return out


@dataclass
class AppRecord:
    """One Fly app."""

    id: str
    name: str
    org: str
    network: str
    numeric_id: int
    created_at: float
    account: str = DEFAULT  # the account whose token created it (``accounts.py``)
    ips: list[dict[str, Any]] = field(default_factory=list)
    """Its addresses (``ips.py``): none at first, as for an app made through the API."""


@dataclass
class MachineRecord:
    """Everything the sandbox knows about one machine (``config`` keeps ``env``)."""

    id: str
    app: str
    name: str
    region: str
    config: dict[str, Any]
    instance_id: str
    private_ip: str
    created_at: float
    timeline: list[tuple[float, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def state(self, now: float) -> str:
        """The state at ``now``: the last timeline step that has begun."""
        current = self.timeline[0][1]
        for when, state in self.timeline:
            if when > now:
                break
            current = state
        return current


class FlyState:
    """All orgs, apps and machines of one Fly cloud (thread-safe)."""

    def __init__(self, ctx: CloudContext) -> None:
        self.ctx = ctx
        opts = ctx.options
        self.provision_delay_s = float(opts.get("provision_delay_s", ctx.provision_delay_s))
        self.start_delay_s = float(opts.get("start_delay_s", ctx.start_delay_s))
        self.stop_delay_s = float(opts.get("stop_delay_s", ctx.start_delay_s))
        self.destroy_delay_s = float(opts.get("destroy_delay_s", ctx.start_delay_s))
        self.nearest = str(opts.get("nearest", "iad"))
        self.orgs: set[str] = set(opts.get("orgs", ("personal",)))
        slots = int(opts.get("gpu_slots", 8))
        # region -> GPU kind -> how many machines with that GPU the region can hold
        self.capacity: dict[str, dict[str, int]] = {
            code: dict.fromkeys(gpus, slots) for code, (_name, gpus) in REGIONS.items()
        }
        self._rng = ctx.rng("fly-machines")
        self._lock = threading.RLock()
        self.lock = self._lock
        """The state's lock, for the modules beside this one (``ips.py``)."""
        self.placement_limit = int(opts.get("placement_limit", 20))
        """The org's per-region machine limit a ``count=0`` placements question answers."""
        self.apps: dict[str, AppRecord] = {}
        self.machines: dict[tuple[str, str], MachineRecord] = {}
        for app in opts.get("apps", ()):
            self.create_app(str(app), "personal")

    # -- ids --------------------------------------------------------------------------
    def _hex(self, n: int) -> str:
        return "".join(self._rng.choice(_HEX) for _ in range(n))

    def _ulid(self) -> str:
        return "01" + "".join(self._rng.choice(_ULID) for _ in range(24))

    # -- apps -------------------------------------------------------------------------
    def create_app(self, name: str, org: str, network: str | None = None) -> AppRecord:
        """A new app; 422 when the name is taken, 404 for an unknown org."""
        with self._lock:
            if org not in self.orgs:
                raise FlyError(404, f"organization {org!r} not found")
            if name in self.apps:
                raise FlyError(422, f"app name {name!r} has already been taken")
            app = AppRecord(
                id=self._hex(16), name=name, org=org, network=network or "default",
                numeric_id=self._rng.randint(100_000, 999_999), created_at=self.ctx.clock.time(),
                account=owner(),
            )
            self.apps[name] = app
            return app

    def app(self, name: str) -> AppRecord:
        """An app of the acting account by name, or ``FlyError(404)`` (an app of another
        account is not found: an organisation's token sees only its own apps)."""
        with self._lock:
            found = self.apps.get(name)
            if found is None or not visible(found.account):
                raise FlyError(404, "app not found")
            return found

    def delete_app(self, name: str) -> None:
        """Remove an app and destroy its machines."""
        with self._lock:
            self.app(name)
            for (app, _mid), machine in list(self.machines.items()):
                if app == name:
                    self._step(machine, "destroy", [(0.0, "destroying"),
                                                    (self.destroy_delay_s, "destroyed")])
            del self.apps[name]

    def app_wire(self, app: AppRecord) -> dict[str, Any]:
        """The spec's ``App`` object."""
        count = sum(1 for (a, _), m in self.machines.items()
                    if a == app.name and m.state(self.ctx.clock.time()) != "destroyed")
        return {
            "id": app.id,
            "name": app.name,
            "machine_count": count,
            "volume_count": 0,
            "network": app.network,
            "status": "deployed" if count else "pending",
            "internal_numeric_id": app.numeric_id,
            "organization": {"name": app.org, "slug": app.org,
                             "internal_numeric_id": zlib.crc32(app.org.encode()) % 1_000_000},
        }

    # -- machines ---------------------------------------------------------------------
    def create_machine(self, app_name: str, body: Mapping[str, Any]) -> MachineRecord:
        """Place and create a machine; ``FlyError`` 400/412 when it cannot."""
        with self._lock:
            self.app(app_name)
            config = dict(body.get("config") or {})
            if not config.get("image"):
                raise FlyError(400, "invalid config.image: an image is required")
            guest = self._guest(config.get("guest"))
            config["guest"] = guest
            region = str(body.get("region") or self.nearest)
            if region not in REGIONS:
                raise FlyError(400, f"invalid region {region!r}; see GET /v1/platform/regions")
            kind = guest.get("gpu_kind")
            if kind and (self.free_slots(region, kind) <= 0  # take last: it consumes stock
                         or not self.ctx.capacity.take("fly", kind, int(guest.get("gpus") or 1))):
                hosts = sorted(r for r in REGIONS if self.free_slots(r, kind) > 0)
                raise FlyError(
                    412,
                    f"insufficient resources to create new machine with gpu_kind {kind} in "
                    f"region {region} (regions with {kind}: {', '.join(hosts) or 'none'})",
                    "insufficient_capacity",
                )
            now = self.ctx.clock.time()
            machine = MachineRecord(
                id=self._new_id(app_name),
                app=app_name,
                name=str(body.get("name") or self._name()),
                region=region,
                config=config,
                instance_id=self._ulid(),
                private_ip=f"fdaa:0:{self._hex(4)}:a7b:{self._hex(3)}:{self._hex(4)}:"
                           f"{self._hex(4)}:2",
                created_at=now,
                timeline=[(now, "created")],
            )
            self.machines[(app_name, machine.id)] = machine
            if not body.get("skip_launch"):
                self._step(machine, "launch", [
                    (self.provision_delay_s, "starting"),
                    (self.provision_delay_s + self.start_delay_s, "started"),
                ])
            return machine

    def free_slots(self, region: str, gpu_kind: str | None) -> int:
        """How many more machines with ``gpu_kind`` (or none) ``region`` can place now."""
        if not gpu_kind:
            return CPU_SLOTS
        if not self.ctx.capacity.allows("fly", gpu_kind):
            return 0  # a sandbox stock override (``sb.capacity``) has none left
        with self._lock:
            now = self.ctx.clock.time()
            used = sum(1 for m in self.machines.values()
                       if m.region == region and m.config["guest"].get("gpu_kind") == gpu_kind
                       and m.state(now) not in ("destroying", "destroyed"))
            return max(0, self.capacity.get(region, {}).get(gpu_kind, 0) - used)

    def placements(self, compute: Any, region: str | None, count: int) -> list[dict[str, Any]]:
        """``placement.RegionPlacement`` rows for ``POST /platform/placements``.

        The spec: "Simulates placing the specified number of machines into regions,
        depending on available capacity and limits"; ``count`` "Defaults to 0, which
        returns the org-specific limit for each region" (specs/fly/machines-openapi3.json
        ``main.getPlacementsRequest``). So with ``count=0`` each region that can place
        ``compute`` now answers the org's limit (``placement_limit``), not its free
        capacity; with ``count=N`` the N machines are spread over the regions in order,
        each row saying how many landed there. Which regions a ``count=0`` answer leaves
        out (here: those with no free capacity) is **unverified** against Fly.
        """
        guest = self._guest(compute)
        wanted = [r.strip() for r in (region or "any").split(",") if r.strip()]
        codes = list(REGIONS) if "any" in wanted else [r for r in wanted if r in REGIONS]
        rows = []
        left = count
        for code in codes:
            free = self.free_slots(code, guest.get("gpu_kind"))
            if free <= 0:
                continue
            if count == 0:
                limit = self.placement_limit
                rows.append({"region": code, "count": limit, "concurrency": limit})
            elif left > 0:
                placed = min(free, left)
                left -= placed
                rows.append({"region": code, "count": placed, "concurrency": placed})
        return rows

    def upsert_metadata(self, app: str, machine_id: str, key: str, value: str) -> None:
        """Set one ``config.metadata`` key (``POST .../metadata/{key}``); ``""`` removes it."""
        with self._lock:
            machine = self.get(app, machine_id)
            if machine.state(self.ctx.clock.time()) == "destroyed":
                raise FlyError(404, "machine not found")
            metadata = dict(machine.config.get("metadata") or {})
            if value:
                metadata[key] = value
            else:
                metadata.pop(key, None)
            machine.config = {**machine.config, "metadata": metadata}

    def _new_id(self, app: str) -> str:
        while True:
            mid = self._hex(14)
            if (app, mid) not in self.machines:
                return mid

    def _name(self) -> str:
        return (f"{self._rng.choice(_ADJECTIVES)}-{self._rng.choice(_NOUNS)}-"
                f"{self._rng.randint(1000, 9999)}")

    @staticmethod
    def _guest(raw: Any) -> dict[str, Any]:
        """A validated ``fly.MachineGuest`` (defaults: shared-cpu-1x, 256 MB)."""
        guest = dict(raw) if isinstance(raw, Mapping) else {}
        kind = guest.setdefault("cpu_kind", "shared")
        if kind not in CPU_KINDS:
            raise FlyError(400, f"invalid guest.cpu_kind {kind!r}; use shared or performance")
        counts, lo, hi = CPU_KINDS[kind]
        cpus = guest.setdefault("cpus", 1)
        if cpus not in counts:
            raise FlyError(400, f"invalid guest.cpus {cpus} for {kind}; use one of {list(counts)}")
        memory = guest.setdefault("memory_mb", lo * cpus)
        if memory % 256:
            raise FlyError(400, f"invalid guest.memory_mb {memory}: must be a multiple of 256")
        if not lo * cpus <= memory <= hi * cpus:
            raise FlyError(400, f"invalid guest.memory_mb {memory} for {kind}-{cpus}x: "
                                f"must be between {lo * cpus} and {hi * cpus}")
        gpu = guest.get("gpu_kind")
        if gpu:
            if not any(gpu in gpus for _n, gpus in REGIONS.values()):
                raise FlyError(400, f"invalid guest.gpu_kind {gpu!r}")
            if kind != "performance":
                raise FlyError(400, "GPU machines need guest.cpu_kind performance")
            if guest.setdefault("gpus", 1) not in GPU_COUNTS:
                raise FlyError(400, f"invalid guest.gpus {guest['gpus']}; use 1, 2, 4 or 8")
        elif guest.get("gpus"):
            raise FlyError(400, "guest.gpus needs guest.gpu_kind")
        return guest

    def get(self, app: str, machine_id: str) -> MachineRecord:
        """A machine (destroyed ones too), or ``FlyError(404)``."""
        with self._lock:
            self.app(app)
            found = self.machines.get((app, machine_id))
            if found is None:
                raise FlyError(404, "machine not found")
            return found

    def list_machines(self, app: str, *, include_deleted: bool = False, region: str | None = None,
             states: Iterable[str] = ()) -> list[MachineRecord]:
        """An app's machines, oldest first, filtered as ``GET .../machines`` does."""
        wanted = set(states)
        with self._lock:
            self.app(app)
            now = self.ctx.clock.time()
            out = []
            for (owner, _mid), m in self.machines.items():
                state = m.state(now)
                if owner != app or (state == "destroyed" and not include_deleted):
                    continue
                if (region and m.region != region) or (wanted and state not in wanted):
                    continue
                out.append(m)
            return out

    def stop(self, app: str, machine_id: str) -> MachineRecord:
        """Stop a machine (a no-op when it is already stopping or down)."""
        with self._lock:
            machine = self.get(app, machine_id)
            state = machine.state(self.ctx.clock.time())
            if state in ("stopping", "stopped", "suspended", "created"):
                return machine
            if state in ("destroying", "destroyed"):
                raise FlyError(412, f"failed_precondition: unable to stop machine, current "
                                    f"state '{state}'")
            self._step(machine, "stop", [(0.0, "stopping"), (self.stop_delay_s, "stopped")])
            return machine

    def start(self, app: str, machine_id: str) -> str:
        """Start a machine; returns its previous state. 412 while it is stopping or gone."""
        with self._lock:
            machine = self.get(app, machine_id)
            state = machine.state(self.ctx.clock.time())
            if state in ("started", "starting"):
                return state
            if state not in ("stopped", "suspended", "created", "failed"):
                raise FlyError(412, f"failed_precondition: unable to start machine from "
                                    f"current state '{state}'")
            self._step(machine, "start", [(0.0, "starting"), (self.start_delay_s, "started")])
            return state

    def destroy(self, app: str, machine_id: str, *, force: bool) -> MachineRecord:
        """Destroy a machine; without ``force`` only when it is not running."""
        with self._lock:
            machine = self.get(app, machine_id)
            state = machine.state(self.ctx.clock.time())
            if state == "destroyed":
                raise FlyError(404, "machine not found")
            if state == "destroying":
                return machine
            if not force and state in ("started", "starting", "stopping"):
                raise FlyError(412, "failed_precondition: unable to destroy machine, not "
                                    "currently stopped or suspended (pass force=true)")
            self._step(machine, "destroy", [(0.0, "destroying"),
                                            (self.destroy_delay_s, "destroyed")])
            return machine

    def fail(self, app: str, machine_id: str) -> None:
        """Make a machine crash (state ``failed``), as a broken image would."""
        with self._lock:
            self._step(self.get(app, machine_id), "exit", [(0.0, "failed")])

    def _step(self, machine: MachineRecord, event: str, steps: list[tuple[float, str]]) -> None:
        """Replace the machine's future with ``steps`` (offsets from now); log the event."""
        now = self.ctx.clock.time()
        machine.timeline = [s for s in machine.timeline if s[0] <= now]
        machine.timeline += [(now + offset, state) for offset, state in steps]
        source = "flyd" if event in ("exit",) else "user"
        machine.events.insert(0, {
            "id": self._ulid(), "type": event, "status": steps[-1][1], "source": source,
            "timestamp": int(now * 1000),
        })

    def wire(self, machine: MachineRecord, *, now: float | None = None,
             summary: bool = False) -> dict[str, Any]:
        """The spec's ``Machine`` object (``config.env`` included, as Fly returns it)."""
        now = self.ctx.clock.time() if now is None else now
        image = str(machine.config.get("image", ""))
        repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
        out: dict[str, Any] = {
            "id": machine.id,
            "name": machine.name,
            "state": machine.state(now),
            "region": machine.region,
            "instance_id": machine.instance_id,
            "private_ip": machine.private_ip,
            "created_at": iso(machine.created_at),
            "updated_at": iso(max(w for w, _s in machine.timeline if w <= now)),
            "image_ref": {"registry": "registry-1.docker.io", "repository": repo,
                          "tag": tag or "latest", "digest": f"sha256:{machine.id:0>64}",
                          "labels": {}},
        }
        if not summary:
            out["config"] = machine.config
            out["events"] = list(machine.events)
            out["host_status"] = "ok"
        return out

    def regions_wire(self) -> dict[str, Any]:
        """``main.regionResponse`` for ``GET /platform/regions``."""
        return {
            "nearest": self.nearest,
            "regions": [{"code": code, "name": name, "gateway_available": True,
                         "requires_paid_plan": False, "deprecated": False}
                        for code, (name, _gpus) in REGIONS.items()],
        }
