"""Public pandas DataFrame builders: ``gpus``, ``ls``, ``jobs`` and the live ``stream``.

Each builder takes its data as arguments (so it works on anything you fetched
yourself) or fetches it with the facade. pandas is imported on first call.

>>> from atlas_nb.notebook import frames
>>> df = frames.gpus(provider="mock", gpu="h100")      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import AtlasError
from ..models import Compute, GpuType, Job
from .catalog_cache import CACHE, CatalogCache, provider_names
from .joblog import JOBS, JobLog

__all__ = [
    "GPU_COLUMNS",
    "JOB_COLUMNS",
    "LS_COLUMNS",
    "gpus",
    "jobs",
    "ls",
    "stream",
]

GPU_COLUMNS = ("provider", "gpu", "gpu_count", "memory_gb", "price_per_hour",
               "spot_price_per_hour", "stock", "regions", "id")
LS_COLUMNS = ("id", "provider", "name", "status", "gpu", "$/h", "accrued $", "idle for",
              "tracked")
JOB_COLUMNS = ("id", "provider", "endpoint", "status", "submitted", "finished", "delay_ms",
               "execution_ms", "chunks", "output", "error")
STREAM_COLUMNS = ("seq", "t_s")


def _gpu_matcher(names: Sequence[str]) -> Callable[[str | None], bool]:
    """Canonical names match exactly; a family name (``h100``, ``a100``) matches its family."""
    from ..gpus import GPUS, canonical, normalize

    families = {s.family for s in GPUS.values()}
    exact: set[str] = set()
    fams: set[str] = set()
    for name in names:
        key = normalize(name)
        if key in families:
            fams.add(key)
        else:
            exact.add(canonical(name))  # ValidationError listing close matches

    def match(value: str | None) -> bool:
        if value is None:
            return False
        if value in exact:
            return True
        spec = GPUS.get(value)
        return spec is not None and spec.family in fams

    return match


def gpus(
    catalog: Iterable[GpuType] | None = None,
    *,
    provider: str | Sequence[str] | None = "all",
    gpu: str | Sequence[str] | None = None,
    max_price: float | None = None,
    spot: bool = False,
    refresh: bool = False,
    ttl: float = 300.0,
    limit: int | None = None,
    cache: CatalogCache | None = None,
) -> Any:
    """One cross-provider GPU price table, cheapest first.

    Columns: ``provider, gpu`` (canonical), ``gpu_count, memory_gb, price_per_hour,
    spot_price_per_hour, stock, regions, id``. Pass ``catalog`` (any ``GpuType``s) or let
    it fetch ``provider`` (``"all"``, a name or a list) through a cache with ``ttl``
    seconds (``refresh=True`` refetches). ``spot=True`` keeps offers with a spot price
    and sorts by it; ``max_price`` then caps the spot price. Providers whose catalog
    failed are listed in ``df.attrs["failures"]`` (provider -> message).
    """
    import pandas as pd

    failures: dict[str, str] = {}
    if catalog is None:
        fetched = (cache or CACHE).get(provider_names(provider), ttl=ttl, refresh=refresh)
        items: Iterable[GpuType] = fetched.items
        failures = {name: str(err) for name, err in fetched.failures.items()}
    else:
        items = catalog
        wanted = None if provider in (None, "all") else set(provider_names(provider))
        if wanted is not None:
            items = [g for g in items if g.provider in wanted]
    match = _gpu_matcher([gpu] if isinstance(gpu, str) else list(gpu)) if gpu else None
    cols: dict[str, list[Any]] = {c: [] for c in GPU_COLUMNS}
    price_key = "spot_price_per_hour" if spot else "price_per_hour"
    for g in items:
        price = g.spot_price_per_hour if spot else g.price_per_hour
        if spot and price is None:
            continue
        if max_price is not None and (price is None or price > max_price):
            continue
        if match is not None and not match(g.canonical):
            continue
        cols["provider"].append(g.provider)
        cols["gpu"].append(g.canonical)
        cols["gpu_count"].append(g.gpu_count)
        cols["memory_gb"].append(g.memory_gb)
        cols["price_per_hour"].append(g.price_per_hour)
        cols["spot_price_per_hour"].append(g.spot_price_per_hour)
        cols["stock"].append(g.stock)
        cols["regions"].append(", ".join(g.regions))
        cols["id"].append(g.id)
    df = pd.DataFrame({
        **cols,
        "gpu_count": pd.array(cols["gpu_count"], dtype="Int64"),
        "memory_gb": pd.array(cols["memory_gb"], dtype="Float64").astype("float64"),
        "price_per_hour": pd.array(cols["price_per_hour"], dtype="Float64").astype("float64"),
        "spot_price_per_hour": pd.array(cols["spot_price_per_hour"],
                                        dtype="Float64").astype("float64"),
    }, columns=list(GPU_COLUMNS))
    df = df.sort_values([price_key, "provider", "gpu", "gpu_count"], na_position="last",
                        kind="stable", ignore_index=True)
    if limit is not None:
        df = df.head(limit)
    df.attrs["failures"] = failures
    return df


def _tracked_key(t: Any) -> tuple[str, str]:
    return (t.provider, t.id)


def ls(
    computes: Iterable[Compute] = (),
    *,
    tracked: Iterable[Any] = (),
    status: str | None = None,
    tracked_only: bool = False,
) -> Any:
    """Computes as a table: ``id, provider, name, status, gpu, $/h, accrued $, idle for,
    tracked``.

    ``computes`` are what the providers listed; ``tracked`` are the orchestrator's
    snapshots (``TrackedCompute``: they bring accrued cost and idle time). Tracked
    computes come first; one missing from ``computes`` still appears, from its snapshot.
    """
    import pandas as pd

    snaps = {_tracked_key(t): t for t in tracked}
    rows: list[tuple[Any, ...]] = []
    seen: set[tuple[str, str]] = set()

    def add(c: Compute, t: Any | None) -> None:
        seen.add((c.provider, c.id))
        if status is not None and c.status != status:
            return
        if tracked_only and t is None:
            return
        rows.append((c.id, c.provider, c.name, c.status, c.gpu_type,
                     float(t.cost_per_hour if t is not None else c.cost_per_hour),
                     float(t.accrued_cost) if t is not None else math.nan,
                     float(t.idle_for_s) if t is not None else math.nan,
                     t is not None))

    for c in computes:
        t = snaps.get((c.provider, c.id))
        add(c, t)
    for key, t in snaps.items():
        if key not in seen:
            add(t.compute, t)
    df = pd.DataFrame.from_records(rows, columns=list(LS_COLUMNS))
    df["idle for"] = pd.to_timedelta(df["idle for"].astype("float64"), unit="s").dt.round("s")
    df["tracked"] = df["tracked"].astype(bool)
    df = df.sort_values(["tracked", "provider", "name"], ascending=[False, True, True],
                        kind="stable", ignore_index=True)
    return df


def jobs(
    log: JobLog | None = None,
    *,
    refresh: bool = True,
    get: Callable[[Job], Job] | None = None,
) -> Any:
    """This session's jobs: ``id, provider, endpoint, status, submitted, finished,
    delay_ms, execution_ms, chunks, output, error``.

    With ``refresh`` each unfinished job is polled once (``get``, default
    ``atlas_nb.get_job``); a job whose poll fails keeps its last known state.
    """
    import pandas as pd

    log = log or JOBS
    if refresh:
        if get is None:
            from ..facade import get_job

            get = get_job
        for entry in log.entries():
            if not entry.job.done:
                with contextlib.suppress(AtlasError):
                    log.record(get(entry.job))
    rows = [
        (e.job.id, e.job.provider, e.job.endpoint, e.job.status, e.submitted_at, e.finished_at,
         e.job.delay_time_ms, e.job.execution_time_ms, e.chunks, e.job.output, e.job.error)
        for e in log.entries()
    ]
    df = pd.DataFrame.from_records(rows, columns=list(JOB_COLUMNS))
    for col in ("submitted", "finished"):
        df[col] = pd.to_datetime(df[col], utc=True)
    for col in ("delay_ms", "execution_ms"):
        df[col] = df[col].astype("Int64")
    return df


def _row(seq: int, t: float, chunk: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"seq": seq, "t_s": round(t, 4)}
    if isinstance(chunk, Mapping) and all(isinstance(k, str) for k in chunk):
        row.update({k if k not in STREAM_COLUMNS else f"chunk.{k}": v for k, v in chunk.items()})
    else:
        row["chunk"] = chunk
    return row


def _frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    df = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(
        columns=[*STREAM_COLUMNS, "chunk"])
    return df


class _LiveView:
    """Shows a frame under one ``display_id`` and updates it in place (IPython only)."""

    def __init__(self) -> None:
        self._handle: Any = None
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - the notebook extra is missing
            return
        if get_ipython() is not None:
            from IPython.display import display

            self._handle = display(  # type: ignore[no-untyped-call]
                _Status("waiting for the first chunk…"), display_id=True)

    def show(self, obj: Any) -> None:
        if self._handle is not None:
            self._handle.update(obj)


class _Status:
    """A one-line note with text and HTML forms."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        import html

        return f"<code>{html.escape(self.text)}</code>"


