"""``spawn``, ``ls``, ``touch``, ``stop``, ``start``, ``terminate``, ``dashboard``, ``reap``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ...errors import AtlasError, UnknownError, ValidationError
from .. import tracking
from .options import count, one_of, out_option, price, provider_option
from .registry import command

STATUSES = ("provisioning", "running", "stopped", "terminated", "failed", "unknown")
"""``models.ComputeStatus`` spelled out: importing the models here would load pydantic with
the parsers (a test keeps the two equal)."""

if TYPE_CHECKING:  # the models load pydantic, the facade httpx: only when a handler runs
    from ...models import Compute
    from ..call import Call

__all__ = ["dashboard", "ls", "reap", "spawn", "start", "stop", "terminate", "touch"]

# Spec keys that are not ComputeRequest fields.
_SPEC_EXTRAS = ("provider", "tracked", "idle_ttl_ms", "max_lifetime_ms", "cost_per_hour")


def _note(text: str) -> None:
    print(text, file=sys.stderr)  # noqa: T201 - a side note next to the result


def default_provider(call: Call) -> str | None:
    """The trait, then the config file / ``ATLAS_NB_PROVIDER``; ``None`` if neither."""
    from ... import config

    if call.magics.default_provider:
        return str(call.magics.default_provider)
    try:
        return config.resolve_provider_name(None)
    except ValidationError:
        return None


def _ttl_ms(minutes: float | None) -> int | None:
    return None if minutes is None else round(minutes * 60_000)


def _spec(call: Call) -> dict[str, Any]:
    from ...models import ComputeRequest

    body = call.body()
    if body is None:
        return {}
    if isinstance(body, ComputeRequest):
        return body.model_dump(exclude_unset=True)
    if not isinstance(body, dict):
        raise call.usage(f"the cell body must be a mapping of spawn fields (YAML or JSON), "
                         f"not {type(body).__name__}")
    return dict(body)


def _spawn_args(p: argparse.ArgumentParser) -> None:
    provider_option(p)
    p.add_argument("--gpu", "-g", metavar="G", help="canonical GPU name; 'cpu' for none")
    p.add_argument("--gpu-count", type=count, metavar="N")
    p.add_argument("--image", "-i", metavar="IMAGE")
    p.add_argument("--port", action="append", metavar="PORT",
                   help="8000/http or 22/tcp (repeatable)")
    p.add_argument("--auth", choices=("none", "bearer", "signed_url"))
    p.add_argument("--idle-ttl", type=float, metavar="MIN",
                   help="terminate after MIN idle minutes (default AtlasMagics.idle_ttl)")
    p.add_argument("--name", metavar="NAME")
    p.add_argument("--spot", action="store_true", default=None)
    p.add_argument("--max-price", type=price, metavar="USD", help="cap in $/h")
    p.add_argument("--region", action="append", metavar="R", help="region hint (repeatable)")
    p.add_argument("--untracked", action="store_true",
                   help="plain spawn: no idle TTL and not terminated with the kernel")
    p.add_argument("--no-wait", action="store_true", help="return before it is ready")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="seconds to wait until ready (default 600)")
    p.add_argument("--panel", action="store_true", help="open the SpawnPanel instead")
    out_option(p)


@command("spawn", help="spawn a tracked compute (flags or a YAML/JSON cell)",
         description="Spawn a compute, tracked by the orchestrator (idle TTL, terminated with "
                     "the kernel). Flags, or a YAML/JSON spec (or $var) in the cell body; "
                     "flags win over the body.",
         args=_spawn_args)
def spawn(call: Call) -> Any:
    """Spawn (tracked unless --untracked), wait until ready, return the ``Compute``."""
    from ... import facade

    args = call.args
    if args.panel:
        from ..widgets.spawn_panel import SpawnPanel

        return SpawnPanel(provider=call.provider(args.provider), idle_ttl=call.magics.idle_ttl)
    spec = _spec(call)
    in_spec = spec.pop("provider", None)
    provider = args.provider or in_spec or call.provider()
    tracked = not args.untracked and bool(spec.pop("tracked", True))
    flags = {
        "gpu": args.gpu, "gpu_count": args.gpu_count, "image": args.image,
        "ports": args.port, "auth": args.auth, "name": args.name, "spot": args.spot,
        "max_price_per_hour": args.max_price, "region_hints": args.region,
    }
    spec.update({k: v for k, v in flags.items() if v is not None})
    ttl = _ttl_ms(args.idle_ttl)
    if ttl is None:
        ttl = spec.pop("idle_ttl_ms", None)
    if ttl is None:
        ttl = _ttl_ms(call.magics.idle_ttl)
    spec.pop("idle_ttl_ms", None)
    if tracked:
        extras = {k: spec.pop(k) for k in ("max_lifetime_ms", "cost_per_hour") if k in spec}
        compute = tracking.spawn(provider=provider, idle_ttl_ms=ttl, **extras, **spec)
    else:
        for key in ("max_lifetime_ms", "cost_per_hour"):
            if key in spec:
                raise call.usage(f"{key} applies to tracked computes only (drop --untracked)")
        compute = facade.spawn_compute(provider=provider, idle_ttl_ms=ttl, **spec)
    call.store(compute)  # the handle is kept even if waiting fails or is interrupted
    what = "tracked" if tracked else "untracked"
    _note(f"spawned {compute.id} ({compute.name}) on {compute.provider}, {what}")
    if compute.auth is not None:
        _note(f"auth: {compute.auth.scheme}; the secret is in .auth.token of the result "
              "(not shown)")
    if args.no_wait:
        return compute
    try:
        ready = facade.wait_ready(compute, timeout_s=args.timeout)
    except KeyboardInterrupt:
        _note(f"stopped waiting; {compute.id} keeps starting"
              + (" and stays tracked (idle TTL applies)" if tracked else "")
              + f". End it with %atlas terminate {compute.id}")
        raise
    return ready


def _refs(values: Iterable[Any], provider: str | None) -> list[tuple[str, str | None]]:
    """``(id, provider)`` pairs from ids, ``Compute``s, tracked snapshots, dicts, lists
    or an ``ls`` DataFrame."""
    from ...models import Compute

    out: list[tuple[str, str | None]] = []
    for value in values:
        if isinstance(value, str):
            out.append((value, provider))
        elif isinstance(value, Compute):
            out.append((value.id, provider or value.provider))
        elif isinstance(value, dict) and "id" in value:
            out.append((str(value["id"]), provider or value.get("provider")))
        elif hasattr(value, "columns") and "id" in getattr(value, "columns", ()):
            provs = value["provider"] if "provider" in value.columns else [None] * len(value)
            out += [(str(i), provider or p) for i, p in zip(value["id"], provs, strict=True)]
        elif isinstance(value, (list, tuple, set)):
            out += _refs(value, provider)
        elif isinstance(getattr(value, "id", None), str):
            out.append((value.id, provider or getattr(value, "provider", None)))
        else:
            raise ValidationError(f"cannot read a compute id from a {type(value).__name__}; "
                                  "pass an id, a Compute or a DataFrame from %atlas ls")
    return out


def _resolve(call: Call) -> list[tuple[str, str | None, bool]]:
    """``(id, provider, tracked)`` per id; a tracked compute brings its own provider."""
    snaps = {t.id: t for t in tracking.tracked()}
    out = []
    for cid, prov in _refs(call.args.ids, call.args.provider):
        snap = snaps.get(cid)
        prov = prov or (snap.provider if snap is not None else None) or default_provider(call)
        out.append((cid, prov, snap is not None))
    return out


def _ids_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ids", nargs="+", metavar="ID", help="compute id (or a $compute)")
    provider_option(p)
    out_option(p)


@command("touch", help="reset the idle timer of tracked computes",
         description="Mark tracked computes active (resets the idle timer).", args=_ids_args)
def touch(call: Call) -> None:
    """Reset the idle clock of tracked computes."""
    for cid, _, is_tracked in _resolve(call):
        if not is_tracked:
            raise ValidationError(f"{cid} is not tracked by this kernel; only tracked "
                                  "computes have an idle clock (see %atlas ls --tracked)")
        tracking.touch(cid)
        _note(f"touched {cid}: idle clock reset")


def _each(call: Call, verb: str) -> Any:
    from ... import facade

    results: list[Compute] = []
    for cid, prov, _ in _resolve(call):
        fn = facade.stop if verb == "stop" else facade.start
        results.append(fn(cid, provider=prov))
        _note(f"{verb} {cid}: {results[-1].status}")
    return results[0] if len(results) == 1 else results


@command("stop", help="stop computes (keep the disk)",
         description="Stop computes, keeping their disks (stop_start providers).",
         args=_ids_args)
def stop(call: Call) -> Any:
    """Stop computes (disks kept); tracked ones stay tracked."""
    return _each(call, "stop")


@command("start", help="start stopped computes", description="Start stopped computes.",
         args=_ids_args)
def start(call: Call) -> Any:
    """Start stopped computes."""
    return _each(call, "start")


@command("terminate", help="terminate computes",
         description="Terminate computes for good (idempotent).", args=_ids_args)
def terminate(call: Call) -> None:
    """Terminate computes; tracked ones through the orchestrator (which stops tracking)."""
    from ... import facade

    for cid, prov, is_tracked in _resolve(call):
        if is_tracked:
            tracking.stop_tracked(cid)
        else:
            facade.terminate(cid, provider=prov)
        _note(f"terminated {cid}")


def _list_all(names: list[str], status: str | None) -> tuple[list[Compute], dict[str, str]]:
    from ... import facade

    def one(name: str) -> list[Compute]:
        return facade.list_compute(provider=name, status=status)

    computes: list[Compute] = []
    failures: dict[str, str] = {}
    if not names:
        return computes, failures
    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="atlas-ls") as pool:
        futures = {name: pool.submit(one, name) for name in names}
    for name, future in futures.items():
        try:
            computes.extend(future.result())
        except AtlasError as exc:
            failures[name] = str(exc)
        except Exception as exc:  # a provider that cannot load is reported, not fatal
            failures[name] = str(UnknownError(f"{type(exc).__name__}: {exc}", provider=name))
    return computes, failures


def _ls_args(p: argparse.ArgumentParser) -> None:
    provider_option(p, many=True)
    p.add_argument("--status", metavar="S", type=one_of(STATUSES),
                   help="running, stopped, provisioning, ...")
    p.add_argument("--tracked", action="store_true", help="only computes this kernel tracks")
    out_option(p)


@command("ls", help="computes with status, $/h, accrued $, idle time",
         description="Computes in your accounts: tracked ones first, with their $/h, accrued "
                     "$ and idle time.",
         args=_ls_args)
def ls(call: Call) -> Any:
    """Computes across providers, tracked first, with $/h, accrued $ and idle time."""
    from ... import config
    from ...facade import all_providers
    from .. import frames
    from ..catalog_cache import provider_names

    args = call.args
    snaps = tracking.tracked()
    if args.provider:
        names = provider_names(args.provider)
        snaps = [t for t in snaps if t.provider in names]  # --provider filters tracked rows too
    else:
        default = default_provider(call)
        names = [default] if default else [p for p in all_providers() if config.key_source(p)]
        names = list(dict.fromkeys([*names, *(t.provider for t in snaps)]))
    if not names:
        raise call.usage("no provider to list: pass --provider P, set "
                         "%config AtlasMagics.default_provider, or %atlas login P")
    computes, failures = _list_all([] if args.tracked else names, args.status)
    for name, message in failures.items():
        _note(f"note: {name} not listed: {message}")
    return frames.ls(computes, tracked=snaps, status=args.status, tracked_only=args.tracked)


def _dashboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-destructive-actions", action="store_true",
                   help="show Stop and Terminate buttons (each asks to confirm)")
    p.add_argument("--refresh", type=float, metavar="S",
                   help="seconds between refreshes (default AtlasMagics.refresh_interval)")
    out_option(p)


@command("dashboard", help="live table of tracked computes",
         description="Live table of tracked computes: status, $/h, accrued $, idle time; "
                     "Touch (and Stop/Terminate when allowed).",
         args=_dashboard_args)
def dashboard(call: Call) -> Any:
    """The live Dashboard of tracked computes."""
    from ..widgets.dashboard import Dashboard

    interval = call.args.refresh or call.magics.refresh_interval
    return Dashboard(allow_destructive_actions=call.args.allow_destructive_actions,
                     refresh_interval=interval)


def _reap_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="only report what would be done")
    provider_option(p, many=True)
    out_option(p)


@command("reap", help="terminate orphaned atlas computes (--dry-run)",
         description="Terminate atlas-named computes that no live session tracks (orphans "
                     "of dead kernels). Never touches other resources.",
         args=_reap_args)
def reap(call: Call) -> Any:
    """Terminate orphaned atlas computes (or, with --dry-run, say what would be)."""
    from ..call import Lines, Result
    from ..catalog_cache import provider_names

    names = provider_names(call.args.provider) if call.args.provider else None
    report = tracking.reap(call.args.dry_run, names)
    return Result(report, Lines(report.lines()))
