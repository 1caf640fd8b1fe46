"""Normalized, frozen models shared by every provider.

Each model keeps ``raw``, the provider's own payload with secrets stripped, so
provider-specific fields stay reachable without widening the model.
Constructing a model with bad input raises ``atlas_nb.ValidationError`` whose
message names the field and the fix.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import _html
from .errors import ValidationError

__all__ = [
    "AuthHandle",
    "Compute",
    "ComputeRequest",
    "ComputeStatus",
    "GpuType",
    "Job",
    "JobRequest",
    "JobStatus",
    "PortMapping",
]

ComputeStatus = Literal["provisioning", "running", "stopped", "terminated", "failed", "unknown"]
JobStatus = Literal["in_queue", "in_progress", "completed", "failed", "cancelled", "timed_out"]
PortProtocol = Literal["http", "tcp", "udp"]

COMPUTE_STATUSES: tuple[str, ...] = ComputeStatus.__args__  # type: ignore[attr-defined]
JOB_STATUSES: tuple[str, ...] = JobStatus.__args__  # type: ignore[attr-defined]
FINAL_JOB_STATUSES = frozenset({"completed", "failed", "cancelled", "timed_out"})
_PORT_RE = re.compile(r"^\s*(\d+)\s*(?:/\s*([A-Za-z]+))?\s*$")
# Label keys and values every cloud with labels can store as they are: Lambda's tag keys
# (``RequestedTagEntry``: ``^[a-z][a-z0-9-:]+$``, at most 55 characters; values at most
# 128; specs/lambda/lambda-cloud-api-openapi-1.8.3.json) are the strictest; Fly's
# ``config.metadata`` takes any string map (specs/fly/machines-openapi3.json).
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9-]{1,54}$")
LABEL_VALUE_MAX = 128

# What to tell a user, per field, when pydantic's own message is too generic.
_FIXES: dict[str, str] = {
    "gpu_count": "pass gpu_count=1 or more",
    "idle_ttl_ms": "pass idle_ttl_ms as milliseconds >= 0, or None for no TTL",
    "image": "pass image='registry/name:tag'",
    "ports": "write ports as [(8000, 'http')], ['8000/http'] or PortMapping(...)",
    "auth": "use auth='none', 'bearer' or 'signed_url'",
    "mode": "use mode='async' or mode='sync'",
    "cloud_type": "use cloud_type='any', 'secure' or 'community'",
    "labels": "write labels as {'team': 'vision'}: keys of 2-55 lowercase letters, digits or "
              "'-' starting with a letter, string values of at most 128 characters",
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    _title: ClassVar[str] = ""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            raise _convert(type(self).__name__, exc) from None

    def _html_fields(self) -> dict[str, Any]:
        # Fields hidden from repr (raw, env, provider_opts) may hold secrets: hide them here too.
        return {k: getattr(self, k) for k, f in type(self).model_fields.items() if f.repr}

    def _repr_html_(self) -> str:
        return _html.kv_table(self._title or type(self).__name__, self._html_fields())


def _convert(model: str, exc: pydantic.ValidationError) -> ValidationError:
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not field:  # a model-level check names its field itself: "image: required ..."
        field, _, msg = msg.partition(": ")
    top = field.split(".")[0]
    fix = _FIXES.get(top)
    text = f"{model}.{field}: {msg}"
    if fix and "; " not in msg:
        text += f"; {fix}"
    return ValidationError(text)


class PortMapping(_Model):
    """One exposed port: ``internal`` in the container, ``external`` where it is reachable."""

    internal: int = Field(ge=1, le=65535)
    external: int | None = Field(default=None, ge=1, le=65535)
    protocol: PortProtocol = "http"
    url: str | None = None

    @classmethod
    def parse(cls, value: Any) -> PortMapping:
        """Accept ``(8000, "http")``, ``"8000/http"``, ``8000`` or a ``PortMapping``."""
        if isinstance(value, PortMapping):
            return value
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, bool):
            raise ValidationError(f"{value!r} is not a port; write (8000, 'http')")
        if isinstance(value, int):
            return cls(internal=value)
        if isinstance(value, str):
            m = _PORT_RE.match(value)
            if not m:
                raise ValidationError(
                    f"cannot read {value!r}; write '8000/http' or '22/tcp'"
                )
            return cls(internal=int(m.group(1)), protocol=_protocol(m.group(2) or "http"))
        if isinstance(value, (tuple, list)) and len(value) == 2:
            port, proto = value
            if isinstance(port, str) and port.isdigit():
                port = int(port)
            if not isinstance(port, int) or isinstance(port, bool):
                raise ValidationError(f"{port!r} is not a port number")
            return cls(internal=port, protocol=_protocol(str(proto)))
        raise ValidationError(f"cannot read {value!r}; write (8000, 'http') or '8000/http'")

    @property
    def spec(self) -> str:
        """The ``"8000/http"`` form most providers use on the wire."""
        return f"{self.internal}/{self.protocol}"


def _protocol(name: str) -> PortProtocol:
    p = name.strip().lower()
    if p == "https":
        p = "http"
    if p not in ("http", "tcp", "udp"):
        raise ValidationError(f"unknown protocol {name!r}; use 'http', 'tcp' or 'udp'")
    return p  # type: ignore[return-value]


class AuthHandle(_Model):
    """How a browser or client authenticates to a pod spawned with ``auth=``.

    ``token`` is the bearer token (or, for ``signed_url``, the signing secret). It is
    shown here once and never appears in ``repr``, the HTML repr, ``raw``, logs or
    ``model_dump()``/``model_dump_json()``; store ``hash``. A Compute loaded back from a
    dump therefore has ``token`` (and ``header``) ``None``: keep the token yourself.
    """

    scheme: Literal["bearer", "signed_url"]
    # exclude=True: a dump is what gets logged, cached, pickled to JSON or pasted into an
    # issue, so it must never carry the credential; the attribute stays readable.
    token: str | None = Field(default=None, repr=False, exclude=True)
    hash: str | None = None
    header: str | None = Field(default=None, repr=False, exclude=True)
    env_var: str = "ATLAS_PRESHARED_KEY"

    def headers(self) -> dict[str, str]:
        """Request headers that authenticate to the pod (bearer scheme; empty without a token)."""
        if self.scheme != "bearer" or not self.token:
            return {}
        return {"Authorization": f"Bearer {self.token}"}

    def _html_fields(self) -> dict[str, Any]:
        # Not even a prefix: a few characters of a short token narrow a guess, and notebook
        # outputs are shared far more widely than the kernel that holds the token.
        held = "hidden (read .auth.token)" if self.token else "not held (loaded from a dump)"
        return {"scheme": self.scheme, "token": held, "hash": self.hash, "env": self.env_var}


class ComputeRequest(_Model):
    """What to spawn. Only ``image`` (or ``template_id``) is required; ``gpu=None`` is CPU."""

    gpu: str | None = None
    gpu_count: int = Field(default=1, ge=1)
    cpus: int | None = Field(default=None, ge=1)
    memory_gb: float | None = Field(default=None, gt=0)
    image: str | None = None
    cloud_type: Literal["any", "secure", "community"] = "any"
    spot: bool = False
    region_hints: tuple[str, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    env: dict[str, str] = Field(default_factory=dict, repr=False)
    volume_gb: int | None = Field(default=None, ge=0)
    container_disk_gb: int | None = Field(default=None, ge=1)
    network_volume_id: str | None = None
    name: str | None = None
    template_id: str | None = None
    auth: Literal["none", "bearer", "signed_url"] = "none"
    idle_ttl_ms: int | None = Field(default=None, ge=0)
    max_price_per_hour: float | None = Field(default=None, gt=0)
    labels: dict[str, str] = Field(default_factory=dict)
    """Key/value labels stored on the compute where the cloud has them (Fly
    ``config.metadata``, Lambda ``tags``) and read back into ``Compute.labels``; RunPod
    and Vast keep only the name. The orchestrator stamps its ledger id here."""
    provider_opts: dict[str, Any] = Field(default_factory=dict, repr=False)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> Any:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError("must be a dict of key -> value")
        for key, val in v.items():
            if not isinstance(key, str) or not _LABEL_KEY_RE.match(key):
                raise ValueError(f"label key {key!r} is not portable")
            if not isinstance(val, str) or len(val) > LABEL_VALUE_MAX:
                raise ValueError(f"labels[{key!r}] must be a string of at most "
                                 f"{LABEL_VALUE_MAX} characters")
        return v

    @field_validator("gpu", mode="before")
    @classmethod
    def _canonical_gpu(cls, v: Any) -> Any:
        if v is None or v == "" or (isinstance(v, str) and v.lower() in ("cpu", "none")):
            return None
        from .gpus import canonical

        return canonical(str(v))

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, v: Any) -> Any:
        if v is None:
            return ()
        if isinstance(v, (str, int, PortMapping)) or (
            # one (8000, "http") pair, not a pair of specs like ("8000/http", "22/tcp")
            isinstance(v, tuple) and len(v) == 2
            and isinstance(v[1], str) and v[1].strip().isalpha()
        ):
            v = [v]
        return tuple(PortMapping.parse(p) for p in v)

    @field_validator("region_hints", mode="before")
    @classmethod
    def _regions(cls, v: Any) -> Any:
        if v is None:
            return ()
        return (v,) if isinstance(v, str) else tuple(v)

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: Any) -> Any:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError("must be a dict of NAME -> value")
        out: dict[str, str] = {}
        for key, val in v.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"env names must be non-empty strings, got {key!r}")
            if val is None or isinstance(val, (dict, list)):
                raise ValueError(f"env[{key!r}] must be a string, number or bool")
            out[key] = str(val).lower() if isinstance(val, bool) else str(val)
        return out

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v.strip() if v else v

    @model_validator(mode="after")
    def _needs_image(self) -> ComputeRequest:
        if not self.image and not self.template_id:
            raise ValueError("image: required (or template_id=); pass image='registry/name:tag'")
        return self


class Compute(_Model):
    """A pod, instance or machine, normalized across providers."""

    id: str
    provider: str
    status: ComputeStatus = "unknown"
    public_ip: str | None = None
    ports: tuple[PortMapping, ...] = ()
    gpu_type: str | None = None
    gpu_count: int = 0
    cost_per_hour: float = 0.0
    region: str | None = None
    image: str | None = None
    name: str | None = None
    auth: AuthHandle | None = None
    created_at: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    """The labels the cloud stores on it (Fly metadata, Lambda tags; empty elsewhere)."""
    cloud_type: str | None = None
    """The cloud tier it actually runs in (``"secure"`` or ``"community"``) where the
    provider reports one; what ``cloud_type="any"`` resolved to. ``None`` elsewhere."""
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @field_validator("cost_per_hour", mode="before")
    @classmethod
    def _cost(cls, v: Any) -> Any:
        if v is None or v == "":
            return 0.0
        return float(v)

    @property
    def url(self) -> str | None:
        """The first reachable HTTP URL, if any."""
        return next((p.url for p in self.ports if p.url and p.protocol == "http"), None)

    @property
    def ready(self) -> bool:
        """Running, with every port reachable."""
        return self.status == "running" and all(p.url for p in self.ports)

    def _html_fields(self) -> dict[str, Any]:
        fields = super()._html_fields()
        fields["ports"] = [p.url or p.spec for p in self.ports]
        fields["auth"] = self.auth.scheme if self.auth else None
        return fields


class JobRequest(_Model):
    """A serverless job: ``input`` goes to the endpoint's handler."""

    endpoint: str = Field(min_length=1)
    input: Any = None
    mode: Literal["async", "sync"] = "async"
    timeout_ms: int | None = Field(default=None, ge=1)
    webhook: str | None = None
    policy: dict[str, Any] = Field(default_factory=dict)
    provider_opts: dict[str, Any] = Field(default_factory=dict, repr=False)


