"""The module-level API (re-exported from ``atlas_nb``): one call per operation.

Every function takes ``provider=`` (a name, a class or an instance; default from
config), ``api_key=``, ``base_url=`` and ``http=``.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import telemetry
from ._http import HttpOption
from .errors import AtlasError, ProviderError, Timeout, Unsupported, ValidationError
from .models import AuthHandle, Compute, ComputeRequest, GpuType, Job, JobRequest
from .providers import Provider, resolve, strip_secrets
from .providers.base import job_ref

if TYPE_CHECKING:
    # Thread pools serve only provider="all" catalogs and spawn_many: imported there.
    from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "Catalog",
    "CatalogWarning",
    "all_providers",
    "cancel_job",
    "capabilities",
    "get_compute",
    "get_job",
    "list_compute",
    "list_gpu_types",
    "run_job",
    "spawn_compute",
    "spawn_many",
    "start",
    "stop",
    "stream_job",
    "terminate",
    "wait_ready",
]

ProviderArg = str | type | Provider | None


def _provider(provider: Any, api_key: str | None, base_url: Any, http: HttpOption) -> Provider:
    return resolve(provider, api_key=api_key, base_url=base_url, http=http)


def _emit(event: str, p: Provider, **data: Any) -> None:
    telemetry.emit(event, {"provider": p.name, **data})


def _optional(p: Provider, method: str) -> Callable[..., Any]:
    fn = getattr(p, method, None)
    if fn is None:
        raise Unsupported(f"{p.name} does not implement {method}", provider=p.name)
    return fn  # type: ignore[no-any-return]


def capabilities(
    provider: ProviderArg = None, *, api_key: str | None = None, base_url: Any = None,
    http: HttpOption = None,
) -> frozenset[str]:
    """The capability names the provider's code backs."""
    return frozenset(_provider(provider, api_key, base_url, http).capabilities())


def _with_auth(request: ComputeRequest) -> tuple[ComputeRequest, AuthHandle | None, str | None]:
    from . import auth as _auth  # lazily: hashing and URL parsing aren't needed at import

    if request.auth == "bearer":
        minted = _auth.mint_token()
        handle = AuthHandle(scheme="bearer", token=minted.token, hash=minted.hash,
                            header=minted.header, env_var=_auth.ENV_VAR)
        env = {**request.env, **minted.env}
        return request.model_copy(update={"env": env}), handle, minted.token
    if request.auth == "signed_url":
        secret = _auth.mint_secret()
        handle = AuthHandle(scheme="signed_url", token=secret, env_var=_auth.SIGNING_ENV_VAR)
        env = {**request.env, _auth.SIGNING_ENV_VAR: secret}
        return request.model_copy(update={"env": env}), handle, secret
    return request, None, None


def spawn_compute(
    request: ComputeRequest | None = None,
    *,
    provider: ProviderArg = None,
    api_key: str | None = None,
    base_url: Any = None,
    http: HttpOption = None,
    **fields: Any,
) -> Compute:
    """Create a pod/instance/machine. Fields are those of ``ComputeRequest``.

    >>> c = spawn_compute(provider="mock", gpu="h100", image="img:1", ports=[(8000, "http")])

    With ``auth="bearer"`` a token is minted, injected as ``ATLAS_PRESHARED_KEY``
    and returned once in ``compute.auth``.
    """
    req = request if request is not None else ComputeRequest(**fields)
    if request is not None and fields:
        req = ComputeRequest(**{**request.model_dump(), **fields})
    p = _provider(provider, api_key, base_url, http)
    req, handle, secret = _with_auth(req)
    compute = p.spawn_compute(req)
    raw = strip_secrets(compute.raw, (secret,) if secret else ())
    compute = compute.model_copy(update={"auth": handle, "raw": raw})
    _emit("compute.spawn", p, id=compute.id, name=compute.name, gpu=req.gpu,
          cost_per_hour=compute.cost_per_hour)
    return compute


def get_compute(
    compute_id: str, *, provider: ProviderArg = None, api_key: str | None = None,
    base_url: Any = None, http: HttpOption = None,
) -> Compute:
    """One compute by id; ``NotFound`` if there is none."""
    p = _provider(provider, api_key, base_url, http)
    compute = p.get_compute(compute_id)
    _emit("compute.get", p, id=compute_id, status=compute.status)
    return compute


