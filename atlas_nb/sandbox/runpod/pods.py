"""RunPod pod state: records, the lifecycle, placement, and the REST v2 ``Pod`` shape.

Status is computed from the clock, never by timers: a pod created at ``t``
reads ``PROVISIONING`` until ``t + provision``, ``STARTING`` until ``t +
provision + start``, then ``RUNNING``. A manual clock therefore steps a pod
through its lifecycle deterministically, and nothing runs in the background.

Terminated pods stay in the store with status ``TERMINATED`` (tests count them)
but are invisible to the API: like RunPod, ``GET``/``DELETE`` answer 404 and the
list leaves them out.
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
from .catalog import Catalog

__all__ = ["ACTIONS", "SPOT_START_REFUSED", "PodError", "PodRecord", "PodStore"]

ACTIONS: dict[str, tuple[str, ...]] = {
    "PROVISIONING": ("stop", "terminate"),
    "STARTING": ("stop", "terminate"),
    "RUNNING": ("stop", "restart", "terminate"),
    "EXITED": ("start", "terminate"),
    "ERROR": ("start", "terminate"),
    "TERMINATED": (),
}
"""Valid actions per status, as the v2 spec's ``podAction`` describes them."""

SPOT_START_REFUSED = "Cannot resume a spot pod as an on demand pod."
"""RunPod's answer to an on-demand resume of a spot pod (GraphQL ``podResume``; quoted in
runpod/runpodctl issue #156). A spot pod resumes only with ``podBidResume`` and a bid
(runpod/runpodctl@2e2df89e:api/pod.go ``StartSpotPod``). The sandbox answers a REST v2
``start`` action on a spot pod the same way, as a 400: v2 has no bid field to resume one
with [unverified: RunPod documents no v2 answer for this case, so the status is ours]."""

_ID_CHARS = string.ascii_lowercase + string.digits


