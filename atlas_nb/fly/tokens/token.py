"""What the Fly token chain hands around: a ``Token``, the purposes it serves, and a layer.

A **layer** is one place a token can come from (a manual override, atlas_nb's config,
the environment, the encrypted store, flyctl's config file, the CLI). It is a small
object with one method, ``resolve(app, purpose) -> Token | None``; a ``TokenChain``
asks its layers in order and the first usable answer wins. A layer may also declare:

* ``cached = True``: its tokens are kept in the chain's memory (until ``fresh_until``);
  the memory is consulted just before the first such layer;
* ``costly = True``: asking it is expensive (it runs the CLI), so after a miss the
  chain backs off before asking it again;
* ``forget()``: drop what it cached itself (called by ``TokenChain.invalidate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = ["ALL_PURPOSES", "LOGS_ONLY", "Purpose", "Token", "TokenLayer"]

Purpose = Literal["logs", "compute", "deploy"]
"""What a token is wanted for: reading logs, driving the Machines API, running ``fly deploy``."""

ALL_PURPOSES: frozenset[Purpose] = frozenset({"logs", "compute", "deploy"})
LOGS_ONLY: frozenset[Purpose] = frozenset({"logs"})
"""What a ``fly tokens create readonly`` token can do: it cannot create machines or deploy."""


@dataclass(frozen=True)
class Token:
    """One token and where it came from (its value never shows in a repr).

    Args:
        value: the token itself.
        source: the layer that found it (``"manual"``, ``"session"``, ``"env:FLY_API_TOKEN"``...).
        purposes: what it can be used for (a minted read-only token: ``LOGS_ONLY``).
        fresh_until: epoch seconds until which the chain may reuse it from memory
            (``None``: not kept in memory).
        explicit: the user chose it (manual, config, env): it is never skipped after a
            401, the 401 surfaces instead.
    """

    value: str = field(repr=False)
    source: str
    purposes: frozenset[Purpose] = ALL_PURPOSES
    fresh_until: float | None = None
    explicit: bool = False


class TokenLayer(Protocol):
    """One place a Fly token can come from (see the module docstring)."""

    name: str

    def resolve(self, app: str | None, purpose: Purpose) -> Token | None:
        """A token for ``app`` that serves ``purpose``, or ``None`` (a miss, never a crash)."""
        ...
