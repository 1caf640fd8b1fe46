"""Per-cloud GPU stock overrides: "RunPod has 0 H100s left", in the user's GPU names.

``sb.capacity.set("runpod", "h100", 0)`` (or ``POST S/_control/capacity``) caps how
many more GPUs of a canonical name (or of a whole family: ``"h100"`` covers every
H100 form factor) a cloud can place. Each cloud consults it where it already
decides stock, and fails the way that cloud fails when it has none: RunPod's "no
instances available" (GraphQL) / no-capacity 400 (REST), Lambda's
``insufficient-capacity``, Vast's offers disappearing from search (renting one
answers ``no_such_ask``), Fly's ``insufficient_capacity`` 412.

The number is a stock count, not a pool: every successful create takes its GPUs
from it, and nothing gives them back (terminating does not refill it; set it again).
A GPU with no override keeps the cloud's own stock rules. Clouds name GPUs their own
way (``"NVIDIA H100 80GB HBM3"``, ``gpu_8x_h100_sxm5``); the provider's GPU table
(``atlas_nb.gpus.from_provider_id``) turns those ids into canonical names, so the
override hits exactly the ids the provider would ask for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Capacity", "canonical_of"]


def canonical_of(cloud: str, gpu_id: str) -> tuple[str | None, int]:
    """``(canonical name or None, GPUs encoded in the id or 1)`` of a cloud's GPU id."""
    from ..gpus import from_provider_id  # the provider registry is imported on first use

    try:
        return from_provider_id(cloud, gpu_id)
    except Exception:  # a cloud with no provider (a plugin) or no GPU table: no canonical name
        return None, 0


def _canonical_name(gpu: str) -> str:
    from ..gpus import canonical

    return canonical(gpu)  # a typo is a ValidationError (a ValueError) naming close matches


def _family(name: str) -> str:
    from ..gpus import GPUS

    spec = GPUS.get(name)
    return spec.family if spec is not None else name


class Capacity:
    """The stock overrides of one sandbox (thread-safe). ``sb.capacity``."""

    def __init__(
        self, resolve: Callable[[str, str], tuple[str | None, int]] = canonical_of
    ) -> None:
        self._resolve = resolve
        self._lock = threading.Lock()
        self._left: dict[str, dict[str, int]] = {}  # cloud -> canonical name -> GPUs left

    def __repr__(self) -> str:
        return f"Capacity({self.snapshot()})"

    # -- settings ------------------------------------------------------------------------
    def set(self, cloud: str, gpu: str, available: int) -> None:
        """Let ``cloud`` place ``available`` more GPUs of ``gpu`` (0: it has none)."""
        value: object = available  # JSON and callers may hand anything over
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"available must be a whole number >= 0, not {available!r}")
        name = _canonical_name(gpu)
        with self._lock:
            self._left.setdefault(cloud, {})[name] = available

    def get(self, cloud: str, gpu: str) -> int | None:
        """The override for ``gpu`` on ``cloud`` (``None``: the cloud's own stock applies)."""
        name = _canonical_name(gpu)
        with self._lock:
            return self._left.get(cloud, {}).get(name)

    def clear(self, cloud: str | None = None, gpu: str | None = None) -> None:
        """Drop overrides: all, one cloud's, or one GPU's on one cloud."""
        name = _canonical_name(gpu) if gpu is not None else None
        with self._lock:
            if cloud is None:
                self._left.clear()
            elif name is None:
                self._left.pop(cloud, None)
            else:
                self._left.get(cloud, {}).pop(name, None)
                if not self._left.get(cloud, True):
                    self._left.pop(cloud, None)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Every override now: ``{cloud: {canonical GPU: GPUs left}}``."""
        with self._lock:
            return {cloud: dict(left) for cloud, left in self._left.items() if left}

    # -- what the clouds ask -------------------------------------------------------------
    def _wanted(self, cloud: str, gpu_id: str, count: int) -> tuple[str | None, int]:
        """``(canonical name, GPUs needed)`` of ``count`` x ``gpu_id``; no name: no override.

        Resolved outside the lock: the first lookup may import the provider's module.
        """
        if not self._left.get(cloud):  # no override on this cloud: skip the lookup
            return None, 0
        name, per_id = self._resolve(cloud, gpu_id)
        return name, max(count, 1) * max(per_id, 1)

    def _entry(self, cloud: str, name: str) -> str | None:
        """The override entry governing ``name`` (itself, else its family); lock held."""
        left = self._left.get(cloud, {})
        if name in left:
            return name
        family = _family(name)
        return family if family in left else None

    def allows(self, cloud: str, gpu_id: str, count: int = 1) -> bool:
        """Whether ``cloud`` may place ``count`` x its ``gpu_id`` (its own stock aside)."""
        name, need = self._wanted(cloud, gpu_id, count)
        if name is None:
            return True
        with self._lock:
            key = self._entry(cloud, name)
            return key is None or self._left[cloud][key] >= need

    def take(self, cloud: str, gpu_id: str, count: int = 1) -> bool:
        """Check and take ``count`` x ``gpu_id`` in one step; ``False`` if it is not there."""
        name, need = self._wanted(cloud, gpu_id, count)
        if name is None:
            return True
        with self._lock:
            key = self._entry(cloud, name)
            if key is None:
                return True
            if self._left[cloud][key] < need:
                return False
            self._left[cloud][key] -= need
            return True