class PodError(Exception):
    """A request the pod API refuses: ``status`` (400/404/409) and a ``detail`` line."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class PodRecord:
    """Everything the sandbox knows about one pod."""

    id: str
    name: str
    image: str
    cloud: str
    data_center_id: str
    cost_running: float
    created_at: float
    machine_id: str
    ip: str
    ssh_user: str
    gpu: dict[str, Any] | None = None
    cpu: dict[str, Any] | None = None
    args: str = ""
    disk: int = 50
    ports: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    registry: str | None = None
    mounts: dict[str, Any] = field(default_factory=dict)
    cuda_version: str | None = None
    locked: bool = False
    global_networking: bool = False
    interruptible: bool = False
    bid_per_gpu: float | None = None
    support_public_ip: bool = True
    """On a host with a public IP. GraphQL rentals get one only when they ask
    (``supportPublicIp: true``); without it a TCP port maps to the private address."""
    public_ports: dict[int, int] = field(default_factory=dict)
    phase: str = "BOOT"  # BOOT (derived from the clock), EXITED, ERROR or TERMINATED
    boot_at: float = 0.0
    provision_s: float = 0.0
    start_s: float = 0.0
    started_at: float | None = None
    last_change: str = "Created"
    events: list[tuple[float, str, str]] = field(default_factory=list)
    account: str = DEFAULT  # the account that created it (``accounts.py``)

    def status(self, now: float) -> str:
        """The v2 status at ``now``."""
        if self.phase != "BOOT":
            return self.phase
        elapsed = now - self.boot_at
        if elapsed < self.provision_s:
            return "PROVISIONING"
        if elapsed < self.provision_s + self.start_s:
            return "STARTING"
        return "RUNNING"

    def running_since(self) -> float:
        """When the current boot reaches (or reached) RUNNING."""
        return self.boot_at + self.provision_s + self.start_s


class PodStore:
    """All pods of one RunPod cloud (thread-safe)."""

    def __init__(self, ctx: CloudContext, catalog: Catalog) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.provision_delay_s = float(ctx.options.get("provision_delay_s", ctx.provision_delay_s))
        self.start_delay_s = float(ctx.options.get("start_delay_s", ctx.start_delay_s))
        self._rng = ctx.rng("runpod-pods")
        self._lock = threading.RLock()
        self._pods: dict[str, PodRecord] = {}

    def _new_id(self, n: int = 14) -> str:
        while True:
            pod_id = "".join(self._rng.choice(_ID_CHARS) for _ in range(n))
            if pod_id not in self._pods:
                return pod_id

    def create(
        self,
        *,
        name: str,
        image: str,
        gpu_id: str | None = None,
        gpu_count: int = 1,
        cpu: Mapping[str, Any] | None = None,
        cloud: str = "SECURE",
        data_center_ids: Iterable[str] = (),
        country_codes: Iterable[str] = (),
        ports: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        disk: int = 50,
        args: str = "",
        mounts: Mapping[str, Any] | None = None,
        cuda_allowed: Iterable[str] = (),
        cuda_min: str | None = None,
        global_networking: bool = False,
        interruptible: bool = False,
        bid_per_gpu: float | None = None,
        registry: str | None = None,
        support_public_ip: bool = True,
    ) -> PodRecord:
        """Place and create a pod; raises ``PodError(400)`` when it cannot be placed."""
        gpu = cpu_conf = None
        cuda: str | None = None
        if gpu_id is not None:
            row = self.catalog.gpu(gpu_id)
            if row is None:
                raise PodError(400, f"GPU type {gpu_id!r} does not exist; see GET /v2/catalog/gpus")
            places = self.catalog.placements(
                row, cloud, gpu_count, country_codes=country_codes, data_center_ids=data_center_ids
            )
            cudas = self.catalog.cuda_choices(row, cuda_allowed, cuda_min)
            if (
                not places
                or ((list(cuda_allowed) or cuda_min) and not cudas)
                or not self.ctx.capacity.take("runpod", gpu_id, gpu_count)  # last: it consumes
            ):
                raise PodError(
                    400,
                    f"no capacity for {gpu_count} x {gpu_id} on {cloud} cloud with the requested "
                    "constraints; try another GPU type, data center or cloud",
                )
            data_center = places[0]["id"]
            cuda = cudas[0] if cudas else None
            price_key = cloud.lower()
            unit = (
                bid_per_gpu
                if interruptible and bid_per_gpu is not None
                else row["price"][price_key]
            )
            cost = round(float(unit) * gpu_count, 4)
            gpu = {"id": gpu_id, "count": gpu_count}
        elif cpu is not None:
            flavor = self.catalog.cpus.get(str(cpu["id"]).split("-")[0])
            vcpus = int(cpu["vcpuCount"])
            if flavor is None:
                raise PodError(
                    400, f"CPU flavor {cpu['id']!r} does not exist; see GET /v2/catalog/cpus"
                )
            lo, hi = flavor["vcpu"]["min"], flavor["vcpu"]["max"]
            if vcpus & (vcpus - 1) or not lo <= vcpus <= hi:
                raise PodError(400, f"vcpuCount must be a power of two between {lo} and {hi}")
            cpu_conf = {
                "id": cpu["id"],
                "vcpuCount": vcpus,
                "memory": int(vcpus * flavor["ramGbPerVcpu"]),
            }
            cost = round(vcpus * flavor["securePerVcpu"], 4)
            wanted = [d for d in data_center_ids if d in self.catalog.data_centers]
            data_center = wanted[0] if wanted else next(iter(self.catalog.data_centers))
        else:
            raise PodError(400, "exactly one of gpu or cpu must be set")
        now = self.ctx.clock.time()
        with self._lock:
            pod_id = self._new_id()
            port_list = list(ports)
            public = {
                int(p.split("/")[0]): self._rng.randint(10000, 60000)
                for p in port_list
                if p.endswith("/tcp")
            }
            pod = PodRecord(
                id=pod_id,
                name=name,
                image=image,
                cloud=cloud,
                data_center_id=data_center,
                cost_running=cost,
                created_at=now,
                machine_id="".join(self._rng.choice(_ID_CHARS) for _ in range(12)),
                ip=f"203.0.113.{self._rng.randint(2, 254)}",
                ssh_user=f"{pod_id}-{self._rng.getrandbits(32):08x}",
                gpu=gpu,
                cpu=cpu_conf,
                args=args,
                disk=disk,
                ports=port_list,
                env=dict(env or {}),
                registry=registry,
                mounts=dict(mounts or {}),
                cuda_version=cuda,
                global_networking=global_networking,
                interruptible=interruptible,
                bid_per_gpu=bid_per_gpu,
                support_public_ip=support_public_ip,
                public_ports=public,
                account=owner(),
            )
            self._boot(pod, now, provision=True)
            self._pods[pod_id] = pod
        return pod

    def _boot(self, pod: PodRecord, now: float, *, provision: bool) -> None:
        pod.phase = "BOOT"
        pod.boot_at = now
        pod.provision_s = self.provision_delay_s if provision else 0.0
        pod.start_s = self.start_delay_s
        ready = pod.running_since()
        if provision:
            pod.events.append((now, "system", f"Pulling image {pod.image}"))
        pod.events.append((now + pod.provision_s, "system", "Starting container"))
        pod.events.append((ready, "system", "Container started"))
        pod.events.append((ready, "container", "Server ready."))
        pod.last_change = "Rented by User" if provision else "Started by User"

    def get(self, pod_id: str, *, include_terminated: bool = False) -> PodRecord:
        """A pod by id; ``PodError(404)`` when unknown (or terminated)."""
        with self._lock:
            pod = self._pods.get(pod_id)
            now = self.ctx.clock.time()
            if (pod is None or not visible(pod.account)  # another account's: unknown here
                    or (pod.phase == "TERMINATED" and not include_terminated)):
                raise PodError(404, f"pod {pod_id} not found")
            self._settle(pod, now)
            return pod

    def _settle(self, pod: PodRecord, now: float) -> None:
        if (
            pod.phase == "BOOT"
            and pod.started_at != pod.running_since()
            and pod.status(now) == "RUNNING"
        ):
            pod.started_at = pod.running_since()

    def all(self, *, include_terminated: bool = False) -> list[PodRecord]:
        """Every pod, oldest first."""
        with self._lock:
            now = self.ctx.clock.time()
            pods = [p for p in self._pods.values()
                    if (include_terminated or p.phase != "TERMINATED") and visible(p.account)]
            for pod in pods:
                self._settle(pod, now)
            return pods

    def act(self, pod_id: str, action: str) -> PodRecord:
        """Apply ``start|stop|restart|terminate``; ``PodError(409)`` if not valid now."""
        with self._lock:
            pod = self.get(pod_id)
            now = self.ctx.clock.time()
            status = pod.status(now)
            self._settle(pod, now)
            if action not in ACTIONS[status]:
                raise PodError(
                    409,
                    f"Action not valid for current pod status: cannot {action} a pod that is "
                    f"{status}; valid actions: {', '.join(ACTIONS[status]) or 'none'}",
                )
            if action == "start" and pod.interruptible:
                raise PodError(400, SPOT_START_REFUSED)
            if action == "stop" and pod.locked:
                raise PodError(409, f"pod {pod_id} is locked; unlock it before stopping it")
            if action == "terminate":
                pod.phase = "TERMINATED"
                pod.last_change = "Terminated by User"
                pod.events.append((now, "system", "Pod terminated"))
            elif action == "stop":
                pod.phase = "EXITED"
                pod.last_change = "Exited by User"
                pod.events.append((now, "system", "Container stopped"))
            else:
                self._boot(pod, now, provision=False)
            return pod

    def bid_resume(self, pod_id: str, bid_per_gpu: float, gpu_count: int) -> PodRecord:
        """GraphQL ``podBidResume``: start a stopped spot pod at ``bid_per_gpu``.

        The bid is checked against the spot floor of the pod's cloud, as a rental's is.
        Refusing an on-demand pod here mirrors ``SPOT_START_REFUSED`` [unverified wording].
        """
        with self._lock:
            pod = self.get(pod_id)
            now = self.ctx.clock.time()
            status = pod.status(now)
            if not pod.interruptible:
                raise PodError(400, "Cannot resume an on demand pod as a spot pod.")
            if "start" not in ACTIONS[status]:
                raise PodError(409, f"cannot resume a pod that is {status}")
            if gpu_count < 1:
                raise PodError(400, "gpuCount must be at least 1")
            row = self.catalog.gpu((pod.gpu or {}).get("id", "")) or {}
            floor = (row.get("spotPrice") or {}).get(pod.cloud.lower())
            if floor is not None and bid_per_gpu < floor:
                raise PodError(
                    400,
                    f"Your bid of ${bid_per_gpu:.3f}/hr per GPU is below the minimum bid "
                    f"price of ${floor:.3f}.",
                )
            pod.bid_per_gpu = bid_per_gpu
            pod.cost_running = round(bid_per_gpu * int((pod.gpu or {}).get("count", 1)), 4)
            self._boot(pod, now, provision=False)
            return pod

    def interrupt(self, pod_id: str, *, error: bool = False) -> PodRecord:
        """Stop a pod from the cloud's side: a spot preemption (EXITED) or a failure (ERROR)."""
        with self._lock:
            pod = self.get(pod_id)
            now = self.ctx.clock.time()
            pod.phase = "ERROR" if error else "EXITED"
            pod.last_change = "Container error" if error else "Interrupted: outbid"
            pod.events.append((now, "system", pod.last_change))
            return pod

    def wire(self, pod: PodRecord, *, now: float | None = None) -> dict[str, Any]:
        """The REST v2 ``Pod`` object (env included, as the real API returns it)."""
        now = self.ctx.clock.time() if now is None else now
        status = pod.status(now)
        running = status == "RUNNING"
        tcp22 = pod.public_ports.get(22)
        started = pod.running_since() if running else pod.started_at
        out: dict[str, Any] = {
            "id": pod.id,
            "name": pod.name,
            "image": pod.image,
            "args": pod.args,
            "disk": pod.disk,
            "ports": list(pod.ports),
            "env": dict(pod.env),
            "registry": pod.registry,
            "status": status,
            "actions": list(ACTIONS[status]),
            "mounts": dict(pod.mounts),
            "cloud": pod.cloud,
            "dataCenterId": pod.data_center_id,
            "cudaVersion": pod.cuda_version,
            "ssh": {
                "proxy": {
                    "host": "ssh.runpod.io",
                    "port": 22,
                    "username": pod.ssh_user,
                    "command": f"ssh {pod.ssh_user}@ssh.runpod.io",
                },
                "direct": (
                    {
                        "host": pod.ip,
                        "port": tcp22,
                        "username": "root",
                        "command": f"ssh root@{pod.ip} -p {tcp22}",
                    }
                    if running and tcp22 and pod.support_public_ip
                    else None
                ),
            },
            "template": None,
            "cost": pod.cost_running if status not in {"EXITED", "TERMINATED"} else 0.0,
            "locked": pod.locked,
            "globalNetworking": {"enabled": pod.global_networking},
            "runtime": self._runtime(pod, now) if running else None,
            "createdAt": iso(pod.created_at),
            "startedAt": iso(started) if started is not None else None,
        }
        if pod.gpu is not None:
            out["gpu"] = dict(pod.gpu)
        if pod.cpu is not None:
            out["cpu"] = dict(pod.cpu)
        if pod.global_networking:
            out["globalNetworking"].update(
                ip=f"10.65.{len(pod.id)}.{int(pod.ip.rsplit('.', 1)[1])}",
                internalDns=f"{pod.id}.runpod.internal",
            )
        if pod.interruptible:
            out["interruptible"] = True  # spot pods (created via GraphQL); extra keys are allowed
        return out

    @staticmethod
    def private_ip(pod: PodRecord) -> str:
        """The pod's address on RunPod's private network, where its HTTP ports map: RunPod's
        GraphQL docs show an HTTP port as ``{"ip": "100.65.0.101", "isIpPublic": false,
        "privatePort": 8888, "publicPort": 60141, "type": "http"}``
        (runpod/docs@a900806e:sdks/graphql/manage-pods.mdx). Derived, not drawn, so the
        random stream (and every seeded id) stays as it was."""
        h = zlib.crc32(pod.id.encode())
        return f"100.65.{h % 250}.{(h >> 8) % 250 + 2}"

    def _runtime(self, pod: PodRecord, now: float) -> dict[str, Any]:
        ports = []
        for entry in pod.ports:
            number, _, kind = entry.partition("/")
            private = int(number)
            if kind == "tcp" and pod.support_public_ip:
                ports.append(
                    {
                        "private": private,
                        "public": pod.public_ports[private],
                        "type": "tcp",
                        "ip": pod.ip,
                    }
                )
            else:
                # HTTP goes through https://{id}-{port}.proxy.runpod.net, which reaches the
                # pod's private address; a TCP port on a host without a public IP likewise
                # maps only there, unreachable from outside.
                mapped = pod.public_ports.get(private) or (
                    10000 + zlib.crc32(f"{pod.id}:{private}".encode()) % 50000)
                ports.append({"private": private, "public": mapped, "type": kind or "http",
                              "ip": self.private_ip(pod)})
        gpus = (pod.gpu or {}).get("count", 0)
        return {
            "uptime": max(0, int(now - pod.running_since())),
            "gpus": [{"util": 0, "memoryUtil": 0} for _ in range(gpus)],
            "cpu": {"util": 1},
            "memory": {"util": 3},
            "ports": ports,
        }

    def log_lines(self, pod: PodRecord, source: str | None = None) -> list[tuple[float, str, str]]:
        """The pod's log lines up to now, oldest first (optionally one ``source`` only)."""
        now = self.ctx.clock.time()
        with self._lock:
            lines = sorted((e for e in pod.events if e[0] <= now), key=lambda e: e[0])
        return [e for e in lines if source is None or e[1] == source]
