"""Canonical GPU names and each provider's ids for them.

A canonical name (``"h100_sxm"``) is what users write. Each provider spells GPUs
its own way, and some spell the *count* too: Lambda's instance types are
``gpu_{n}x_{model}``, so ``provider_id("h100_sxm", "lambda_labs", count=8)`` is
``"gpu_8x_h100_sxm5"``. RunPod has distinct ids for the SXM and PCIe form factors.
Family names (``"h100"``, ``"a100"``) resolve to the provider's preferred form factor.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from .errors import Unsupported, ValidationError

__all__ = [
    "GPUS", "GpuSpec", "canonical", "family", "from_provider_id", "provider_id", "provider_ids",
]


@dataclass(frozen=True)
class GpuSpec:
    """One canonical GPU and how each provider names it (empty: not offered)."""

    name: str
    display: str
    memory_gb: int
    family: str
    runpod: tuple[str, ...] = ()
    lambda_labs: tuple[str, ...] = ()  # model suffix after gpu_{n}x_
    vast: tuple[str, ...] = ()
    fly: tuple[str, ...] = ()
    aliases: tuple[str, ...] = field(default=())


_SPECS: tuple[GpuSpec, ...] = (
    GpuSpec("h200", "H200 141GB", 141, "h200", ("NVIDIA H200",), (), ("H200",)),
    GpuSpec(
        "h100", "H100 80GB", 80, "h100",
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL"),
        ("h100_sxm5", "h100_pcie"), ("H100 SXM", "H100 PCIE", "H100 NVL"),
    ),
    GpuSpec("h100_sxm", "H100 SXM 80GB", 80, "h100", ("NVIDIA H100 80GB HBM3",), ("h100_sxm5",),
            ("H100 SXM",), aliases=("h100sxm", "h100_sxm5")),
    GpuSpec("h100_pcie", "H100 PCIe 80GB", 80, "h100", ("NVIDIA H100 PCIe",), ("h100_pcie",),
            ("H100 PCIE",)),
    GpuSpec("h100_nvl", "H100 NVL 94GB", 94, "h100", ("NVIDIA H100 NVL",), (), ("H100 NVL",)),
    GpuSpec("a100_80g", "A100 80GB", 80, "a100",
            ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"), ("a100_80gb_sxm4",),
            ("A100 SXM4", "A100 PCIE"), ("a100-sxm4-80gb",), aliases=("a100", "a100_80gb")),
    GpuSpec("a100_40g", "A100 40GB", 40, "a100", (), ("a100_sxm4", "a100"), (),
            ("a100-pcie-40gb",), aliases=("a100_40gb",)),
    GpuSpec("l40s", "L40S 48GB", 48, "l40s", ("NVIDIA L40S",), (), ("L40S",), ("l40s",)),
    GpuSpec("l40", "L40 48GB", 48, "l40", ("NVIDIA L40",), (), ("L40",)),
    GpuSpec("l4", "L4 24GB", 24, "l4", ("NVIDIA L4",), (), ("L4",)),
    GpuSpec("a40", "A40 48GB", 48, "a40", ("NVIDIA A40",), (), ("A40",)),
    GpuSpec("a10", "A10 24GB", 24, "a10", (), ("a10",), ("A10",), ("a10",)),
    GpuSpec("a6000", "RTX A6000 48GB", 48, "a6000", ("NVIDIA RTX A6000",), ("a6000",),
            ("RTX A6000",), aliases=("rtx_a6000",)),
    GpuSpec("a5000", "RTX A5000 24GB", 24, "a5000", ("NVIDIA RTX A5000",), (), ("RTX A5000",),
            aliases=("rtx_a5000",)),
    GpuSpec("a4000", "RTX A4000 16GB", 16, "a4000", ("NVIDIA RTX A4000",), (), ("RTX A4000",),
            aliases=("rtx_a4000",)),
    GpuSpec("rtx_6000_ada", "RTX 6000 Ada 48GB", 48, "rtx_6000_ada",
            ("NVIDIA RTX 6000 Ada Generation",), (), ("RTX 6000Ada",), aliases=("rtx6000_ada",)),
    GpuSpec("rtx_6000", "Quadro RTX 6000 24GB", 24, "rtx_6000", (), ("rtx6000",), ()),
    GpuSpec("rtx_5090", "RTX 5090 32GB", 32, "rtx_5090", ("NVIDIA GeForce RTX 5090",), (),
            ("RTX 5090",), aliases=("rtx5090", "5090")),
    GpuSpec("rtx_4090", "RTX 4090 24GB", 24, "rtx_4090", ("NVIDIA GeForce RTX 4090",), (),
            ("RTX 4090",), aliases=("rtx4090", "4090")),
    GpuSpec("rtx_3090", "RTX 3090 24GB", 24, "rtx_3090", ("NVIDIA GeForce RTX 3090",), (),
            ("RTX 3090",), aliases=("rtx3090", "3090")),
    GpuSpec("mi300x", "MI300X 192GB", 192, "mi300x", ("AMD Instinct MI300X OAM",), (), ()),
    GpuSpec("b200", "B200 180GB", 180, "b200", ("NVIDIA B200",), ("b200_sxm6",), ("B200",)),
    GpuSpec("gh200", "GH200 96GB", 96, "gh200", (), ("gh200",), ()),
    GpuSpec("v100", "V100", 16, "v100", ("Tesla V100-SXM2-32GB", "Tesla V100-PCIE-16GB"),
            ("v100", "v100_n"), ("Tesla V100",)),
)

GPUS: dict[str, GpuSpec] = {s.name: s for s in _SPECS}
"""Every canonical GPU name, in table order."""

_ALIASES: dict[str, str] = {a: s.name for s in _SPECS for a in s.aliases}
_PROVIDERS = ("runpod", "lambda_labs", "vast", "fly")
_LAMBDA_RE = re.compile(r"^gpu_(\d+)x_(.+)$")


def _norm(name: str) -> str:
    return re.sub(r"[\s\-/]+", "_", name.strip().lower())


def canonical(name: str) -> str:
    """Return the canonical name for ``name`` (case, dashes and aliases forgiven).

    Raises ``ValidationError`` listing the closest known names.
    """
    key = _norm(name)
    if key in GPUS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    known = sorted(GPUS) + sorted(_ALIASES)
    close = difflib.get_close_matches(key, known, n=4, cutoff=0.5)
    close = list(dict.fromkeys(_ALIASES.get(c, c) for c in close))
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(GPUS)}"
    raise ValidationError(f"unknown GPU {name!r}; {hint}")


def family(name: str) -> str:
    """The family of a canonical name: ``family("h100_sxm") == "h100"``."""
    return GPUS[canonical(name)].family


def provider_ids(name: str, provider: str) -> tuple[str, ...]:
    """All of a provider's ids that satisfy ``name``, preferred first (count-free form)."""
    spec = GPUS[canonical(name)]
    if provider == "mock":
        return (spec.name,)
    if provider not in _PROVIDERS:
        return ()
    ids: tuple[str, ...] = getattr(spec, provider)
    return ids


