"""The Lambda Cloud of the sandbox: the v1 REST API (``S/lambda_labs/rest/api/v1/...``).

``sb.lambda_labs`` is this object. Besides serving the API it offers helpers for
tests: ``instances`` (every instance ever launched, as ``Instance`` dicts),
``user_data(id)``, ``pod_env(id)`` (the env the instance's
cloud-init hands its container), ``set_capacity(type, regions)``,
``make_unhealthy(id)``, ``preempt(id)``, ``account_inactive`` and the knobs
``launch_interval_s``, ``boot_delay_s``, ``restart_delay_s``, ``terminate_delay_s``,
``ssh_keys``.

Options (``Sandbox(options={"lambda_labs": {...}})``): ``provision_delay_s`` (how
long a launch boots), ``restart_delay_s``, ``terminate_delay_s``,
``terminated_retention_s`` (how long a terminated instance still reads by id, 60),
``launch_interval_s`` (12: one launch per 12 s per key, else 429),
``capacity`` (``{type: [regions]}`` over the defaults in
``instance_types.json``), ``ssh_keys`` (the key names that exist;
``None``, the default, accepts any), ``file_systems`` (``{name: region}``) and
``quota`` (most live instances, else ``global/quota-exceeded``). The sandbox-wide
``sb.capacity`` overrides (per canonical GPU) empty a type's regions on top of these.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .. import sandbox_key
from ..accounts import Accounts
from ..cloud import Api, CloudContext
from .instances import Catalog, InstanceStore, container_env
from .rest import SPEC, LaunchLimiter, LaunchPolicy, build_rest_app, error_response

__all__ = ["LambdaCloud"]

LAUNCH_INTERVAL_S = 12.0
"""Lambda: "one request per 12 seconds" to ``/instance-operations/launch``."""


class LambdaCloud:
    """Lambda Cloud: the instance-type catalog with capacity, and instances."""

    name = "lambda_labs"

    def __init__(self, ctx: CloudContext) -> None:
        opts = ctx.options
        self.ctx = ctx
        self.key = sandbox_key(self.name)
        self.accounts = Accounts(self.name, self.key)
        """Its accounts (``accounts.py``): ``self.key`` is the default one's key."""
        self.catalog = Catalog(capacity=opts.get("capacity"), overrides=ctx.capacity)
        self.store = InstanceStore(ctx, self.catalog)
        self.limiter = LaunchLimiter(
            ctx.clock, float(opts.get("launch_interval_s", LAUNCH_INTERVAL_S))
        )
        ssh_keys = opts.get("ssh_keys")
        self.policy = LaunchPolicy(
            list(ssh_keys) if ssh_keys is not None else None,
            dict(opts.get("file_systems") or {}),
            opts.get("quota"),
        )
        self.account_inactive = False
        """Set to answer every request 403 ``global/account-inactive``."""

    def __repr__(self) -> str:
        return f"LambdaCloud(instances={len(self.store.all())})"

    def apis(self) -> Sequence[Api]:
        """The v1 REST API, validated against the vendored spec."""
        app = build_rest_app(self.store, self.policy, self.limiter, self.accounts,
                             lambda: self.account_inactive)
        return [Api("rest", app, error_response, spec=SPEC)]

    def close(self) -> None:
        """Nothing runs in the background."""

    # ---- knobs -----------------------------------------------------------------------
    @property
    def launch_interval_s(self) -> float:
        """Seconds between two accepted launches with one key."""
        return self.limiter.interval

    @launch_interval_s.setter
    def launch_interval_s(self, value: float) -> None:
        self.limiter.interval = float(value)

    @property
    def boot_delay_s(self) -> float:
        """Seconds a new instance stays ``booting`` (applies to later launches)."""
        return self.store.boot_delay_s

    @boot_delay_s.setter
    def boot_delay_s(self, value: float) -> None:
        self.store.boot_delay_s = float(value)

    @property
    def restart_delay_s(self) -> float:
        """Seconds a restarted instance stays ``booting``."""
        return self.store.restart_delay_s

    @restart_delay_s.setter
    def restart_delay_s(self, value: float) -> None:
        self.store.restart_delay_s = float(value)

    @property
    def terminate_delay_s(self) -> float:
        """Seconds an instance stays ``terminating``."""
        return self.store.terminate_delay_s

    @terminate_delay_s.setter
    def terminate_delay_s(self, value: float) -> None:
        self.store.terminate_delay_s = float(value)

    @property
    def ssh_keys(self) -> list[str] | None:
        """The SSH key names that exist (a launch naming another is 404); ``None``: any."""
        return self.policy.ssh_keys

    @ssh_keys.setter
    def ssh_keys(self, names: list[str] | None) -> None:
        self.policy.ssh_keys = None if names is None else list(names)

    # ---- helpers for tests -----------------------------------------------------------
    @property
    def instances(self) -> dict[str, dict[str, Any]]:
        """Every instance ever launched (gone ones too), id -> ``Instance`` dict."""
        return {r.id: self.store.wire(r) for r in self.store.all(include_gone=True)}

    def user_data(self, instance_id: str) -> str | None:
        """The cloud-init ``user_data`` an instance was launched with (never in the API)."""
        return self.store.get(instance_id, include_gone=True).user_data

    def pod_env(self, instance_id: str) -> dict[str, str]:
        """The env the instance's cloud-init hands its container (``docker run`` flags)."""
        return container_env(self.user_data(instance_id))

    def set_capacity(self, type_name: str, regions: Iterable[str]) -> None:
        """Set the regions with capacity for an instance type (``[]``: none)."""
        self.catalog.set_capacity(type_name, regions)

    def make_unhealthy(self, instance_id: str) -> None:
        """Put an instance in status ``unhealthy`` (a restart boots it again)."""
        self.store.set_phase(instance_id, "UNHEALTHY")

    def preempt(self, instance_id: str) -> None:
        """Reclaim an instance (status ``preempted``)."""
        self.store.set_phase(instance_id, "PREEMPTED")
