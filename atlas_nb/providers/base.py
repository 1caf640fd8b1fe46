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
  resource up by its name before trying again, and once more right before the resend,
  after a short settling wait: a server may commit a create after the client gave up
  on it (``BaseProvider.create_once``, ``CreateRetry.settle_s``).
* **Accounts.** ``account_fingerprint()`` names the account the provider's key belongs
  to without revealing the key: the account or user id where the API exposes one (it
  survives a key rotation), else a salted hash of the key and the base URL
  (``key_fingerprint``). ``fingerprint_of(provider)`` reads it off any provider.
* **list_compute filters** the same way everywhere (``filter_computes``): ``name`` is a
  prefix, ``gpu`` canonical (a family name matches its members), an unknown ``status``
  is a ``ValidationError``.
* **Secrets.** ``raw`` never carries the pod env, a token or an API key; keys go
  only in headers, never in URLs. Use ``strip_secrets`` on every payload.
* **Capabilities** are a subset of ``CAPABILITIES`` that the code really backs.
* **Facts.** A provider declares what the rest of atlas_nb needs to know about it as
  class attributes, read with ``facts_of`` (all optional for a user's own class):
  ``name``, ``aliases``, ``key_env`` (the env vars holding its key, first wins),
  ``key_hint``, ``gpu_ids`` (its ``GpuIds`` table, in its ``wire.py``),
  ``error_message(body)`` (a human message out of its error bodies),
  ``CAPABILITIES``, ``sandbox_cloud`` (``"module:Class"`` of its emulated cloud) and
  ``offline`` (true for an in-memory stand-in that needs no account, like ``mock``).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

from .._fork_safe_lock import ForkSafeLock
from .._http import HttpClient, HttpOption, RetryPolicy, decode
from ..config import resolve_api_key, resolve_base_url
from ..errors import (
    AtlasError,
    ProviderError,
    RateLimited,
    Timeout,
    TransportError,
    Unauthorized,
    Unsupported,
    ValidationError,
)
from ..gpus import GPUS, GpuIds, canonical
from ..models import COMPUTE_STATUSES, Compute, ComputeRequest, GpuType, Job, JobRequest

__all__ = [
    "CAPABILITIES",
    "BaseProvider",
    "CreateRetry",
    "Lookup",
    "Provider",
    "ProviderFacts",
    "TargetGone",
    "account_id_fingerprint",
    "as_datetime",
    "as_list",
    "as_map",
    "as_str",
    "deep_merge",
    "facts_of",
    "filter_computes",
    "fingerprint_of",
    "instantiate",
    "job_ref",
    "key_fingerprint",
    "matches",
    "strip_secrets",
    "to_float",
]

T = TypeVar("T")
_Row = Mapping[str, Any]

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

    def stream_job(
        self, job_id: str, *, endpoint: str, timeout_s: float | None = None
    ) -> Iterator[Any]:
        """Yield output chunks until the job completes; raise the job's error if it fails,
        is cancelled or times out. Past ``timeout_s`` seconds (``None``: the provider's
        generous default; ``math.inf``: none) cancel the job and raise ``Timeout``."""
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


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it; nested dicts merge, everything else replaces.

    How every provider merges ``provider_opts`` into its create body.
    """
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def to_float(value: Any, default: float = 0.0) -> float:
    """A finite float from a number or numeric string; ``default`` for anything else."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def as_map(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else ``{}``: wire parsing never trusts a shape."""
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else ``[]``."""
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str | None:
    """``value`` if it is a non-empty string, else ``None``."""
    return value if isinstance(value, str) and value else None


def as_datetime(value: Any) -> datetime | None:
    """An ISO 8601 string as a ``datetime``; ``None`` for anything else."""
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


# -- list_compute filters -------------------------------------------------------------
def _same_region(compute: Compute, region: str) -> bool:
    """The default region filter: the provider's region name, exactly."""
    return compute.region == region


def matches(compute: Compute, *, status: str | None, name: str | None, gpu: str | None,
            region: str | None, in_region: Callable[[Compute, str], bool] = _same_region) -> bool:
    """The ``list_compute`` filters; ``gpu`` is canonical, a family name matches its members."""
    if status is not None and compute.status != status:
        return False
    if name is not None and not (compute.name or "").startswith(name):
        return False
    if region is not None and not in_region(compute, region):
        return False
    if gpu is not None:
        have = GPUS.get(compute.gpu_type or "")
        if have is None or (have.name != gpu and not (GPUS[gpu].family == gpu == have.family)):
            return False
    return True


def filter_computes(
    fetch: Callable[[], Iterable[Compute]], *, status: str | None, name: str | None,
    gpu: str | None, region: str | None,
    in_region: Callable[[Compute, str], bool] = _same_region,
) -> list[Compute]:
    """``list_compute``: the computes ``fetch()`` reads, filtered by ``matches``.

    An unknown ``status`` or ``gpu`` is refused (``ValidationError``) before ``fetch``
    sends anything; ``gpu`` may be any name ``gpus.canonical`` knows. ``in_region`` is the
    provider's region rule (default: the region name, exactly).
    """
    if status is not None and status not in COMPUTE_STATUSES:
        raise ValidationError(
            f"unknown status {status!r}; use one of {', '.join(COMPUTE_STATUSES)}"
        )
    gpu = canonical(gpu) if gpu is not None else None
    return [c for c in fetch()
            if matches(c, status=status, name=name, gpu=gpu, region=region, in_region=in_region)]


# -- accounts -------------------------------------------------------------------------
_FINGERPRINT_DOMAIN = b"atlas_nb account fingerprint v1\x00"
"""Salts every key hash, so a fingerprint matches no other use of sha256 over the key."""


def key_fingerprint(provider: str, key: str, base_url: str) -> str:
    """``{provider}:key:{16 hex}``: the account fingerprint of a key whose API exposes no
    account id.

    sha256 over a fixed domain string, the provider, the base URL and the key, cut to 64
    bits: enough to tell a user's few keys apart, and one-way, so a ledger or a log that
    holds it holds nothing that authenticates. The base URL is part of it because the
    same string may be a key at two endpoints (a sandbox, a proxy) that are not one account.
    """
    digest = hashlib.sha256(b"\x00".join(
        (_FINGERPRINT_DOMAIN, provider.encode(), base_url.rstrip("/").encode(), key.encode())
    )).hexdigest()
    return f"{provider}:key:{digest[:16]}"


def account_id_fingerprint(provider: str, account_id: str, base_url: str) -> str:
    """``{provider}:account:{id}@{host}``: the fingerprint of an account the API names.

    The id survives a key rotation; the host keeps ids of different endpoints (the real
    API, a sandbox) apart. Neither is a secret."""
    host = urlsplit(base_url).netloc or base_url
    return f"{provider}:account:{account_id}@{host}"


def fingerprint_of(provider: Any) -> str | None:
    """``provider.account_fingerprint()``, or ``None`` for a provider without that method
    (a duck-typed user provider: its account is unknown, not "the default one").

    Errors of the lookup itself (``AtlasError``) propagate."""
    method = getattr(provider, "account_fingerprint", None)
    if not callable(method):
        return None
    found = method()
    return found if isinstance(found, str) and found else None


# -- creates --------------------------------------------------------------------------
class TargetGone(ProviderError):
    """``create_once`` gave up because what the create needed vanished (``gone``: e.g. a
    marketplace offer someone else rented) and no earlier try made the resource."""


_RATE_WAIT_MAX_S = 30.0


def _doubling(spent: int) -> float:
    """Seconds before the next create once ``spent`` tries failed: 0.5, 1, 2, ..."""
    return 0.5 * 2.0 ** (spent - 1)


def _retry_after(error: RateLimited, limited: int) -> float:
    """Seconds to wait after a 429: its ``Retry-After`` (1 s without one), at most 30."""
    return min(error.retry_after or 1.0, _RATE_WAIT_MAX_S)


@dataclass(frozen=True)
class ProviderFacts:
    """What atlas_nb knows about a provider without calling it, read off its class."""

    name: str
    aliases: tuple[str, ...] = ()
    key_env: tuple[str, ...] = ()
    key_hint: str = ""
    gpu_ids: GpuIds | None = None
    error_message: Callable[[Any], str | None] | None = None
    capabilities: frozenset[str] = frozenset()
    sandbox_cloud: str | None = None
    offline: bool = False

    @property
    def keyed(self) -> bool:
        """True if the provider takes an API key (it names env vars for one)."""
        return bool(self.key_env)


def facts_of(cls: type[Any]) -> ProviderFacts:
    """The facts a provider class declares (see the module docstring); absent ones default."""
    caps = getattr(cls, "CAPABILITIES", None)
    if not isinstance(caps, frozenset):
        caps = frozenset()
    reader = getattr(cls, "error_message", None)
    return ProviderFacts(
        name=str(getattr(cls, "name", cls.__name__.lower())),
        aliases=tuple(getattr(cls, "aliases", ())),
        key_env=tuple(getattr(cls, "key_env", ())),
        key_hint=str(getattr(cls, "key_hint", "") or ""),
        gpu_ids=getattr(cls, "gpu_ids", None),
        error_message=reader if callable(reader) else None,
        capabilities=caps,
        sandbox_cloud=getattr(cls, "sandbox_cloud", None),
        offline=getattr(cls, "offline", False) is True,
    )


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


def job_ref(job: Job | str, endpoint: str | None) -> tuple[str, str]:
    """``(job id, endpoint)`` from a ``Job`` (which carries its endpoint) or an id plus
    ``endpoint=``; ``ValidationError`` when neither names the endpoint."""
    if isinstance(job, Job):
        return job.id, endpoint or job.endpoint
    if not endpoint:
        raise ValidationError("endpoint missing: pass endpoint='<endpoint id>' or the Job itself")
    return job, endpoint


def instantiate(
    cls: type[Any], *, api_key: str | None, base_url: Any, http: HttpOption
) -> Any:
    """Build a provider from its class, passing only the options its ``__init__`` accepts."""
    params, takes_any = _init_options(cls)
    wanted = {"api_key": api_key, "base_url": base_url, "http": http}
    kwargs = {k: v for k, v in wanted.items() if (k in params or takes_any) and v is not None}
    return cls(**kwargs)


@dataclass(frozen=True)
class Lookup(Generic[T]):
    """How ``create_once`` finds what a create whose answer was lost may have made."""

    rows: Callable[[], Iterable[_Row]]
    """Lists the provider's resources (e.g. every pod, or those with one label)."""
    ours: Callable[[_Row], T | None]
    """The result for a row this create made (name plus marker), else ``None``."""
    name: str
    """The resource's name, for the hint when the lookup itself fails."""


@dataclass(frozen=True)
class CreateRetry:
    """How ``create_once`` retries: tries, waits, and what runs before each send."""

    attempts: int
    """Tries spent before giving up (failures, and 429s unless they have their own)."""
    backoff: Callable[[int], float] = _doubling
    """Seconds to wait after the n-th failure (nothing was found by the lookup)."""
    rate_wait: Callable[[RateLimited, int], float] = _retry_after
    """Seconds to wait after the n-th 429."""
    rate_limited_attempts: int | None = None
    """A budget of 429s of their own, or ``None``: they count against ``attempts``."""
    look_after_rate_limit: bool = False
    """Look the resource up after a 429 too (a 429 that followed a lost create)."""
    before_send: Callable[[], None] | None = None
    """Runs before each send, e.g. a provider's launch gate."""
    settle_s: float | None = None
    """Seconds at least between a failed try that may have made the resource and the
    lookup right before the next send (or before giving up): a server may commit a create
    after the client timed out, and a resend before that commit shows makes a duplicate.
    ``None``: the provider's ``create_settle_s`` (1 s)."""


_ACCOUNT_IDS: dict[str, str] = {}
"""``key_fingerprint`` of (key, endpoint) -> the account-id fingerprint it resolved to."""
_ACCOUNT_IDS_LOCK = ForkSafeLock()


class BaseProvider:
    """Optional helper base for built-in providers: key and URL resolution, one
    ``HttpClient`` per API, and ``Unsupported`` defaults for optional operations.

    Subclasses set ``name``, ``apis`` (API name -> default base URL), ``CAPABILITIES``
    and the facts the module docstring lists, and implement the methods their
    capabilities promise.
    """

    name: ClassVar[str] = "base"
    aliases: ClassVar[tuple[str, ...]] = ()
    apis: ClassVar[dict[str, str]] = {}
    CAPABILITIES: ClassVar[frozenset[str]] = frozenset()
    key_env: ClassVar[tuple[str, ...]] = ()
    key_hint: ClassVar[str] = ""
    gpu_ids: ClassVar[GpuIds | None] = None
    sandbox_cloud: ClassVar[str | None] = None
    create_settle_s: float = 1.0
    """``CreateRetry.settle_s`` unless a create sets its own (an instance may lower it,
    e.g. against a sandbox whose late commits land within milliseconds)."""
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

    @staticmethod
    def error_message(body: Any) -> str | None:
        """A human message out of one of this provider's error bodies (``None``: the
        generic envelopes in ``errors`` are tried)."""
        return None

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
                message_of=self.error_message,
                http=self._http,
                retry=self._retry,
                sleep=self._sleep,
            )
            self._clients[api] = cached
        return cached

    # -- the account ------------------------------------------------------------------
    def _primary_base_url(self) -> str:
        """The resolved base URL of the provider's first API (``""`` without APIs)."""
        for api, default in self.apis.items():
            return resolve_base_url(self.name, api, default, self._base_url)
        return ""

    def account_fingerprint(self) -> str:
        """A non-secret name of the account this provider's key belongs to.

        The default is ``key_fingerprint(name, key, base URL)``; a provider whose API
        names the account overrides it with ``account_id_fingerprint`` (which survives a
        key rotation), looked up once per key and endpoint (``cached_account_id``).
        Never contains the key. ``Unauthorized`` without a key.
        """
        return key_fingerprint(self.name, self.api_key(), self._primary_base_url())

    def cached_account_id(self, api: str, fetch: Callable[[], str]) -> str:
        """``account_id_fingerprint`` of the id ``fetch()`` reads from ``api``, cached per
        key and endpoint for the process (every spawn asks, and the answer never changes
        for one key). The cache is keyed by the key's hash, so it holds no key."""
        base = resolve_base_url(self.name, api, self.apis[api], self._base_url)
        slot = key_fingerprint(self.name, self.api_key(), base)
        with _ACCOUNT_IDS_LOCK:
            hit = _ACCOUNT_IDS.get(slot)
        if hit is None:
            hit = account_id_fingerprint(self.name, fetch(), base)
            with _ACCOUNT_IDS_LOCK:
                _ACCOUNT_IDS[slot] = hit
        return hit

    def create_once(
        self,
        client: HttpClient,
        method: str,
        path: str,
        body: Any,
        *,
        parse: Callable[[Any], T | None],
        lookup: Lookup[T],
        retry: CreateRetry,
        id_name: str,
        not_made: str,
        verb: str = "create",
        error: Callable[[AtlasError], AtlasError] | None = None,
        refused: Callable[[AtlasError], AtlasError] | None = None,
        gone: Callable[[AtlasError], bool] | None = None,
    ) -> T:
        """Send a create and never make two resources of it: the contract "creates are
        never replayed blindly", written once.

        Each try sends ``body`` once (``idempotent=False``: the client never replays it):

        * a 2xx answer: ``parse(answer)`` is the result; ``None`` (the answer names no
          resource) is a failure, ``ProviderError("{verb} answered without {id_name}")``;
        * a lost answer (``TransportError``, ``Timeout``) or a 5xx is a failure: the
          create may have happened;
        * a 429 was refused, so nothing was made: wait ``retry.rate_wait(error, n)`` for
          the n-th one and try again (looked up first only with
          ``retry.look_after_rate_limit``);
        * any other 4xx is final: raised as ``refused(error)``.

        After a failure, and a wait of ``retry.backoff(n)`` (``n``: the tries spent so far)
        but at least ``retry.settle_s`` (default ``self.create_settle_s``: a server may
        commit a create late, after the client gave up), ``lookup.rows()`` lists the
        resources and the first row ``lookup.ours`` turns into a result wins; only when
        none does is the create sent again, right after that lookup. The last failure,
        too, is looked up after the settling wait before its error is raised. If the lookup
        fails its error is raised with a hint to check ``list_compute(name=...)`` before
        spawning again. Tries end after ``retry.attempts`` spent: failures, and 429s too
        unless ``retry.rate_limited_attempts`` gives them their own budget. The last error
        is raised with the hint ``"{not_made}; it is safe to try again"``.

        Hooks: ``retry.before_send`` runs before each send (e.g. a launch gate); ``error``
        maps every error answer first (e.g. by the provider's error code); ``gone(error)``
        true means the target of the create vanished: an earlier failed try may be what
        took it (and the list may lag), so it is looked up once more, else ``TargetGone``.
        """
        name = lookup.name

        def look() -> T | None:
            try:
                rows = lookup.rows()
            except AtlasError as exc:
                exc.hint = (f"a {verb}'s answer was lost and the lookup failed: check "
                            f"list_compute(name={name!r}) before spawning again")
                raise
            return next((made for row in rows if (made := lookup.ours(row)) is not None), None)

        failures = limited = 0

        def spent() -> int:  # the tries counted against ``attempts``
            return failures + limited if retry.rate_limited_attempts is None else failures

        def more() -> bool:
            if retry.rate_limited_attempts is not None and limited >= retry.rate_limited_attempts:
                return False
            return spent() < retry.attempts

        last: AtlasError | None = None
        while more():
            if retry.before_send is not None:
                retry.before_send()
            try:
                response = client.send(method, path, json=body, idempotent=False)
            except (TransportError, Timeout) as exc:
                last = exc
            else:
                answer = decode(response)
                if response.is_success:
                    made = parse(answer)
                    if made is not None:
                        return made
                    last = ProviderError(f"{verb} answered without {id_name}",
                                         provider=self.name, raw=answer)
                else:
                    last = client.error(response.status_code, answer, response.headers)
                    if error is not None:
                        last = error(last)
                    if gone is not None and gone(last):
                        found = look() if failures else None
                        if found is not None:
                            return found
                        raise TargetGone(last.message, provider=self.name,
                                         status=last.status, raw=last.raw)
                    if not isinstance(last, RateLimited) and response.status_code < 500:
                        raise refused(last) if refused is not None else last
            if isinstance(last, RateLimited):  # refused, so nothing was created
                limited += 1
                self._sleep(retry.rate_wait(last, limited))
                if not retry.look_after_rate_limit:
                    continue
            else:
                failures += 1
                # The create may have been made, or may still be: a server can commit it
                # after the client gave up (timed out, connection dropped). Wait at least
                # ``settle_s`` before the lookup that decides on a resend, so a late
                # commit is found rather than duplicated; and before giving up too, so it
                # is not left billing untracked.
                wait = retry.backoff(spent()) if more() else 0.0
                settle = self.create_settle_s if retry.settle_s is None else retry.settle_s
                self._sleep(max(wait, settle))
            found = look()
            if found is not None:
                return found
        assert last is not None
        last.hint = f"{not_made}; it is safe to try again"
        raise last

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

    def stream_job(
        self, job_id: str, *, endpoint: str, timeout_s: float | None = None
    ) -> Iterator[Any]:
        raise self._unsupported("serverless jobs")