class Job(_Model):
    """A serverless job; it carries its endpoint, so get/cancel/stream need nothing else."""

    id: str
    endpoint: str
    provider: str
    status: JobStatus = "in_queue"
    output: Any = None
    error: str | None = None
    execution_time_ms: int | None = None
    delay_time_ms: int | None = None
    created_at: datetime | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        """True once the job reached a final status."""
        return self.status in FINAL_JOB_STATUSES


class GpuType(_Model):
    """One catalog entry: a GPU (and count) a provider rents, with prices in USD/hour."""

    provider: str
    id: str
    canonical: str | None = None
    display_name: str | None = None
    memory_gb: float | None = None
    gpu_count: int = 1
    price_per_hour: float | None = None
    spot_price_per_hour: float | None = None
    stock: str | None = None
    cloud_type: str = "any"
    regions: tuple[str, ...] = ()
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)


class LogEntry(_Model):
    """One line of a Fly app's logs (``atlas_nb.fly.subscribe_logs`` / ``tail_logs``).

    ``id`` is the line's unique id (streams deduplicate on it); ``raw`` holds the
    wire ``attributes`` (``meta`` included) as Fly sent them.
    """

    timestamp: datetime
    message: str
    level: str = "info"
    region: str | None = None
    instance: str | None = None
    app: str = ""
    id: str = ""
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    def __str__(self) -> str:
        # The shape `fly logs` prints: time, app[instance] region [level] message.
        when = self.timestamp.isoformat().replace("+00:00", "Z")
        return (f"{when} {self.app}[{self.instance or '-'}] {self.region or '-'} "
                f"[{self.level}] {self.message}")


__all__.append("LogEntry")
