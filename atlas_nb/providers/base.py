"""The Provider protocol: the contract every cloud implements, written once.

A provider is any object with the methods of ``Provider`` (structural typing: no
base class is required, so a user's own class plugs in unchanged). The contract:

* **Statuses.** ``Compute.status`` is one of ``provisioning, running, stopped,
  terminated, failed, unknown``; ``Job.status`` one of ``in_queue, in_progress,
  completed, failed, cancelled, timed_out``. A provider status we do not know maps
  to ``unknown`` (jobs: ``in_queue``), never raises. Status maps are data.
* **Errors.** Methods raise only ``AtlasError`` subclasses: ``NotFound`` for an
  unknown id, ``Unauthorized``/``Forbidden`` for key problems, ``RateLimited``,
  ``Timeout``, ``TransportError``, ``ProviderError`` for other answers,
  ``ValidationError`` for bad input, and ``Unsupported`` for an operation the
  provider lacks (its capability is then absent from ``capabilities()``).
* **terminate is idempotent.** Terminating a compute that is already terminated
  or gone returns ``None`` silently.
* **get after terminate** may return ``status="terminated"`` or raise ``NotFound``.
* **Creates are never replayed blindly.** If a create's answer is lost, look the
  resource up by its name before trying again.
* **Secrets.** ``raw`` never carries the pod env, a token or an API key; keys go
  only in headers, never in URLs. Use ``strip_secrets`` on every payload.
* **Capabilities** are a subset of ``CAPABILITIES`` that the code really backs.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from .._http import HttpClient, HttpOption, RetryPolicy
from ..config import resolve_api_key, resolve_base_url
from ..errors import Unauthorized, Unsupported
from ..models import Compute, ComputeRequest, GpuType, Job, JobRequest

__all__ = ["CAPABILITIES", "BaseProvider", "Provider", "instantiate", "strip_secrets"]

CAPABILITIES: frozenset[str] = frozenset(
    {
        "spot",
        "serverless",
        "network_volumes",
        "http_proxy",
        "raw_tcp",
        "symmetric_ports",
        "webhooks",
        "global_networking",
        "stop_start",
        "logs",
    }
)
"""Every capability name a provider may declare."""

_SCALARS: frozenset[type] = frozenset({int, float, bool, type(None)})
_SCALARS_AND_STR: frozenset[type] = _SCALARS | {str}
_SECRET_KEYS = frozenset({"env", "extra_env", "environment", "api_key", "token", "password"})


@runtime_checkable
class Provider(Protocol):
    """What atlas_nb needs from a cloud. See the module docstring for the contract."""

    name: str

    def capabilities(self) -> frozenset[str]:
        """The capability names this provider's code backs (a subset of ``CAPABILITIES``)."""
        ...

    def spawn_compute(self, request: ComputeRequest) -> Compute:
        """Create a compute. ``request.env`` already carries any auth env var to inject.

        Raises ``Unsupported`` for a GPU the provider lacks, ``ValidationError`` for a
        request it cannot express. Never creates twice for one call.
        """
        ...

    def get_compute(self, compute_id: str) -> Compute:
        """One compute by id. Raises ``NotFound`` for an unknown id."""
        ...

    def list_compute(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        gpu: str | None = None,
        region: str | None = None,
    ) -> list[Compute]:
        """Computes in the account, filtered (``name`` is a prefix, ``gpu`` canonical)."""
        ...

    def stop(self, compute_id: str) -> Compute:
        """Stop (keep the disk). ``Unsupported`` unless ``stop_start`` is declared."""
        ...

    def start(self, compute_id: str) -> Compute:
        """Start a stopped compute. ``Unsupported`` unless ``stop_start`` is declared."""
        ...

    def terminate(self, compute_id: str) -> None:
        """Destroy a compute for good. Idempotent: an already-gone id returns silently."""
        ...

    def run_job(self, request: JobRequest) -> Job:
        """Submit a serverless job (``serverless``). ``mode="sync"`` waits up to ``timeout_ms``
        and raises ``Timeout`` at the deadline."""
        ...

    def get_job(self, job_id: str, *, endpoint: str) -> Job:
        """A job's current state. ``NotFound`` for an unknown id."""
        ...

    def cancel_job(self, job_id: str, *, endpoint: str) -> Job:
        """Cancel a queued or running job; returns its new state."""
        ...

    def stream_job(self, job_id: str, *, endpoint: str) -> Iterator[Any]:
        """Yield output chunks until the job completes; raise the job's error if it fails,
        is cancelled or times out."""
        ...

    def list_gpu_types(self) -> list[GpuType]:
        """The provider's GPU catalog with prices; ``canonical`` set where known."""
        ...


def strip_secrets(raw: Any, secrets: tuple[str, ...] = ()) -> Any:
    """The wire payload without env blocks, tokens or any of ``secrets``.

    Parts holding none of them are shared with ``raw``, not copied: payloads are fresh
    decodes, and this runs on every get and list (copying a pod costs as much as parsing it).
    """
    secrets = tuple(s for s in secrets if s)
    leaves = _SCALARS if secrets else _SCALARS_AND_STR  # types that cannot hold a secret
    return raw if _clean(raw, secrets, leaves) else _strip(raw, secrets, leaves)


class _KeyVerdicts(dict[Any, bool]):
    """Key -> may it stay? Memoized: the same few keys recur in every payload."""

    def __missing__(self, key: Any) -> bool:
        keep = str(key).lower() not in _SECRET_KEYS
        if len(self) < 4096:  # payload keys can be data (e.g. job output): stay bounded
            self[key] = keep
        return keep