def list_compute(
    *, provider: ProviderArg = None, status: str | None = None, name: str | None = None,
    gpu: str | None = None, region: str | None = None, api_key: str | None = None,
    base_url: Any = None, http: HttpOption = None,
) -> list[Compute]:
    """Computes in the account, filtered by status, name prefix, canonical GPU or region."""
    if gpu is not None:
        from .gpus import canonical

        gpu = canonical(gpu)
    p = _provider(provider, api_key, base_url, http)
    return list(p.list_compute(status=status, name=name, gpu=gpu, region=region))


def stop(
    compute_id: str, *, provider: ProviderArg = None, api_key: str | None = None,
    base_url: Any = None, http: HttpOption = None,
) -> Compute:
    """Stop a compute, keeping its disk (``stop_start`` capability)."""
    p = _provider(provider, api_key, base_url, http)
    compute: Compute = _optional(p, "stop")(compute_id)
    _emit("compute.stop", p, id=compute_id)
    return compute


def start(
    compute_id: str, *, provider: ProviderArg = None, api_key: str | None = None,
    base_url: Any = None, http: HttpOption = None,
) -> Compute:
    """Start a stopped compute (``stop_start`` capability)."""
    p = _provider(provider, api_key, base_url, http)
    compute: Compute = _optional(p, "start")(compute_id)
    _emit("compute.start", p, id=compute_id)
    return compute


def terminate(
    compute_id: str, *, provider: ProviderArg = None, api_key: str | None = None,
    base_url: Any = None, http: HttpOption = None,
) -> None:
    """Destroy a compute. Idempotent: terminating a gone compute is not an error."""
    p = _provider(provider, api_key, base_url, http)
    p.terminate(compute_id)
    _emit("compute.terminate", p, id=compute_id)


