"""Vast.ai instance state: records, the lifecycle, the env flag string, the instance row.

Status is computed from the clock, never by timers: an instance rented at ``t``
reads ``actual_status`` null (scheduling) until ``t + provision``, ``"loading"``
(pulling the image) until ``t + provision + start``, then ``"running"``. A stop
makes it ``"stopped"`` (``intended_status`` and ``cur_state`` ``"stopped"``), a
start boots it again (``"loading"`` -> ``"running"``), ``target_state: "stopped"``
at create leaves it ``"created"``, an outbid interruptible goes ``"exited"`` with
``intended_status`` still ``"running"`` (its GPU went to the higher bid:
``cur_state`` ``"stopped"``), ``freeze`` (a test helper) gives ``"frozen"`` and a
host going away shows ``"offline"``. A destroyed instance is gone: ``GET`` answers
``{"instances": null}`` and it leaves the list, as on Vast.

These are the states of the ``actual_status`` table in Vast's docs
(https://docs.vast.ai/cli/reference/show-instances.md, also
https://docs.vast.ai/sdk/python/reference/show-instance.md): null (provisioning),
``loading``, ``running`` (GPU billed), ``stopped`` (halted: disk charges only),
``frozen`` (paused with memory kept: GPU billed), ``exited`` (the container process
exited), ``rebooting``, ``unknown`` (no heartbeat) and ``offline``; ``cur_state`` is
the hardware allocation (``running``, ``stopped`` or ``unloaded``). The row's
``instance`` price block bills the GPU only while the hardware is held.

The row shape is the v1 list's (``GET /api/v1/instances/``), also used for
``GET /api/v0/instances/{id}/``: ``ports`` is Docker's map
(``{"8000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "41234"}]}``, null unless
running) and ``extra_env`` a list of ``[name, value]`` pairs, port flags included
(``["-p 8000:8000", "1"]``).
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..accounts import DEFAULT, owner, visible
from ..cloud import CloudContext

__all__ = ["InstanceRecord", "InstanceStore", "parse_env"]

_HOURS_PER_MONTH = 730.0
_PORT_CHARS = frozenset("0123456789:/tcpudp")


def parse_env(value: Any) -> tuple[dict[str, str], list[str]]:
    """``(env, port specs)`` from a Docker-flag string (``"-e A=1 -p 8000:8000"``) or a dict.

    Port specs keep the flag's argument (``"8000:8000"``, ``"5000:5000/udp"``). Raises
    ``ValueError`` with a readable reason for anything else.
    """
    env: dict[str, str] = {}
    ports: list[str] = []
    if value is None or value == "":
        return env, ports
    if isinstance(value, Mapping):  # what vast-cli sends: {"A": "1", "-p 8000:8000": "1"}
        for key, val in value.items():
            if isinstance(key, str) and key.startswith("-p "):
                ports.append(key[3:].strip())
            elif isinstance(key, str) and key:
                env[key] = str(val)
            else:
                raise ValueError(f"env key {key!r} is not a name")
        return env, _checked(ports)
    if not isinstance(value, str):
        raise ValueError("env must be a string of Docker flags like '-e KEY=value -p 8000:8000'")
    try:
        tokens = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"env is not a valid flag string ({exc})") from None
    it = iter(tokens)
    for flag in it:
        arg = next(it, None)
        if flag not in {"-e", "-p", "-h", "-v", "-n"} or arg is None:
            raise ValueError(f"env: cannot read {flag!r} here; write '-e KEY=value' or "
                             "'-p 8000:8000'")
        if flag == "-e":
            name, sep, val = arg.partition("=")
            if not name or not sep:
                raise ValueError(f"env: '-e {arg}' is not KEY=value")
            env[name] = val
        elif flag == "-p":
            ports.append(arg)
    return env, _checked(ports)


def _checked(ports: list[str]) -> list[str]:
    for spec in ports:
        inner = spec.split(":")[-1].split("/")[0]
        if not set(spec) <= _PORT_CHARS or not inner.isdigit() or not 0 < int(inner) < 65536:
            raise ValueError(f"env: '-p {spec}' is not a port mapping like 8000:8000")
    return ports


def container_port(spec: str) -> tuple[int, str]:
    """``"8000:8000/udp"`` -> ``(8000, "udp")`` (the container side, Docker's order)."""
    mapping, _, proto = spec.partition("/")
    return int(mapping.split(":")[-1]), (proto or "tcp")


@dataclass
class InstanceRecord:
    """Everything the sandbox knows about one rented instance."""

    id: int
    offer: dict[str, Any]
    label: str | None
    image: str
    env: dict[str, str]
    port_specs: list[str]
    disk: float
    created_at: float
    public_ip: str
    host_ports: dict[str, int]
    ssh_port: int
    jupyter_token: str
    bid: float | None = None
    runtype: str = "ssh"
    args: list[str] = field(default_factory=list)
    onstart: str = ""
    template_hash_id: str | None = None
    phase: str = "BOOT"  # BOOT (derived from the clock), CREATED, STOPPED, EXITED, FROZEN
    #                      or OFFLINE
    intended: str = "running"
    hardware: str = "running"  # ``cur_state``: whether the machine's GPUs are held for it
    status_msg: str | None = None
    boot_at: float = 0.0
    provision_s: float = 0.0
    start_s: float = 0.0
    account: str = DEFAULT  # the account that rented it (``accounts.py``)

    def actual_status(self, now: float) -> str | None:
        """``actual_status`` at ``now`` (``None`` while Vast is still scheduling it)."""
        if self.phase == "CREATED":
            return "created"
        if self.phase == "STOPPED":
            return "stopped"
        if self.phase == "EXITED":
            return "exited"
        if self.phase == "FROZEN":
            return "frozen"
        if self.phase == "OFFLINE":
            return "offline"
        elapsed = now - self.boot_at
        if elapsed < self.provision_s:
            return None
        if elapsed < self.provision_s + self.start_s:
            return "loading"
        return "running"

    def running_since(self) -> float:
        """When the current boot reaches (or reached) ``running``."""
        return self.boot_at + self.provision_s + self.start_s


class StoreError(Exception):
    """A request the instance API refuses: ``status`` and the Vast error body."""

    def __init__(self, status: int, error: str, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.body: dict[str, Any] = {"success": False, "error": error, "msg": msg}


class InstanceStore:
    """All instances of one Vast cloud (thread-safe)."""

    def __init__(self, ctx: CloudContext) -> None:
        self.ctx = ctx
        self.provision_delay_s = float(ctx.options.get("provision_delay_s", ctx.provision_delay_s))
        self.start_delay_s = float(ctx.options.get("start_delay_s", ctx.start_delay_s))
        self._rng = ctx.rng("vast-instances")
        self._lock = threading.RLock()
        self._live: dict[int, InstanceRecord] = {}
        self.destroyed: dict[int, InstanceRecord] = {}
        self._next_id = 21_400_000 + self._rng.randint(0, 9_999)

    def create(self, offer: Mapping[str, Any], body: Mapping[str, Any], env: dict[str, str],
               port_specs: list[str]) -> InstanceRecord:
        """Rent ``offer`` with an already validated create ``body``."""
        now = self.ctx.clock.time()
        with self._lock:
            self._next_id += self._rng.randint(1, 50)
            host_ports = {}
            for spec in port_specs:
                port, proto = container_port(spec)
                host_ports[f"{port}/{proto}"] = self._rng.randint(20_000, 65_000)
            rec = InstanceRecord(
                id=self._next_id,
                offer=dict(offer),
                label=body.get("label"),
                image=str(body.get("image") or "vastai/base-image:@vastai-automatic-tag"),
                env=env,
                port_specs=port_specs,
                disk=float(body.get("disk") or 8.0),
                created_at=now,
                public_ip=f"198.51.100.{self._rng.randint(2, 254)}",
                host_ports=host_ports,
                ssh_port=self._rng.randint(10_000, 40_000),
                jupyter_token=f"{self._rng.getrandbits(256):064x}",
                bid=float(body["price"]) if body.get("price") is not None else None,
                runtype=str(body.get("runtype") or ("args" if body.get("args") else "ssh")),
                args=list(body.get("args") or []),
                onstart=str(body.get("onstart") or ""),
                template_hash_id=body.get("template_hash_id"),
                account=owner(),
            )
            if body.get("target_state") == "stopped":
                rec.phase, rec.intended, rec.hardware = "CREATED", "stopped", "stopped"
            else:
                self._boot(rec, now, provision=True)
            self._live[rec.id] = rec
            return rec

    def _boot(self, rec: InstanceRecord, now: float, *, provision: bool) -> None:
        rec.phase, rec.intended, rec.hardware, rec.boot_at = "BOOT", "running", "running", now
        rec.provision_s = self.provision_delay_s if provision else 0.0
        rec.start_s = self.start_delay_s
        rec.status_msg = None

    def get(self, instance_id: int) -> InstanceRecord | None:
        """A live instance of the acting account, or ``None`` (another account's is unknown)."""
        with self._lock:
            rec = self._live.get(instance_id)
            return rec if rec is not None and visible(rec.account) else None

    def require(self, instance_id: int) -> InstanceRecord:
        """A live instance; ``StoreError(404, not_found)`` otherwise."""
        rec = self.get(instance_id)
        if rec is None:
            raise StoreError(404, "not_found", f"Instance {instance_id} not found")
        return rec

    def all(self) -> list[InstanceRecord]:
        """Every live instance of the acting account, oldest first."""
        with self._lock:
            return [r for r in self._live.values() if visible(r.account)]

    def set_state(self, instance_id: int, state: str) -> InstanceRecord:
        """``state: running|stopped``; setting the state it already has is a no-op."""
        with self._lock:
            rec = self.require(instance_id)
            now = self.ctx.clock.time()
            if state == "stopped" and rec.phase in {"BOOT", "OFFLINE", "EXITED", "FROZEN"}:
                # Vast's docs: stopped = "Container is halted. Disk charges continue; no
                # GPU charges" (docs.vast.ai/cli/reference/show-instances.md).
                rec.phase, rec.intended, rec.hardware = "STOPPED", "stopped", "stopped"
                rec.status_msg = "stopped by user"
            elif state == "stopped":
                rec.intended = "stopped"
            elif state == "running" and rec.phase in {"EXITED", "CREATED", "STOPPED", "FROZEN"}:
                self._boot(rec, now, provision=rec.phase == "CREATED")
            elif state == "running":
                rec.intended = "running"
            return rec

    def destroy(self, instance_id: int) -> InstanceRecord:
        """Remove an instance for good; ``StoreError(404)`` if there is none."""
        with self._lock:
            rec = self.require(instance_id)
            del self._live[instance_id]
            self.destroyed[instance_id] = rec
            return rec

    def interrupt(self, instance_id: int, *, offline: bool = False) -> InstanceRecord:
        """From Vast's side: an outbid interruptible stops (``exited``), or the host goes
        ``offline``."""
        with self._lock:
            rec = self.require(instance_id)
            if offline:
                rec.phase, rec.status_msg = "OFFLINE", "host machine is offline"
            else:
                # The container exits and the GPUs go to the higher bid; what the renter
                # asked for (``intended_status``) is kept, so it resumes once it wins again.
                rec.phase, rec.hardware = "EXITED", "stopped"
                rec.status_msg = "stopped: outbid by a higher bidder"
            return rec

    def freeze(self, instance_id: int) -> InstanceRecord:
        """From Vast's side: the container is paused with its memory kept (``frozen``);
        the GPUs stay held and billed."""
        with self._lock:
            rec = self.require(instance_id)
            rec.phase, rec.intended, rec.hardware = "FROZEN", "frozen", "running"
            rec.status_msg = "frozen"
            return rec

    # -- the wire -------------------------------------------------------------------------
    def row(self, rec: InstanceRecord, now: float | None = None) -> dict[str, Any]:
        """The instance row, as ``GET /api/v1/instances/`` (and the v0 get) answer it."""
        now = self.ctx.clock.time() if now is None else now
        status = rec.actual_status(now)
        offer = rec.offer
        running = status == "running"
        disk_hour = float(offer["storage_cost"]) * rec.disk / _HOURS_PER_MONTH
        gpu_hour = rec.bid if rec.bid is not None else float(offer["dph_base"])
        billed_gpu = gpu_hour if rec.hardware == "running" else 0.0
        total = round(gpu_hour + disk_hour, 6)
        state = rec.hardware
        idx = str(rec.id % 30 + 1)
        ports = {key: [{"HostIp": "0.0.0.0", "HostPort": str(hp)},
                       {"HostIp": "::", "HostPort": str(hp)}]
                 for key, hp in rec.host_ports.items()} if running else None
        msg = rec.status_msg
        if msg is None and status == "loading":
            msg = f"Pulling image {rec.image}"
        elif msg is None and running:
            msg = f"success, running {rec.image}/{rec.runtype}"
        extra_env = [[k, v] for k, v in rec.env.items()]
        extra_env += [[f"-p {spec}", "1"] for spec in rec.port_specs]
        return {
            "id": rec.id,
            "actual_status": status,
            "intended_status": rec.intended,
            "cur_state": state,
            "next_state": "stopped" if rec.intended == "stopped" else "running",
            "status_msg": msg,
            "label": rec.label,
            "template_id": None,
            "template_hash_id": rec.template_hash_id,
            "template_name": None,
            "image_uuid": rec.image,
            "image_args": list(rec.args),
            "image_runtype": rec.runtype,
            "extra_env": extra_env,
            "onstart": rec.onstart,
            "jupyter_token": rec.jupyter_token,
            "public_ipaddr": rec.public_ip,
            "local_ipaddrs": "10.0.0.5 172.17.0.1",
            "ssh_host": f"ssh{idx}.vast.ai",
            "ssh_idx": idx,
            "ssh_port": rec.ssh_port,
            "machine_dir_ssh_port": rec.ssh_port + 1,
            "machine_id": offer["machine_id"],
            "bundle_id": offer["bundle_id"],
            "start_date": rec.created_at,
            "end_date": rec.created_at + float(offer["duration"]),
            "uptime_mins": round((now - rec.running_since()) / 60, 2) if running else None,
            "duration": float(offer["duration"]),
            "cpu_arch": offer["cpu_arch"],
            "cpu_cores": offer["cpu_cores"],
            "cpu_cores_effective": offer["cpu_cores_effective"],
            "cpu_name": offer["cpu_name"],
            "cpu_ram": offer["cpu_ram"],
            "cpu_util": 0.02 if running else 0.0,
            "mem_limit": round(offer["cpu_ram"] / 1024, 3),
            "mem_usage": 0.41 if running else None,
            "vmem_usage": 0.0 if running else None,
            "gpu_name": offer["gpu_name"],
            "gpu_arch": offer["gpu_arch"],
            "gpu_totalram": offer["gpu_ram"],
            "gpu_ram": offer["gpu_ram"],
            "gpu_util": 0.0 if running else None,
            "gpu_temp": 34.0 if running else None,
            "gpu_frac": offer["gpu_frac"],
            "gpu_lanes": offer["gpu_lanes"],
            "gpu_mem_bw": offer["gpu_mem_bw"],
            "bw_nvlink": offer["bw_nvlink"],
            "disk_name": offer["disk_name"],
            "disk_space": rec.disk,
            "disk_bw": offer["disk_bw"],
            "disk_util": 0.01 if running else -1,
            "disk_usage": 0.12 if running else -1,
            # Not in the spec's row, but on the wire: vast-cli's `show instances` table
            # prints them (vastai 1.9.1 vastai/cli/display.py instance_fields).
            "inet_up": offer["inet_up"],
            "inet_down": offer["inet_down"],
            "inet_up_cost": offer["inet_up_cost"],
            "inet_down_cost": offer["inet_down_cost"],
            "direct_port_count": offer["direct_port_count"],
            "direct_port_start": 20_000,
            "direct_port_end": 65_000,
            "ports": ports,
            "static_ip": offer["static_ip"],
            "geolocation": offer["geolocation"],
            "country_code": offer["geolocation"].rsplit(",", 1)[-1].strip(),
            "verification": offer["verification"],
            "rentable": False,
            "host_id": offer["host_id"],
            "hosting_type": offer["hosting_type"],
            "min_bid": offer["min_bid"],
            "is_bid": rec.bid is not None,
            "dph_base": gpu_hour,
            "dph_total": total,
            "dlperf": offer["dlperf"],
            "dlperf_per_dphtotal": round(float(offer["dlperf"]) / total, 3),
            "flops_per_dphtotal": round(float(offer["total_flops"]) / total, 3),
            "total_flops": offer["total_flops"],
            "score": round(float(offer["dlperf"]) / total, 3),
            "reliability2": offer["reliability2"],
            "os_version": offer["os_version"],
            "mobo_name": offer["mobo_name"],
            "pci_gen": offer["pci_gen"],
            "pcie_bw": offer["pcie_bw"],
            "num_gpus": offer["num_gpus"],
            "logo": offer["logo"],
            "webpage": None,
            "search": {"gpuCostPerHour": gpu_hour, "diskHour": round(disk_hour, 6),
                       "totalHour": total, "discountTotalHour": 0,
                       "discountedTotalPerHour": total},
            "instance": {"gpuCostPerHour": billed_gpu, "diskHour": round(disk_hour, 6),
                         "totalHour": round(billed_gpu + disk_hour, 6), "discountTotalHour": 0,
                         "discountedTotalPerHour": round(billed_gpu + disk_hour, 6)},
            "storage_cost": offer["storage_cost"],
            "storage_total_cost": round(disk_hour, 6),
            "vram_costperhour": round(gpu_hour / max(1, offer["gpu_ram"]), 8),
            "credit_balance": None,
            "credit_discount": None,
            "credit_discount_max": offer["credit_discount_max"],
            "client_run_time": 1.1,
            "host_run_time": float(offer["duration"]),
            "external": False,
            "time_remaining": "",
            "time_remaining_isbid": "",
            "volume_info": [],
        }