_KEEP = _KeyVerdicts()


def _clean(raw: Any, secrets: tuple[str, ...], leaves: frozenset[type]) -> bool:
    """Whether ``raw`` can be kept as is: plain JSON with no secret key or value in it."""
    kind = type(raw)
    if kind in leaves:
        return True
    # Plain loops: all(<generator>) costs twice as much, and this is the hot path.
    if kind is dict:
        for k, v in raw.items():
            if not (_KEEP[k] and (type(v) in leaves or _clean(v, secrets, leaves))):
                return False
        return True
    if kind is list:
        for v in raw:  # noqa: SIM110
            if not (type(v) in leaves or _clean(v, secrets, leaves)):
                return False
        return True
    if kind is str:
        return not any(s in raw for s in secrets)
    return not isinstance(raw, (Mapping, list, str))  # other mappings are rebuilt as dicts


def _strip(raw: Any, secrets: tuple[str, ...], leaves: frozenset[type]) -> Any:
    if isinstance(raw, Mapping):
        return {k: v if type(v) in leaves or _clean(v, secrets, leaves)
                else _strip(v, secrets, leaves)
                for k, v in raw.items() if _KEEP[k]}
    if isinstance(raw, list):
        return [v if type(v) in leaves or _clean(v, secrets, leaves)
                else _strip(v, secrets, leaves) for v in raw]
    if isinstance(raw, str) and any(s in raw for s in secrets):
        return "REDACTED"
    return raw


_init_options_cache: dict[type[Any], tuple[frozenset[str], bool]] = {}


def _init_options(cls: type[Any]) -> tuple[frozenset[str], bool]:
    """The option names ``cls.__init__`` takes, and whether it takes ``**kwargs`` (cached:
    ``inspect.signature`` costs more than the rest of a facade call's local work)."""
    hit = _init_options_cache.get(cls)
    if hit is not None:
        return hit
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return frozenset(), False
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    hit = _init_options_cache[cls] = (frozenset(params), takes_any)
    return hit


def instantiate(
    cls: type[Any], *, api_key: str | None, base_url: Any, http: HttpOption
) -> Any:
    """Build a provider from its class, passing only the options its ``__init__`` accepts."""
    params, takes_any = _init_options(cls)
    wanted = {"api_key": api_key, "base_url": base_url, "http": http}
    kwargs = {k: v for k, v in wanted.items() if (k in params or takes_any) and v is not None}
    return cls(**kwargs)


class BaseProvider:
    """Optional helper base for built-in providers: key and URL resolution, one
    ``HttpClient`` per API, and ``Unsupported`` defaults for optional operations.

    Subclasses set ``name``, ``apis`` (API name -> default base URL) and
    ``CAPABILITIES``, and implement the methods their capabilities promise.
    """

    name: ClassVar[str] = "base"
    apis: ClassVar[dict[str, str]] = {}
    CAPABILITIES: ClassVar[frozenset[str]] = frozenset()
    key_hint: ClassVar[str] = ""
    shareable: ClassVar[bool] = False
    """True if one instance may serve every facade call made without per-call options:
    it keeps no per-call state, and ``client()`` re-resolves keys and URLs on each call."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | Mapping[str, str] | None = None,
        http: HttpOption = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._http = http
        self._retry = retry
        self._sleep = sleep
        self._clients: dict[str, HttpClient] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def capabilities(self) -> frozenset[str]:
        return self.CAPABILITIES

    # -- plumbing ---------------------------------------------------------------------
    def api_key(self) -> str:
        """The resolved key, or ``Unauthorized`` saying how to provide one."""
        key = resolve_api_key(self.name, self._api_key)
        if not key:
            raise Unauthorized(
                f"no API key for {self.name}",
                provider=self.name,
                hint=self.key_hint or "pass api_key=, or set it in the config file or env",
            )
        return key

    def auth_headers(self, key: str) -> dict[str, str]:
        """Headers that carry the key. Keys go in headers only, never in URLs."""
        return {"Authorization": f"Bearer {key}"}

    def client(self, api: str) -> HttpClient:
        """The ``HttpClient`` for one of this provider's APIs (re-resolved if config moved)."""
        key = self.api_key()
        base = resolve_base_url(self.name, api, self.apis[api], self._base_url)
        cached = self._clients.get(api)
        if cached is None or cached.base_url != base or cached._secrets[:1] != (key,):
            cached = HttpClient(
                provider=self.name,
                api=api,
                base_url=base,
                headers=self.auth_headers(key),
                secrets=(key,),
                http=self._http,
                retry=self._retry,
                sleep=self._sleep,
            )
            self._clients[api] = cached
        return cached

    def _unsupported(self, what: str, instead: str = "") -> Unsupported:
        tail = f"; {instead}" if instead else ""
        return Unsupported(f"{self.name} does not support {what}{tail}", provider=self.name)

    # -- optional operations ----------------------------------------------------------
    def stop(self, compute_id: str) -> Compute:
        raise self._unsupported("stop", "terminate it instead")

    def start(self, compute_id: str) -> Compute:
        raise self._unsupported("start", "spawn a new compute instead")

    def run_job(self, request: JobRequest) -> Job:
        raise self._unsupported("serverless jobs")

    def get_job(self, job_id: str, *, endpoint: str) -> Job:
        raise self._unsupported("serverless jobs")

    def cancel_job(self, job_id: str, *, endpoint: str) -> Job:
        raise self._unsupported("serverless jobs")

    def stream_job(self, job_id: str, *, endpoint: str) -> Iterator[Any]:
        raise self._unsupported("serverless jobs")