def stream(
    job: Job | str,
    *,
    endpoint: str | None = None,
    provider: Any = None,
    show: bool = True,
    max_redraws_per_s: float = 10.0,
    on_frame: Callable[[Any], None] | None = None,
    collapse: bool = False,
    chunks: Iterable[Any] | None = None,
    log: JobLog | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Stream a job's output into a DataFrame that grows as chunks arrive; return it.

    One row per chunk: ``seq``, ``t_s`` (seconds since the stream began), then the
    chunk's keys when it is a dict, else a ``chunk`` column. While it runs the frame
    is shown live (in IPython, ``show=True``) and passed to ``on_frame``; redraws are
    throttled to ``max_redraws_per_s`` (the final one included), and the last redraw
    shows the complete frame; with ``collapse=True`` the live view ends as a one-line
    summary instead (the magic does this: its result is displayed anyway). Ctrl-C
    cancels the remote job, then re-raises. ``chunks`` replaces the remote stream
    (any iterable, e.g. for tests); ``clock``/``sleep`` are injectable.
    """
    from .. import facade

    log = log or JOBS
    if chunks is None:
        chunks = facade.stream_job(job, endpoint=endpoint, provider=provider)
    min_gap = 1.0 / max_redraws_per_s if max_redraws_per_s > 0 else 0.0
    view = _LiveView() if show else None
    rows: list[dict[str, Any]] = []
    t0 = clock()
    last = -math.inf

    def redraw() -> None:
        nonlocal last
        frame = _frame(rows)
        if view is not None:
            view.show(frame)
        if on_frame is not None:
            on_frame(frame)
        last = clock()

    try:
        for chunk in chunks:
            rows.append(_row(len(rows), clock() - t0, chunk))
            if clock() - last >= min_gap:
                redraw()
    except KeyboardInterrupt:
        _cancel(job, endpoint, provider, log)
        raise
    except AtlasError:
        _refresh_log(job, endpoint, provider, log, len(rows))
        raise
    wait = min_gap - (clock() - last)
    if wait > 0 and last > -math.inf:
        sleep(wait)  # keep the final redraw inside the rate limit too
    final = _frame(rows)
    if view is not None:
        view.show(_Status(f"stream complete: {len(rows)} chunks in {clock() - t0:.2f} s")
                  if collapse else final)
    if on_frame is not None:
        on_frame(final)
    _refresh_log(job, endpoint, provider, log, len(rows))
    return final


def _cancel(job: Job | str, endpoint: str | None, provider: Any, log: JobLog) -> None:
    from .. import facade

    with contextlib.suppress(AtlasError):  # the interrupt matters more than a failed cancel
        log.record(facade.cancel_job(job, endpoint=endpoint, provider=provider))


def _refresh_log(job: Job | str, endpoint: str | None, provider: Any, log: JobLog,
                 n: int) -> None:
    from .. import facade

    with contextlib.suppress(AtlasError):
        log.record(facade.get_job(job, endpoint=endpoint, provider=provider), chunks=n)
