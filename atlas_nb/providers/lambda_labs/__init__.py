"""Lambda Cloud: on-demand VMs that run your container through cloud-init.

Wire translation lives in ``wire``, type/region choice in ``placement``, the
cloud-init document in ``cloud_init`` and launch spacing in ``launch_gate``.

>>> import atlas_nb as atlas
>>> c = atlas.spawn_compute(provider="lambda_labs", gpu="a10", image="me/srv:1",
...                         ports=[(8000, "http")],
...                         provider_opts={"ssh_key_names": ["my-key"]})  # doctest: +SKIP
>>> atlas.wait_ready(c.id, provider="lambda_labs").url                  # doctest: +SKIP
'http://<instance ip>:8000'
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from ..._http import HttpOption, RetryPolicy
from ...config import config_path, provider_setting
from ...errors import (
    AtlasError,
    NotFound,
    ProviderError,
    RateLimited,
    Unsupported,
    ValidationError,
)
from ...gpus import GpuIds
from ...models import Compute, ComputeRequest, GpuType
from ..base import BaseProvider, CreateRetry, Lookup, filter_computes
from . import cloud_init, placement, wire
from .launch_gate import LAUNCH_GATE, LaunchGate, account_of

__all__ = ["LAUNCH_ATTEMPTS", "LambdaLabs"]

LAUNCH_ATTEMPTS = 4
"""Launches tried per spawn; each retry only after a lookup proved the last one made nothing."""
_RATE_WAIT_MAX_S = 60.0
_NAME_MAX = 64
_INSTANCE_TYPES = "/api/v1/instance-types"
_INSTANCES = "/api/v1/instances"
_LAUNCH = "/api/v1/instance-operations/launch"
_RESTART = "/api/v1/instance-operations/restart"
_TERMINATE = "/api/v1/instance-operations/terminate"
_OWN_OPTS = ("ssh_key_names", "launch_interval_s")


class LambdaLabs(BaseProvider):
    """The Lambda Cloud provider (``provider="lambda_labs"``). Key: ``LAMBDA_LABS_API_KEY``.

    * **Type and region** come from the live catalog (``GET /instance-types``): the
      canonical GPU and ``gpu_count`` pick ``gpu_{n}x_{model}`` among the types that
      exist (``gpu=None`` picks the cheapest ``cpu_*`` type); ``cpus``, ``memory_gb``,
      ``container_disk_gb`` and ``max_price_per_hour`` narrow the choice. The region is
      the first of ``region_hints`` with capacity, else any region with capacity.
      ``provider_opts={"region_name": ..., "instance_type_name": ...}`` pin either.
    * **SSH key**: Lambda requires exactly one. Set ``providers.lambda_labs.ssh_key_name``
      in the config file or pass ``provider_opts={"ssh_key_names": ["my-key"]}``.
    * **Image, env, ports**: Lambda rents VMs, so the launch carries cloud-init
      ``user_data`` that runs ``image`` with ``docker run``, the env (with
      ``ATLAS_PRESHARED_KEY`` for ``auth="bearer"``) in a root-only env file and each
      port published on the same host port. Once the instance is ``active`` its ports
      are ``http://{ip}:{port}`` / ``tcp://{ip}:{port}``; Lambda's firewall must allow
      them (pass ``provider_opts={"firewall_rulesets": [{"id": ...}]}``). Ports and
      image are kept in the instance's tags, since Lambda returns neither.
    * **Launch spacing**: Lambda allows one launch per 12 s per key. A process-wide gate
      spaces launches (only launches wait; get/list/terminate never do); on a 429 the
      launch waits, looks the instance up by name and launch marker, and retries only
      if none exists. ``launch_interval_s`` (class attribute or ``provider_opts``)
      tunes the spacing.
    * No stop/start (Lambda has launch, restart and terminate): ``stop``/``start`` raise
      ``Unsupported``. ``restart`` and ``rename`` are Lambda extras on this class.
    * ``provider_opts`` is merged last into the ``InstanceLaunchRequest`` body (nested
      dicts merge; ``tags`` are added to atlas_nb's own).
    """

    name: ClassVar[str] = "lambda_labs"
    aliases: ClassVar[tuple[str, ...]] = ("lambda", "lambdalabs")
    key_env: ClassVar[tuple[str, ...]] = ("LAMBDA_LABS_API_KEY", "LAMBDA_API_KEY")
    gpu_ids: ClassVar[GpuIds | None] = wire.GPU_IDS
    error_message = staticmethod(wire.error_message)
    sandbox_cloud: ClassVar[str | None] = "atlas_nb.sandbox.lambda_labs:LambdaCloud"
    apis: ClassVar[dict[str, str]] = {"rest": "https://cloud.lambda.ai"}
    CAPABILITIES: ClassVar[frozenset[str]] = frozenset({"raw_tcp", "symmetric_ports"})
    key_hint: ClassVar[str] = (
        "pass api_key=, set LAMBDA_LABS_API_KEY, or add providers.lambda_labs.api_key "
        "to the config file"
    )
    launch_interval_s: ClassVar[float] = 12.0
    """Seconds between two launches with one key (Lambda: 1 per 12 s)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | Mapping[str, str] | None = None,
        http: HttpOption = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        gate: LaunchGate | None = None,
    ) -> None:
        super().__init__(api_key=api_key, base_url=base_url, http=http, retry=retry, sleep=sleep)
        self._gate = gate or LAUNCH_GATE

    # -- computes ---------------------------------------------------------------------
    def spawn_compute(self, request: ComputeRequest) -> Compute:
        _check_request(request)
        opts = dict(request.provider_opts)
        interval = _interval(opts.pop("launch_interval_s", self.launch_interval_s))
        ssh_keys = _ssh_key_names(opts.pop("ssh_key_names", None))
        if "user_data" in opts:
            raise ValidationError(
                "provider_opts['user_data'] would replace the cloud-init that runs image= "
                "with its env and ports; drop it"
            )
        if "name" in opts:
            raise ValidationError("pass name= to spawn_compute, not provider_opts['name']")
        name = request.name or f"atlas-{secrets.token_hex(6)}"
        if len(name) > _NAME_MAX:
            raise ValidationError(f"name: Lambda instance names are at most {_NAME_MAX} "
                                  f"characters ({len(name)} given); pass a shorter name")
        marker = secrets.token_hex(12)
        user_data = cloud_init.user_data(request)
        offers = placement.offers_from_wire(self._call("GET", _INSTANCE_TYPES))
        offer, region = placement.place(
            offers, request, instance_type=_opt_str(opts, "instance_type_name"),
            region=_opt_str(opts, "region_name"),
        )
        body = wire.launch_body(
            request, instance_type=offer.name, region=region, ssh_key_names=ssh_keys,
            name=name, marker=marker, user_data=user_data, opts=opts,
        )
        instance_id = self._launch(body, interval, name=name, marker=marker,
                                   name_is_ours=request.name is None)
        try:
            return self.get_compute(instance_id)
        except NotFound:  # launched but not listed yet: say what we know
            return Compute(id=instance_id, provider=self.name, status="provisioning",
                           name=name, region=region, image=request.image,
                           cost_per_hour=offer.price or 0.0, gpu_type=request.gpu,
                           gpu_count=offer.gpus, ports=wire.ports_from_tag(
                               ",".join(p.spec for p in request.ports), None))

    def get_compute(self, compute_id: str) -> Compute:
        return wire.compute_from_wire(_instance(self._call("GET", _instance_path(compute_id))))

    def list_compute(
        self, *, status: str | None = None, name: str | None = None, gpu: str | None = None,
        region: str | None = None,
    ) -> list[Compute]:
        return filter_computes(lambda: map(wire.compute_from_wire, self._instances()),
                               status=status, name=name, gpu=gpu, region=region)

    def terminate(self, compute_id: str) -> None:
        _instance_path(compute_id)  # validates the id before anything is sent
        try:
            self._call("POST", _TERMINATE, json={"instance_ids": [compute_id]}, idempotent=True)
        except NotFound:
            return None  # already gone: terminate is idempotent
        except ValidationError:
            # Refused as invalid: fine if the instance is already on its way out.
            try:
                if self.get_compute(compute_id).status == "terminated":
                    return None
            except NotFound:
                return None
            raise
        return None

    def restart(self, compute_id: str) -> Compute:
        """Reboot an instance (a Lambda extra: not part of the Provider protocol)."""
        _instance_path(compute_id)
        # Not replayed: a retried restart would reboot the instance a second time.
        data = self._call("POST", _RESTART, json={"instance_ids": [compute_id]},
                          idempotent=False)
        restarted = wire.instances_from_wire(
            data.get("restarted_instances") if isinstance(data, Mapping) else None)
        for instance in restarted:
            if instance.get("id") == compute_id:
                return wire.compute_from_wire(instance)
        return self.get_compute(compute_id)

    def rename(self, compute_id: str, name: str) -> Compute:
        """Give an instance a new name (a Lambda extra: ``POST /instances/{id}``)."""
        if len(name) > _NAME_MAX:
            raise ValidationError(f"name: at most {_NAME_MAX} characters ({len(name)} given)")
        data = self._call("POST", _instance_path(compute_id), json={"name": name},
                          idempotent=True)
        return wire.compute_from_wire(_instance(data))

    # -- catalog ----------------------------------------------------------------------
    def list_gpu_types(self) -> list[GpuType]:
        return wire.gpu_types_from_wire(self._call("GET", _INSTANCE_TYPES))

    # -- internals --------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the answer's ``data``; errors as the kind their Lambda code names."""
        try:
            body = self.client("rest").request(method, path, **kwargs)
        except AtlasError as exc:
            raise wire.remap(exc) from None
        return wire.payload(body)

    def _instances(self) -> list[Mapping[str, Any]]:
        return wire.instances_from_wire(self._call("GET", _INSTANCES))

    def _launch(self, body: dict[str, Any], interval: float, *, name: str, marker: str,
                name_is_ours: bool) -> str:
        """``create_once`` through the gate, at most ``LAUNCH_ATTEMPTS`` tries: before a
        retry, and after a 429, the instance is looked up by name and marker tag."""
        client = self.client("rest")
        account = account_of(client.base_url, self.api_key())

        def gate() -> None:
            wait = self._gate.reserve(account, interval)
            if wait > 0:
                self._sleep(wait)

        def pause(err: RateLimited, limited: int) -> float:  # every launch of the key waits
            wait = min(err.retry_after or interval, _RATE_WAIT_MAX_S)
            self._gate.defer(account, wait)
            return wait

        def ours(instance: Mapping[str, Any]) -> str | None:
            mine = wire.is_our_launch(instance, name=name, marker=marker,
                                      name_is_ours=name_is_ours)
            return str(instance.get("id")) if mine else None

        return self.create_once(
            client, "POST", _LAUNCH, body, parse=_launched_id,
            lookup=Lookup(self._instances, ours, name), verb="launch",
            retry=CreateRetry(LAUNCH_ATTEMPTS, rate_wait=pause, look_after_rate_limit=True,
                              before_send=gate),
            id_name="an instance id", not_made=f"no instance named {name!r} was launched",
            error=wire.remap,
            refused=lambda err: self._launch_error(err, body),
        )

    def _launch_error(self, err: AtlasError, body: Mapping[str, Any]) -> AtlasError:
        """A refused launch, said plainly: capacity names the regions that have some."""
        code = wire.error_code(err.raw)
        itype, region = str(body.get("instance_type_name")), str(body.get("region_name"))
        if code == wire.INSUFFICIENT_CAPACITY:
            try:
                offers = placement.offers_from_wire(self._call("GET", _INSTANCE_TYPES))
                have = offers[itype].regions if itype in offers else ()
            except AtlasError:
                have = None
            listed = "unknown (the catalog could not be read)" if have is None else (
                wire.region_names(have))
            hint = (f"pass region_hints={list(have)[:3]!r}" if have else
                    "try again later, or another GPU or gpu_count")
            return ProviderError(
                f"Lambda has no capacity for {itype} in {region}; regions with capacity "
                f"for {itype} now: {listed}",
                provider=self.name, status=err.status, raw=err.raw, hint=hint,
            )
        if code == wire.NOT_FOUND or isinstance(err, NotFound):
            return ValidationError(
                f"Lambda refused the launch: {err.message}", provider=self.name,
                status=err.status, raw=err.raw,
                hint="check the SSH key name (providers.lambda_labs.ssh_key_name or "
                "provider_opts['ssh_key_names']) and any file system names",
            )
        return err