def provider_id(name: str, provider: str, count: int = 1) -> str:
    """The id ``provider`` uses for ``count`` × ``name``.

    Raises ``Unsupported`` naming the GPUs the provider does offer.
    """
    ids = provider_ids(name, provider)
    if not ids:
        offered = sorted(n for n in GPUS if provider_ids(n, provider))
        raise Unsupported(
            f"{provider} does not offer {canonical(name)}; it offers: {', '.join(offered)}",
            provider=provider,
        )
    if provider == "lambda_labs":
        return f"gpu_{count}x_{ids[0]}"
    return ids[0]


# Reverse maps. A specific form factor wins over a family entry for the same id.
_REVERSE: dict[tuple[str, str], str] = {}
for _spec in sorted(_SPECS, key=lambda s: s.name == s.family and len(s.runpod) > 1):
    for _prov in _PROVIDERS:
        for _pid in getattr(_spec, _prov):
            _REVERSE.setdefault((_prov, _pid.lower()), _spec.name)


def from_provider_id(provider: str, pid: str) -> tuple[str | None, int]:
    """Reverse lookup: ``(canonical name or None, gpu count encoded in the id or 1)``."""
    count = 1
    key = pid
    if provider == "lambda_labs":
        m = _LAMBDA_RE.match(pid)
        if not m:
            return None, 0
        count, key = int(m.group(1)), m.group(2)
    elif provider == "mock":
        return (pid if pid in GPUS else None), 1
    return _REVERSE.get((provider, key.lower())), count
