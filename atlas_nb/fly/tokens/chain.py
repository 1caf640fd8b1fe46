"""``TokenChain``: asks its layers in order; the first usable token for the purpose wins.

Around the layers the chain keeps three things, all in memory:

* **memory**: the last token a ``cached`` layer found, reused until its
  ``fresh_until``; it is consulted just before the first ``cached`` layer, so the
  explicit layers (manual, config, env) always win over it;
* **rejected**: fingerprints of tokens a server answered 401 to
  (``invalidate(rejected=token)``); non-explicit copies of them are skipped from then
  on, so the chain moves on to mint a fresh one;
* **the failure backoff**: when a ``costly`` layer (the CLI) was asked and everything
  missed, the failure is cached with a growing backoff (5 s, 10 s, ... 5 min) during
  which costly layers are not asked again: a log poller never hammers the CLI.

Telemetry: ``fly.token.resolve`` ``{app, purpose, source, ok, duration_ms}`` and
``fly.token.invalidate`` ``{app, rejected}`` (a bool): never a token.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable

from ... import telemetry
from ...errors import Unauthorized, ValidationError
from .layers import ManualLayer, default_layers
from .token import Purpose, Token, TokenLayer

__all__ = ["HOW_TO", "TokenChain"]

HOW_TO = ("set FLY_API_TOKEN, run `fly auth login` or `%atlas login fly`, or call "
          "atlas_nb.fly.tokens.set_manual(app, token)")


class _Miss(Exception):
    """Every layer missed (``cached``: answered from the failure backoff, CLI not run)."""

    def __init__(self, *, cached: bool) -> None:
        super().__init__("no token")
        self.cached = cached


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenChain:
    """The resolution chain (see the module docstring). Thread-safe.

    Args:
        layers: the layers, asked in order (default: ``default_layers()``, the
            documented order). Tests build a chain from their own layers.
        clock: epoch seconds (injectable for expiry and backoff tests).
        negative_backoff_s: ``(first, max)`` seconds a failed resolution is cached.
    """

    def __init__(
        self,
        layers: Iterable[TokenLayer] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        negative_backoff_s: tuple[float, float] = (5.0, 300.0),
    ) -> None:
        self.layers: tuple[TokenLayer, ...] = tuple(
            layers if layers is not None else default_layers(clock=clock))
        self._clock = clock
        self._neg_first, self._neg_max = negative_backoff_s
        self._lock = threading.RLock()
        self._memory: Token | None = None
        self._rejected: set[str] = set()
        self._negative_until = 0.0
        self._negative_wait = 0.0

    def __repr__(self) -> str:
        return f"TokenChain(layers={[layer.name for layer in self.layers]})"

    # -- public API --------------------------------------------------------------------
    def get(self, app: str | None = None, *, purpose: Purpose = "logs") -> str:
        """A token for ``app`` that serves ``purpose`` (the first layer with one wins).

        Raises:
            Unauthorized: no layer has a token; the message says how to provide one.
        """
        return self.resolve(app, purpose=purpose)[0]

    def resolve(self, app: str | None = None, *, purpose: Purpose = "logs") -> tuple[str, str]:
        """``(token, source)``; ``source`` names the layer (``"manual"``, ``"session"``,
        ``"atlas_config"``, ``"env:FLY_API_TOKEN"``, ``"memory"``, ``"store"``,
        ``"config_file"``, ``"cli"``)."""
        started = time.perf_counter()
        try:
            token = self._resolve(app, purpose)
        except _Miss as miss:
            self._emit_resolve(app, purpose, "negative_cache" if miss.cached else "none",
                               False, started)
            target = f" for app {app!r}" if app else ""
            what = "" if purpose == "logs" else f" that can {purpose}"
            raise Unauthorized(f"no Fly.io token{what} found{target}: {HOW_TO}",
                               provider="fly", hint=HOW_TO) from None
        self._emit_resolve(app, purpose, token.source, True, started)
        return token.value, token.source

    def invalidate(self, app: str | None = None, *, rejected: str | None = None) -> None:
        """Clear the memory, the minted tokens on disk and the failure backoff.

        ``rejected`` is the token a server answered 401 to: remembered, stored and
        config-file copies of it are skipped from now on (explicit layers are not).
        """
        with self._lock:
            if rejected:
                self._rejected.add(_fingerprint(rejected.strip()))
            self._memory = None
            self._negative_until = 0.0
            self._negative_wait = 0.0
            for layer in self.layers:
                forget: Callable[[], object] | None = getattr(layer, "forget", None)
                if forget is not None:
                    forget()
        telemetry.emit("fly.token.invalidate", {"app": app, "rejected": bool(rejected)})

    def set_manual(self, app: str | None, token: str, *, persist: bool = False) -> None:
        """Override every later layer for ``app`` (``None``: every app).

        ``persist=True`` also writes it to the encrypted store, where a later process
        finds it (at the store's place in the order).
        """
        manual = self._manual_layer()
        manual.set(app, token, persist=persist)
        with self._lock:
            self._negative_until = 0.0

    def clear_manual(self, app: str | None = None) -> bool:
        """Remove the manual override for ``app`` (memory and disk); ``True`` if there was one."""
        had = self._manual_layer().clear(app)
        with self._lock:
            self._memory = None
        return had

    # -- internals ---------------------------------------------------------------------
    def _manual_layer(self) -> ManualLayer:
        for layer in self.layers:
            if isinstance(layer, ManualLayer):
                return layer
        raise ValidationError("this token chain has no ManualLayer; add one to set tokens "
                              "by hand")

    def _resolve(self, app: str | None, purpose: Purpose) -> Token:
        with self._lock:
            now = self._clock()
            memory_checked = asked_costly = False
            for layer in self.layers:
                cached = bool(getattr(layer, "cached", False))
                if cached and not memory_checked:
                    memory_checked = True
                    remembered = self._memory
                    if remembered and self._fits(remembered, purpose, now):
                        return Token(remembered.value, "memory", remembered.purposes,
                                     remembered.fresh_until, remembered.explicit)
                    self._memory = None
                if getattr(layer, "costly", False):
                    if now < self._negative_until:
                        raise _Miss(cached=True)
                    asked_costly = True
                token = layer.resolve(app, purpose)
                if token is None or not self._fits(token, purpose, now):
                    continue
                if cached and token.fresh_until is not None:
                    self._memory = token
                if cached or asked_costly:
                    self._negative_until = self._negative_wait = 0.0  # success resets it
                return token
            if asked_costly:
                self._negative_wait = (min(self._negative_wait * 2, self._neg_max)
                                       if self._negative_wait else self._neg_first)
                self._negative_until = now + self._negative_wait
            raise _Miss(cached=False)

    def _fits(self, token: Token, purpose: Purpose, now: float) -> bool:
        """Serves ``purpose``, still fresh, and not refused by a server (unless explicit)."""
        if purpose not in token.purposes:
            return False  # e.g. a read-only minted token asked to create a machine
        if token.fresh_until is not None and token.fresh_until <= now:
            return False
        return token.explicit or _fingerprint(token.value) not in self._rejected

    def _emit_resolve(self, app: str | None, purpose: Purpose, source: str, ok: bool,
                      started: float) -> None:
        telemetry.emit("fly.token.resolve", {
            "app": app, "purpose": purpose, "source": source, "ok": ok,
            "duration_ms": (time.perf_counter() - started) * 1000.0,
        })
