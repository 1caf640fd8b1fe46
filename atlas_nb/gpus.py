"""Canonical GPU names: what users write, shared by every provider.

A canonical name (``"h100_sxm"``) is what users write; this module holds what is
shared about it: its display name, memory and family. Family names (``"h100"``,
``"a100"``) resolve to a provider's preferred form factor.

How a provider spells each GPU lives in that provider's own ``wire.py``, as a
``GpuIds`` table (``{"h100_sxm": ("H100 SXM",), ...}``); a provider that encodes the
count in the id too (Lambda's ``gpu_{n}x_{model}``) subclasses it. ``provider_id``,
``provider_ids`` and ``from_provider_id`` look a provider's table up by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import Unsupported, ValidationError

__all__ = [
    "GPUS", "CanonicalIds", "GpuIds", "GpuSpec", "canonical", "family", "from_provider_id",
    "gpu_ids", "normalize", "provider_id", "provider_ids",
]


@dataclass(frozen=True)
class GpuSpec:
    """One canonical GPU: its display name, memory, family and extra spellings."""

    name: str
    display: str
    memory_gb: int
    family: str
    aliases: tuple[str, ...] = field(default=())


_SPECS: tuple[GpuSpec, ...] = (
    GpuSpec("h200", "H200 141GB", 141, "h200"),
    GpuSpec("h100", "H100 80GB", 80, "h100"),
    GpuSpec("h100_sxm", "H100 SXM 80GB", 80, "h100", aliases=("h100sxm", "h100_sxm5")),
    GpuSpec("h100_pcie", "H100 PCIe 80GB", 80, "h100"),
    GpuSpec("h100_nvl", "H100 NVL 94GB", 94, "h100"),
    GpuSpec("a100_80g", "A100 80GB", 80, "a100", aliases=("a100", "a100_80gb")),
    GpuSpec("a100_40g", "A100 40GB", 40, "a100", aliases=("a100_40gb",)),
    GpuSpec("l40s", "L40S 48GB", 48, "l40s"),
    GpuSpec("l40", "L40 48GB", 48, "l40"),
    GpuSpec("l4", "L4 24GB", 24, "l4"),
    GpuSpec("a40", "A40 48GB", 48, "a40"),
    GpuSpec("a10", "A10 24GB", 24, "a10"),
    GpuSpec("a6000", "RTX A6000 48GB", 48, "a6000", aliases=("rtx_a6000",)),
    GpuSpec("a5000", "RTX A5000 24GB", 24, "a5000", aliases=("rtx_a5000",)),
    GpuSpec("a4000", "RTX A4000 16GB", 16, "a4000", aliases=("rtx_a4000",)),
    GpuSpec("rtx_6000_ada", "RTX 6000 Ada 48GB", 48, "rtx_6000_ada", aliases=("rtx6000_ada",)),
    GpuSpec("rtx_6000", "Quadro RTX 6000 24GB", 24, "rtx_6000"),
    GpuSpec("rtx_5090", "RTX 5090 32GB", 32, "rtx_5090", aliases=("rtx5090", "5090")),
    GpuSpec("rtx_4090", "RTX 4090 24GB", 24, "rtx_4090", aliases=("rtx4090", "4090")),
    GpuSpec("rtx_3090", "RTX 3090 24GB", 24, "rtx_3090", aliases=("rtx3090", "3090")),
    GpuSpec("mi300x", "MI300X 192GB", 192, "mi300x"),
    GpuSpec("b200", "B200 180GB", 180, "b200"),
    GpuSpec("gh200", "GH200 96GB", 96, "gh200"),
    GpuSpec("v100", "V100", 16, "v100"),
)

GPUS: dict[str, GpuSpec] = {s.name: s for s in _SPECS}
"""Every canonical GPU name, in table order."""

_ALIASES: dict[str, str] = {a: s.name for s in _SPECS for a in s.aliases}


def normalize(name: str) -> str:
    """``name`` lower-cased, with spaces, dashes and slashes folded to ``_`` (no lookup)."""
    return re.sub(r"[\s\-/]+", "_", name.strip().lower())


def canonical(name: str) -> str:
    """Return the canonical name for ``name`` (case, dashes and aliases forgiven).

    Raises ``ValidationError`` listing the closest known names.
    """
    key = normalize(name)
    if key in GPUS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    known = sorted(GPUS) + sorted(_ALIASES)
    import difflib  # only for the error hint: not worth loading at import

    close = difflib.get_close_matches(key, known, n=4, cutoff=0.5)
    close = list(dict.fromkeys(_ALIASES.get(c, c) for c in close))
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(GPUS)}"
    raise ValidationError(f"unknown GPU {name!r}; {hint}")


def family(name: str) -> str:
    """The family of a canonical name: ``family("h100_sxm") == "h100"``."""
    return GPUS[canonical(name)].family


class GpuIds:
    """One provider's ids for the canonical GPUs: ``{"h100_sxm": ("H100 SXM",), ...}``.

    Each value lists the provider's ids that satisfy the name, preferred first; a family
    entry (``"h100"``) lists every form factor. A provider that writes the count into
    the id overrides ``encode`` and ``decode``.
    """

    def __init__(self, provider: str, ids: Mapping[str, tuple[str, ...]]) -> None:
        unknown = sorted(set(ids) - set(GPUS))
        if unknown:
            raise ValueError(f"{provider}: GPU table names unknown GPUs {unknown}")
        self.provider = provider
        self._ids = dict(ids)
        # A specific form factor wins over a family entry listing the same id.
        self._reverse: dict[str, str] = {}
        for name in sorted(self._ids, key=self._is_family_entry):
            for pid in self._ids[name]:
                self._reverse.setdefault(pid.lower(), name)

    def __repr__(self) -> str:
        return f"GpuIds({self.provider!r}, {len(self._ids)} GPUs)"

    def _is_family_entry(self, name: str) -> bool:
        return GPUS[name].family == name and len(self._ids[name]) > 1

    def ids(self, name: str) -> tuple[str, ...]:
        """All of the provider's ids that satisfy ``name``, preferred first (count-free)."""
        return self._ids.get(canonical(name), ())

    def offered(self) -> list[str]:
        """The canonical names this provider offers, sorted."""
        return sorted(self._ids)

    def provider_id(self, name: str, count: int = 1) -> str:
        """The id for ``count`` × ``name``; ``Unsupported`` naming what is offered."""
        ids = self.ids(name)
        if not ids:
            raise Unsupported(
                f"{self.provider} does not offer {canonical(name)}; it offers: "
                f"{', '.join(self.offered())}",
                provider=self.provider,
            )
        return self.encode(ids[0], count)

    def from_id(self, pid: str) -> tuple[str | None, int]:
        """Reverse lookup: ``(canonical name or None, gpu count encoded in the id or 1)``."""
        decoded = self.decode(pid)
        if decoded is None:
            return None, 0
        key, count = decoded
        return self._reverse.get(key.lower()), count

    def encode(self, pid: str, count: int) -> str:
        """The wire id for ``count`` GPUs of table id ``pid`` (the count is not in the id)."""
        return pid

    def decode(self, wire_id: str) -> tuple[str, int] | None:
        """``(table id, count)`` of a wire id, or ``None`` if it names no GPU machine."""
        return wire_id, 1