def wait_ready(
    compute: Compute | str, *, provider: ProviderArg = None, timeout_s: float = 600.0,
    poll_s: float = 1.0, on_progress: Callable[[Compute], None] | None = None,
    api_key: str | None = None, base_url: Any = None, http: HttpOption = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Compute:
    """Poll until the compute runs with every port reachable; return it.

    Pass the ``Compute`` from ``spawn_compute`` (its ``auth`` handle is carried over)
    or an id. Raises ``Timeout`` after ``timeout_s`` and ``ProviderError`` if it fails
    or is terminated meanwhile. ``on_progress`` sees each polled state.
    """
    compute_id = compute.id if isinstance(compute, Compute) else compute
    handle = compute.auth if isinstance(compute, Compute) else None
    if isinstance(compute, Compute) and provider is None:
        provider = compute.provider
    p = _provider(provider, api_key, base_url, http)
    ready = _wait(p, compute_id, timeout_s, poll_s, on_progress, sleep)
    return ready.model_copy(update={"auth": handle}) if handle else ready


def _wait(
    p: Provider, compute_id: str, timeout_s: float, poll_s: float,
    on_progress: Callable[[Compute], None] | None, sleep: Callable[[float], None],
) -> Compute:
    own = getattr(p, "wait_ready", None)
    if own is not None:
        return own(compute_id, timeout_s=timeout_s)  # type: ignore[no-any-return]
    deadline = time.monotonic() + timeout_s
    delay = min(poll_s, 0.25)
    while True:
        compute = p.get_compute(compute_id)
        if on_progress is not None:
            on_progress(compute)
        if compute.ready:
            _emit("compute.ready", p, id=compute_id)
            return compute
        if compute.status in ("failed", "terminated"):
            raise ProviderError(
                f"compute {compute_id} is {compute.status}; it will not become ready",
                provider=p.name, raw=compute.raw,
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout(
                f"compute {compute_id} not ready after {timeout_s:g}s (status {compute.status})",
                provider=p.name,
                hint="raise timeout_s, or check the image starts and exposes its ports",
            )
        sleep(min(delay, remaining))
        delay = min(delay * 2, poll_s * 5)


def run_job(
    request: JobRequest | None = None,
    *,
    provider: ProviderArg = None,
    api_key: str | None = None,
    base_url: Any = None,
    http: HttpOption = None,
    **fields: Any,
) -> Job:
    """Submit a serverless job: ``endpoint=``, ``input=``, ``mode=``, ``timeout_ms=``."""
    req = request if request is not None else JobRequest(**fields)
    p = _provider(provider, api_key, base_url, http)
    job: Job = _optional(p, "run_job")(req)
    _emit("job.run", p, id=job.id, endpoint=req.endpoint, mode=req.mode, status=job.status)
    return job


def get_job(
    job: Job | str, *, endpoint: str | None = None, provider: ProviderArg = None,
    api_key: str | None = None, base_url: Any = None, http: HttpOption = None,
) -> Job:
    """A job's current state; pass the ``Job`` or its id with ``endpoint=``."""
    job_id, ep = job_ref(job, endpoint)
    p = _provider(provider or _job_provider(job), api_key, base_url, http)
    return _optional(p, "get_job")(job_id, endpoint=ep)  # type: ignore[no-any-return]


def cancel_job(
    job: Job | str, *, endpoint: str | None = None, provider: ProviderArg = None,
    api_key: str | None = None, base_url: Any = None, http: HttpOption = None,
) -> Job:
    """Cancel a queued or running job."""
    job_id, ep = job_ref(job, endpoint)
    p = _provider(provider or _job_provider(job), api_key, base_url, http)
    result: Job = _optional(p, "cancel_job")(job_id, endpoint=ep)
    _emit("job.cancel", p, id=job_id, endpoint=ep, status=result.status)
    return result


def stream_job(
    job: Job | str, *, endpoint: str | None = None, provider: ProviderArg = None,
    timeout_s: float | None = None,
    api_key: str | None = None, base_url: Any = None, http: HttpOption = None,
) -> Iterator[Any]:
    """Yield output chunks as they arrive. Ctrl-C cancels the remote job, then re-raises.

    Past ``timeout_s`` seconds (default: the provider's, generous; ``math.inf``: none)
    the job is cancelled and ``Timeout`` raised."""
    job_id, ep = job_ref(job, endpoint)
    p = _provider(provider or _job_provider(job), api_key, base_url, http)
    # Passed only when given: a plugin written before timeout_s still streams.
    extra = {} if timeout_s is None else {"timeout_s": timeout_s}
    chunks: Iterator[Any] = _optional(p, "stream_job")(job_id, endpoint=ep, **extra)
    return _cancel_on_interrupt(p, chunks, job_id, ep)


def _cancel_on_interrupt(p: Provider, chunks: Iterator[Any], job_id: str, ep: str) -> Iterator[Any]:
    try:
        yield from chunks
    except KeyboardInterrupt:
        with contextlib.suppress(AtlasError):  # the interrupt matters more than a failed cancel
            p.cancel_job(job_id, endpoint=ep)
        raise


def _job_provider(job: Job | str) -> str | None:
    return job.provider if isinstance(job, Job) else None


def all_providers() -> tuple[str, ...]:
    """What ``provider="all"`` fans out to: every registered provider but offline
    stand-ins such as ``mock`` (plugins from the ``atlas_nb.providers`` group included)."""
    from .providers import names

    return names(offline=False)


class CatalogWarning(UserWarning):
    """Some providers' catalogs could not be fetched; the rest were returned."""


class Catalog(list[GpuType]):
    """GPU types from one or more providers; ``failures`` maps a provider to its error."""

    def __init__(self, items: Iterable[GpuType] = (),
                 failures: Mapping[str, AtlasError] | None = None) -> None:
        super().__init__(items)
        self.failures: dict[str, AtlasError] = dict(failures or {})


def list_gpu_types(
    *, provider: ProviderArg | str | Sequence[Any] = None, api_key: str | None = None,
    base_url: Any = None, http: HttpOption = None,
) -> Catalog:
    """The GPU catalog with on-demand (and spot, where offered) prices in USD/hour.

    ``provider="all"`` (or a list) fetches every catalog in parallel. If some fail, the
    rest are returned, the failures are in ``.failures``, and a ``CatalogWarning`` says so.
    """
    if provider == "all" or isinstance(provider, (list, tuple)):
        names = all_providers() if provider == "all" else tuple(provider)
        return _catalogs(names, api_key, base_url, http)
    p = _provider(provider, api_key, base_url, http)
    return Catalog(_optional(p, "list_gpu_types")())


def _catalogs(names: Sequence[Any], api_key: str | None, base_url: Any, http: HttpOption
              ) -> Catalog:
    def fetch(name: Any) -> list[GpuType]:
        p = _provider(name, api_key, base_url, http)
        return list(_optional(p, "list_gpu_types")())

    from concurrent.futures import ThreadPoolExecutor

    items: list[GpuType] = []
    failures: dict[str, AtlasError] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        futures = [(_label(n), pool.submit(fetch, n)) for n in names]
        for label, future in futures:
            try:
                items.extend(future.result())
            except AtlasError as exc:
                failures[label] = exc
    if failures:
        summary = "; ".join(f"{k}: {v}" for k, v in failures.items())
        warnings.warn(f"GPU catalog incomplete: {summary}", CatalogWarning, stacklevel=3)
        for label, err in failures.items():
            telemetry.emit("catalog.failure", {"provider": label, "error": str(err)})
    return Catalog(items, failures)


def _label(provider: Any) -> str:
    if isinstance(provider, str):
        return provider
    return str(getattr(provider, "name", None) or getattr(provider, "__name__", provider))


def spawn_many(
    requests: Iterable[ComputeRequest | Mapping[str, Any]] | None = None,
    *,
    count: int | None = None,
    provider: ProviderArg = None,
    max_workers: int = 16,
    api_key: str | None = None,
    base_url: Any = None,
    http: HttpOption = None,
    **fields: Any,
) -> list[Compute]:
    """Spawn many computes at once, up to ``max_workers`` creates in flight; all or nothing.

    Pass ``requests`` (``ComputeRequest``s or dicts of their fields), or ``count=`` copies
    of ``**fields`` (a ``name`` gets ``-1``, ``-2``... suffixes). Results keep the request
    order. Every request is validated before anything is sent. If a spawn fails, or
    Ctrl-C arrives, every compute this call started is terminated and the (first) error
    is raised: a batch never leaves part of itself billing.

    >>> cs = spawn_many(count=3, provider="mock", gpu="h100", image="img:1")
    >>> len({c.id for c in cs})
    3
    """
    import concurrent.futures as cf
    from concurrent.futures import ThreadPoolExecutor

    if (requests is None) == (count is None):
        raise ValidationError("pass either requests=[...] or count=N with the request fields")
    if max_workers < 1:
        raise ValidationError(f"max_workers={max_workers}: pass 1 or more")
    if requests is None:
        n = count or 0
        if n < 0:
            raise ValidationError(f"count={n}: pass 0 or more")
        name = fields.pop("name", None)
        requests = [{**fields, "name": f"{name}-{i}" if name and n > 1 else name}
                    for i in range(1, n + 1)]
    elif fields:
        raise ValidationError(f"put {sorted(fields)} inside each request, or use count=")
    reqs = [r if isinstance(r, ComputeRequest) else ComputeRequest(**r) for r in requests]
    if not reqs:
        return []
    p = _provider(provider, api_key, base_url, http)
    pool = ThreadPoolExecutor(max_workers=min(max_workers, len(reqs)),
                              thread_name_prefix="atlas-spawn")
    try:
        futures = [pool.submit(spawn_compute, r, provider=p) for r in reqs]
        try:
            cf.wait(futures)
        except BaseException:  # Ctrl-C: stop what has not started, undo what has
            for future in futures:
                future.cancel()
            cf.wait(futures)
            _undo_spawns(p, pool, futures)
            raise
        errors = [e for f in futures if (e := f.exception()) is not None]
        if errors:
            _undo_spawns(p, pool, futures)
            raise errors[0]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=False)


def _undo_spawns(p: Provider, pool: ThreadPoolExecutor, futures: list[Any]) -> None:
    """Terminate (best effort, in parallel) every compute a failed batch did create."""
    ids = [f.result().id for f in futures
           if f.done() and not f.cancelled() and f.exception() is None]

    def terminate_quietly(cid: str) -> None:
        with contextlib.suppress(AtlasError):
            p.terminate(cid)

    list(pool.map(terminate_quietly, ids))
