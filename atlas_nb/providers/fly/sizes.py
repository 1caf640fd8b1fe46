"""Fly Machine sizes: a ``ComputeRequest``'s GPUs, vCPUs and memory as ``fly.MachineGuest``.

Fly sells ``shared`` vCPUs (1, 2, 4 or 8, with 256 MB-2 GB each) and ``performance``
vCPUs (1, 2, 4, 8 or 16, with 2-8 GB each), memory in 256 MB steps (Fly's Machine
sizing docs and ``fly platform vm-sizes``). GPU machines are ``performance``; the
``a100-40gb`` preset is one GPU with ``performance-8x`` and 32 GB
(superfly/docs@245f646b:gpus/getting-started-gpus); 1, 2, 4 or 8 GPUs per machine
(fly.io/docs/kubernetes/using-gpus).
"""

from __future__ import annotations

import math
from typing import Any

from ...errors import ValidationError
from ...models import ComputeRequest

PROVIDER = "fly"
SHARED_CPUS = (1, 2, 4, 8)
PERFORMANCE_CPUS = (1, 2, 4, 8, 16)
GPU_COUNTS = (1, 2, 4, 8)
MEMORY_STEP_MB = 256
_MB_PER_CPU = {"shared": (256, 2048), "performance": (2048, 8192)}
"""Memory Fly allows per vCPU of each kind, in MB (min, max)."""
GPU_DEFAULT_CPUS = 8
GPU_DEFAULT_MB_PER_GPU = 32768
"""Fly's GPU presets (``a100-40gb``...) are ``performance-8x`` with 32 GB per GPU."""


def _memory_mb(memory_gb: float) -> int:
    """``memory_gb`` in MB, rounded up to Fly's 256 MB step."""
    return math.ceil(memory_gb * 1024 / MEMORY_STEP_MB) * MEMORY_STEP_MB


def _fits(kind: str, cpus: int, memory_mb: int) -> bool:
    lo, hi = _MB_PER_CPU[kind]
    return lo * cpus <= memory_mb <= hi * cpus


def guest(request: ComputeRequest) -> dict[str, Any]:
    """``fly.MachineGuest`` for the request: GPU kind and count, or a CPU preset size.

    CPU machines default to ``shared-cpu-1x`` with 256 MB; ``cpus`` picks the count
    (shared up to 8, ``performance`` for 16 or when the memory needs it) and
    ``memory_gb`` the memory, rounded up to 256 MB. GPU machines default to Fly's
    preset: ``performance-8x`` with 32 GB per GPU.
    """
    memory = _memory_mb(request.memory_gb) if request.memory_gb is not None else None
    if request.gpu is not None:
        from .wire import GPU_IDS  # wire builds on this module

        kind = GPU_IDS.provider_id(request.gpu)
        return gpu_guest(kind, request.gpu_count, cpus=request.cpus, memory_mb=memory)
    return _cpu_guest(request.cpus, memory)


def gpu_guest(kind: str, count: int = 1, *, cpus: int | None = None,
              memory_mb: int | None = None) -> dict[str, Any]:
    """``fly.MachineGuest`` for ``count`` GPUs of Fly ``gpu_kind`` ``kind`` (preset sizes)."""
    if count not in GPU_COUNTS:
        raise ValidationError(f"gpu_count={count}: Fly machines take 1, 2, 4 or 8 GPUs")
    cpus = cpus or (GPU_DEFAULT_CPUS if count == 1 else 16)
    _check_cpus("performance", cpus)
    size = memory_mb or min(GPU_DEFAULT_MB_PER_GPU * count, 8192 * cpus)
    _check_memory("performance", cpus, size)
    return {"cpu_kind": "performance", "cpus": cpus, "memory_mb": size,
            "gpu_kind": kind, "gpus": count}


def _cpu_guest(cpus: int | None, memory: int | None) -> dict[str, Any]:
    """The smallest CPU size with ``cpus`` vCPUs (any, if None) and ``memory`` MB."""
    if cpus is None:
        need = memory or MEMORY_STEP_MB
        fit = next((c for c in SHARED_CPUS if need <= 2048 * c), None)
        if fit is not None:
            return {"cpu_kind": "shared", "cpus": fit, "memory_mb": max(need, 256 * fit)}
        big = next((c for c in PERFORMANCE_CPUS if need <= 8192 * c), PERFORMANCE_CPUS[-1])
        _check_memory("performance", big, need)
        return {"cpu_kind": "performance", "cpus": big, "memory_mb": need}
    for kind, allowed in (("shared", SHARED_CPUS), ("performance", PERFORMANCE_CPUS)):
        wanted = memory or _MB_PER_CPU[kind][0] * cpus
        if cpus in allowed and _fits(kind, cpus, wanted):
            return {"cpu_kind": kind, "cpus": cpus, "memory_mb": wanted}
    _check_cpus("performance", cpus)
    _check_memory("performance", cpus, memory or 0)
    raise AssertionError("unreachable: a performance size that fits was rejected")


def _check_cpus(kind: str, cpus: int) -> None:
    allowed = SHARED_CPUS if kind == "shared" else PERFORMANCE_CPUS
    if cpus not in allowed:
        raise ValidationError(
            f"cpus={cpus}: Fly {kind} machines come with {', '.join(map(str, allowed))} vCPUs; "
            "pass one of those"
        )


def _check_memory(kind: str, cpus: int, memory_mb: int) -> None:
    if not _fits(kind, cpus, memory_mb):
        lo, hi = _MB_PER_CPU[kind]
        raise ValidationError(
            f"memory_gb={memory_mb / 1024:g}: a Fly {kind} machine with {cpus} vCPUs takes "
            f"{lo * cpus / 1024:g}-{hi * cpus / 1024:g} GB; change memory_gb or cpus"
        )