class CanonicalIds(GpuIds):
    """A table that spells every GPU by its canonical name (the mock provider's)."""

    def __init__(self, provider: str) -> None:
        super().__init__(provider, {name: (name,) for name in GPUS})

    def ids(self, name: str) -> tuple[str, ...]:
        return (canonical(name),)


def gpu_ids(provider: str) -> GpuIds:
    """The GPU table of the provider registered as ``provider`` (empty if it has none)."""
    from .providers import facts

    table = facts(provider).gpu_ids
    return table if table is not None else GpuIds(provider, {})


def provider_ids(name: str, provider: str) -> tuple[str, ...]:
    """All of ``provider``'s ids that satisfy ``name``, preferred first (count-free form)."""
    canonical(name)  # an unknown name is a ValidationError whatever the provider
    return gpu_ids(provider).ids(name)


def provider_id(name: str, provider: str, count: int = 1) -> str:
    """The id ``provider`` uses for ``count`` × ``name``.

    Raises ``Unsupported`` naming the GPUs the provider does offer.
    """
    canonical(name)
    return gpu_ids(provider).provider_id(name, count)


def from_provider_id(provider: str, pid: str) -> tuple[str | None, int]:
    """Reverse lookup: ``(canonical name or None, gpu count encoded in the id or 1)``."""
    return gpu_ids(provider).from_id(pid)
