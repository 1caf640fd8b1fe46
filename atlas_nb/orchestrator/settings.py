"""The ``orchestrator:`` section of the config file, validated, with defaults.

Shape (every key optional)::

    orchestrator:
      name_prefix: atlas-          # names: {prefix}{ledger}-{session}-[{label}-]{suffix}
      idle_ttl_ms: 1800000         # 30 min without activity -> terminated; 0 disables
      max_lifetime_ms: null        # absolute cap per compute; null disables
      heartbeat_interval_s: 15     # idle checks and heartbeat events
      reap_interval_s: 60          # upstream reconcile
      grace_period_s: 900          # age before a prefixed resource no ledger knows is reaped
      reap_providers: null         # null: the providers this machine's ledger knows
      max_hourly_spend: null       # USD/h across tracked computes
      max_total_spend: null        # USD accrued by this session
      terminate_attempts: 4        # per terminate, with exponential backoff
      terminate_backoff_s: 0.5
      shutdown_deadline_s: 2.0     # kernel shutdown budget (SIGTERM follows at ~2.5 s)

Constructor arguments of ``Orchestrator`` override these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import ValidationError
from .naming import validate_prefix

__all__ = ["Settings", "check_cost", "from_config"]


@dataclass(frozen=True)
class Settings:
    """Resolved orchestrator settings (see the module docstring for meanings)."""

    name_prefix: str = "atlas-"
    idle_ttl_ms: int | None = 30 * 60_000
    max_lifetime_ms: int | None = None
    heartbeat_interval_s: float = 15.0
    reap_interval_s: float = 60.0
    grace_period_s: float = 900.0
    reap_providers: tuple[str, ...] | None = None
    max_hourly_spend: float | None = None
    max_total_spend: float | None = None
    terminate_attempts: int = 4
    terminate_backoff_s: float = 0.5
    shutdown_deadline_s: float = 2.0

    def limits(self, idle_ttl_ms: Any, request_ttl_ms: int | None, max_lifetime_ms: Any
               ) -> tuple[int | None, int | None]:
        """A spawn's ``(idle TTL, max lifetime)`` in ms, ``None`` meaning none: the argument,
        else the request's ``idle_ttl_ms``, else these settings; 0 disables either."""
        ttl = _ms(idle_ttl_ms, "idle_ttl_ms")
        ttl = ttl if ttl is not None else request_ttl_ms
        ttl = ttl if ttl is not None else self.idle_ttl_ms
        lifetime = _ms(max_lifetime_ms, "max_lifetime_ms")
        lifetime = lifetime if lifetime is not None else self.max_lifetime_ms
        return ttl or None, lifetime or None

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the non-``None`` overrides applied and validated."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return _validated(replace(self, **given))


def _ms(value: Any, what: str) -> int | None:
    """A millisecond limit argument: ``None`` (use the default), or an int >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{what}={value!r}: pass milliseconds >= 0 (0 disables it)")
    return value


def check_cost(value: Any) -> None:
    """``cost_per_hour=`` must be ``None`` or USD per hour >= 0."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or value < 0):
        raise ValidationError(f"cost_per_hour={value!r}: pass USD per hour >= 0")


def _number(key: str, value: Any, *, integer: bool, minimum: float, positive: bool) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer and isinstance(value, float):
        ok = value.is_integer()
    if ok and (value < minimum or (positive and value <= 0)):
        ok = False
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = "> 0" if positive else f">= {minimum:g}"
        raise ValidationError(f"orchestrator.{key}={value!r}: must be {kind} {bound}")
    return int(value) if integer else float(value)


def _validated(s: Settings) -> Settings:
    validate_prefix(s.name_prefix)
    out: dict[str, Any] = {}
    for key in ("idle_ttl_ms", "max_lifetime_ms"):
        value = getattr(s, key)
        if value is not None:
            out[key] = _number(key, value, integer=True, minimum=0, positive=False) or None
    for key in ("heartbeat_interval_s", "reap_interval_s", "terminate_backoff_s",
                "shutdown_deadline_s"):
        out[key] = _number(key, getattr(s, key), integer=False, minimum=0, positive=True)
    out["grace_period_s"] = _number("grace_period_s", s.grace_period_s, integer=False,
                                    minimum=0, positive=False)
    out["terminate_attempts"] = _number("terminate_attempts", s.terminate_attempts,
                                        integer=True, minimum=1, positive=True)
    for key in ("max_hourly_spend", "max_total_spend"):
        value = getattr(s, key)
        if value is not None:
            out[key] = _number(key, value, integer=False, minimum=0, positive=True)
    providers: Any = s.reap_providers
    if providers is not None:
        if isinstance(providers, str):
            providers = (providers,)
        if not all(isinstance(p, str) and p for p in providers):
            raise ValidationError(
                f"orchestrator.reap_providers={providers!r}: must be a list of provider names"
            )
        out["reap_providers"] = tuple(providers)
    return replace(s, **out)


def from_config(section: Any) -> Settings:
    """Settings from the parsed ``orchestrator:`` mapping (``None``: defaults)."""
    if section is None:
        return Settings()
    if not isinstance(section, Mapping):
        raise ValidationError("the config file's orchestrator: section must be a mapping")
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValidationError(
            f"unknown orchestrator setting(s) {', '.join(map(str, unknown))}; "
            f"use: {', '.join(sorted(known))}"
        )
    values = dict(section)
    if "idle_ttl_ms" in values and values["idle_ttl_ms"] is None:
        values["idle_ttl_ms"] = 0  # an explicit null in the file disables it, as 0 does
    return _validated(replace(Settings(), **values))