# -- helpers ------------------------------------------------------------------------------
def _instance_path(compute_id: str) -> str:
    if not compute_id or not isinstance(compute_id, str):
        raise ValidationError("compute id must be a non-empty string")
    return f"{_INSTANCES}/{quote(compute_id, safe='')}"


def _launched_id(answer: Any) -> str | None:
    ids = wire.launched_ids(answer.get("data") if isinstance(answer, Mapping) else None)
    return ids[0] if ids else None


def _instance(data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping) or not data.get("id"):
        raise ProviderError("Lambda answered without an instance", provider="lambda_labs",
                            raw=wire.clean_raw(data) if isinstance(data, Mapping) else None)
    return data


def _opt_str(opts: Mapping[str, Any], key: str) -> str | None:
    value = opts.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationError(f"provider_opts[{key!r}] must be a non-empty string")
    return value


def _interval(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValidationError(
            f"launch_interval_s must be seconds >= 0, not {value!r}; Lambda allows 12"
        )
    return float(value)


def _ssh_key_names(given: Any) -> list[str]:
    """The one SSH key name a launch needs: ``provider_opts`` > config file."""
    source = "provider_opts['ssh_key_names']"
    if given is None:
        given = provider_setting("lambda_labs", "ssh_key_name")
        source = "providers.lambda_labs.ssh_key_name"
    if given is None or given == [] or given == "":
        raise ValidationError(
            "Lambda needs the name of an SSH key in your Lambda account (cloud.lambda.ai/"
            f"ssh-keys): add `providers: {{lambda_labs: {{ssh_key_name: my-key}}}}` to "
            f"{config_path()}, or pass provider_opts={{'ssh_key_names': ['my-key']}}",
            provider="lambda_labs",
        )
    names = [given] if isinstance(given, str) else given
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValidationError(f"{source} must be a key name or a list of one key name")
    if len(names) != 1:
        raise ValidationError(
            f"{source}: Lambda takes exactly one SSH key per launch ({len(names)} given)"
        )
    return list(names)


def _check_request(request: ComputeRequest) -> None:
    """What Lambda cannot express, refused before anything is sent."""
    if request.spot:
        raise Unsupported("Lambda has no spot instances through its API; pass spot=False",
                          provider="lambda_labs")
    if request.cloud_type == "community":
        raise ValidationError("Lambda runs only its own data centers; use cloud_type='any' or "
                              "'secure'")
    if request.template_id:
        raise ValidationError("Lambda has no templates: pass image= (run with docker on the "
                              "instance) and drop template_id")
    if request.volume_gb or request.network_volume_id:
        raise ValidationError(
            "Lambda instances come with fixed disk; for persistent storage pass "
            "provider_opts={'file_system_names': ['<file system>']} and drop "
            "volume_gb / network_volume_id"
        )
